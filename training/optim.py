"""Optimizer and learning-rate schedule from the config (the authors' adam / sgd, multi_step_lr, warmup_cosine_lr)."""
import bisect
import math
from typing import Any, Dict, Iterable, List, Optional, Union

import torch
from torch.optim.lr_scheduler import LRScheduler, MultiStepLR

from training.config import OPTIMIZERS


class WarmupCosineLR(LRScheduler):
    """SRNO's schedule (SRNO.md, "Training"), stepped once per epoch, in closed form of the completed epochs e.

    Warm-up: lr = base * (1 + (multiplier - 1) * e / warmup_epochs) for e <= warmup_epochs, a line
    from base to base * multiplier; then cosine annealing from base * multiplier to 0 at e = epoch_max.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, multiplier: float, warmup_epochs: int, epoch_max: int,
                 last_epoch: int = -1):
        self.multiplier, self.warmup_epochs, self.epoch_max = multiplier, warmup_epochs, epoch_max
        super().__init__(optimizer, last_epoch)

    def factor(self, epoch: int) -> float:
        """lr / base lr after `epoch` completed epochs."""
        if epoch <= self.warmup_epochs:
            return 1 + (self.multiplier - 1) * epoch / max(self.warmup_epochs, 1)
        t = (epoch - self.warmup_epochs) / (self.epoch_max - self.warmup_epochs)
        return self.multiplier * (1 + math.cos(math.pi * min(t, 1.0))) / 2

    def get_lr(self) -> List[float]:
        """The lr of every param group at last_epoch."""
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]

    def set_epoch(self, epoch: int) -> None:
        """Put the schedule at `epoch` completed epochs (resume): no state beyond the base lr is needed."""
        put_at_epoch(self, epoch, [base * self.factor(epoch) for base in self.base_lrs])


Scheduler = Union[MultiStepLR, WarmupCosineLR]


def put_at_epoch(scheduler: LRScheduler, epoch: int, lrs: List[float]) -> None:
    """A scheduler at `epoch` completed epochs with these lrs, set directly (a resume in closed form)."""
    # no step(): stepping would re-apply the schedule to an lr that already holds it
    scheduler.last_epoch = epoch
    for group, lr in zip(scheduler.optimizer.param_groups, lrs):
        group['lr'] = lr
    scheduler._last_lr = [g['lr'] for g in scheduler.optimizer.param_groups]


def multi_step_at_epoch(scheduler: MultiStepLR, epoch: int) -> None:
    """Put a fresh MultiStepLR at `epoch` completed epochs without re-applying decays to the loaded lr."""
    milestones = sorted(scheduler.milestones.elements())
    put_at_epoch(scheduler, epoch, [base * scheduler.gamma ** bisect.bisect_right(milestones, epoch)
                                    for base in scheduler.base_lrs])


def make_optimizer(params: Iterable[torch.nn.Parameter], spec: Dict[str, Any]) -> torch.optim.Optimizer:
    """optimizer.name (adam | sgd) over all parameters, with optimizer.args."""
    # all parameters, frozen ones included, so param groups match the released optimizer states
    return OPTIMIZERS[spec['name']](list(params), **(spec.get('args') or {}))


def make_scheduler(optimizer: torch.optim.Optimizer, spec: Optional[Dict[str, Any]],
                   warmup_cosine: Optional[Dict[str, Any]] = None, epoch_max: int = 0) -> Optional[Scheduler]:
    """MultiStepLR (multi_step_lr) or WarmupCosineLR (warmup_cosine_lr), stepped once per epoch; None without."""
    if warmup_cosine is not None:
        return WarmupCosineLR(optimizer, float(warmup_cosine['multiplier']), int(warmup_cosine['warmup_epochs']),
                              epoch_max)
    if spec is None:
        return None
    return MultiStepLR(optimizer, milestones=spec['milestones'], gamma=spec['gamma'])


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The learning rate of the first parameter group."""
    return float(optimizer.param_groups[0]['lr'])
