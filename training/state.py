"""What a checkpoint holds beyond the released format, so that a stopped run resumes bit-exactly."""
import bisect
import collections
import logging
import random
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from training.dist import DistInfo, all_gather_objects
from training.monitor import LOGGER
from utils.checkpoint import model_spec, save_checkpoint
from utils.errors import UserError
from utils.norm import DataNorm

STATE_VERSION = 1


@dataclass
class Progress:
    """Where training stands: the next step is step `step` (0-based) of epoch `epoch` (1-based)."""
    epoch: int = 1
    step: int = 0
    loss_sum: float = 0.0      # sum of the per-step losses of the current epoch so far
    global_step: int = 0
    best_val_psnr: Optional[float] = None
    history: List[Dict[str, Any]] = field(default_factory=list)


def rng_state() -> Dict[str, Any]:
    """This process's python, numpy, torch and CUDA RNG states, in types that weights_only loading accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        'python': random.getstate(),
        'numpy': [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        'torch': torch.get_rng_state(),
        'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore the states rng_state() returned."""
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state['numpy']
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state['torch'])
    if state['cuda'] and torch.cuda.is_available() and len(state['cuda']) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state['cuda'])


def _cpu(obj: Any) -> Any:
    """Tensors moved to the CPU, recursively, so checkpoints load on any machine."""
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def checkpoint(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
               scaler: torch.amp.GradScaler, progress: Progress, cfg: Dict[str, Any],
               run_name: str, info: DistInfo) -> Optional[Dict[str, Any]]:
    """The checkpoint dict on rank 0 (None elsewhere); every rank must call it, it gathers RNG states.

    'epoch' is the last completed epoch, as in the released files; a run stopped mid-epoch also
    records how many steps of the next epoch it has done (train_state.step). 'data_norm' (beside
    the released keys, which loaders ignore) is the normalisation inference must use.
    """
    rngs = all_gather_objects(rng_state(), info)
    if not info.is_main:
        return None
    spec = model_spec(model, cfg['model']['name'], cfg['model'].get('args') or {})
    spec['sd'] = _cpu(spec['sd'])
    return {
        'model': spec,
        'optimizer': {'name': cfg['optimizer']['name'], 'args': cfg['optimizer'].get('args') or {},
                      'sd': _cpu(optimizer.state_dict())},
        'epoch': progress.epoch - 1,
        'data_norm': DataNorm.from_mapping(cfg['data_norm']).to_mapping(),
        'train_state': {
            'version': STATE_VERSION,
            'step': progress.step, 'loss_sum': progress.loss_sum, 'global_step': progress.global_step,
            'best_val_psnr': progress.best_val_psnr, 'history': progress.history,
            'scheduler': scheduler.state_dict() if scheduler is not None else None,
            'scaler': scaler.state_dict() if scaler.is_enabled() else None,
            'rng': rngs, 'world_size': info.world_size, 'config': cfg, 'run_name': run_name,
        },
    }


def write(ckpt: Dict[str, Any], path: str) -> None:
    """Atomically save a checkpoint dict (a crash mid-save keeps the previous file)."""
    extra = {k: v for k, v in ckpt.items() if k != 'model'}
    save_checkpoint(path, ckpt['model'], **extra)


def _closed_form_lr(scheduler: Any, epoch: int) -> None:
    """Put a fresh MultiStepLR at `epoch` completed epochs without re-applying decays to the loaded lr."""
    milestones = sorted(scheduler.milestones.elements())
    scheduler.last_epoch = epoch
    for group, base in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
        group['lr'] = base * scheduler.gamma ** bisect.bisect_right(milestones, epoch)
    scheduler._last_lr = [g['lr'] for g in scheduler.optimizer.param_groups]


def restore(ckpt: Dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: Any, scaler: torch.amp.GradScaler, cfg: Dict[str, Any], info: DistInfo,
            path: str) -> Progress:
    """Load weights, optimizer, schedule, scaler and RNGs; return where training goes on.

    Checkpoints of the original release (no train_state) resume at the next epoch, lr in closed form.
    """
    try:
        model.load_state_dict(ckpt['model']['sd'])
    except RuntimeError:
        raise UserError(f"checkpoint {path} holds a {ckpt['model']['name']!r} model that does not fit "
                        f"the config's model") from None
    if ckpt.get('optimizer', {}).get('name', cfg['optimizer']['name']) != cfg['optimizer']['name']:
        raise UserError(f"checkpoint {path} was trained with optimizer {ckpt['optimizer']['name']!r}, "
                        f"the config names {cfg['optimizer']['name']!r}")
    if 'optimizer' in ckpt:
        optimizer.load_state_dict(ckpt['optimizer']['sd'])
    epoch_done = int(ckpt.get('epoch', 0))
    state = ckpt.get('train_state')
    if state is None:
        if scheduler is not None:
            _closed_form_lr(scheduler, epoch_done)
        return Progress(epoch=epoch_done + 1)
    if scheduler is not None and state['scheduler'] is not None:
        milestones, gamma = scheduler.milestones, scheduler.gamma
        scheduler.load_state_dict(state['scheduler'])
        # the config in force (maybe overridden) decides the schedule from here on
        scheduler.milestones, scheduler.gamma = collections.Counter(milestones), gamma
    if scaler.is_enabled() and state['scaler'] is not None:
        scaler.load_state_dict(state['scaler'])
    rngs = state['rng']
    set_rng_state(rngs[info.rank] if len(rngs) == info.world_size else rngs[0])
    step = state['step']
    if step and state['world_size'] != info.world_size:
        # a mid-epoch position means nothing with another sharding of the epoch: redo that epoch
        logging.getLogger(LOGGER).warning(
            "checkpoint stopped mid-epoch with %d processes, now %d: epoch %d restarts from its first step",
            state['world_size'], info.world_size, epoch_done + 1)
        step = 0
        state = {**state, 'loss_sum': 0.0}
    return Progress(epoch=epoch_done + 1, step=step, loss_sum=state['loss_sum'],
                    global_step=state['global_step'], best_val_psnr=state['best_val_psnr'],
                    history=list(state['history']))
