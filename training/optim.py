"""Optimizer and learning-rate schedule from the config (the authors' adam / sgd and multi_step_lr)."""
from typing import Any, Dict, Iterable, Optional

import torch
from torch.optim.lr_scheduler import MultiStepLR

from training.config import OPTIMIZERS


def make_optimizer(params: Iterable[torch.nn.Parameter], spec: Dict[str, Any]) -> torch.optim.Optimizer:
    """optimizer.name (adam | sgd) over all parameters, with optimizer.args."""
    # all parameters, frozen ones included, so param groups match the released optimizer states
    return OPTIMIZERS[spec['name']](list(params), **(spec.get('args') or {}))


def make_scheduler(optimizer: torch.optim.Optimizer, spec: Optional[Dict[str, Any]]) -> Optional[MultiStepLR]:
    """MultiStepLR stepped once per epoch, or None without multi_step_lr."""
    if spec is None:
        return None
    return MultiStepLR(optimizer, milestones=spec['milestones'], gamma=spec['gamma'])


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The learning rate of the first parameter group."""
    return float(optimizer.param_groups[0]['lr'])
