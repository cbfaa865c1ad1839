"""What a checkpoint holds beyond the released format, so that a stopped run resumes bit-exactly."""
import collections
import inspect
import random
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from training.config import OPTIMIZERS
from training.dist import DistInfo, all_gather_objects
from training.optim import WarmupCosineLR, multi_step_at_epoch
from utils.checkpoint import model_spec, save_checkpoint
from utils.errors import UserError
from utils.norm import DataNorm

STATE_VERSION = 1
# optimizer settings that decide which buffers the optimizer state holds (Adam's max_exp_avg_sq)
STATE_SHAPING = ('amsgrad',)


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


def _base_lr(name: str, args: Dict[str, Any]) -> float:
    """The lr an optimizer spec starts from: args['lr'], else the optimizer's default."""
    if 'lr' in args:
        return float(args['lr'])
    return float(inspect.signature(OPTIMIZERS[name]).parameters['lr'].default)


def _settings(optimizer: torch.optim.Optimizer) -> List[Dict[str, Any]]:
    """Every param group's hyperparameters (all but its params), as the config in force made them."""
    return [{k: v for k, v in g.items() if k != 'params'} for g in optimizer.param_groups]


def _same(a: Any, b: Any) -> bool:
    """Equal settings; a YAML list and the tuple a checkpoint holds (betas) count as equal."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


def _apply_settings(optimizer: torch.optim.Optimizer, fresh: List[Dict[str, Any]], old_base: float,
                    scheduled: bool) -> List[str]:
    """Give the loaded param groups the config's hyperparameters; the changes, as 'key old -> new'.

    The lr keeps the decays of the loaded schedule: lr = new base * loaded lr / old base.
    """
    changes = []
    for group, new in zip(optimizer.param_groups, fresh):
        new_base = float(new.get('initial_lr', new['lr']))
        for key, value in new.items():
            if key in ('lr', 'initial_lr'):
                continue
            if key in STATE_SHAPING and not _same(group.get(key, value), value):
                raise UserError(f"optimizer.args.{key} cannot change on resume ({group[key]} in the "
                                f"checkpoint): it changes what the optimizer's state holds")
            if key in group and not _same(group[key], value):
                changes.append(f"{key} {group[key]} -> {value}")
            group[key] = value
        if new_base != old_base:
            changes.append(f"lr {old_base:g} -> {new_base:g}")
            group['lr'] = new_base * (group['lr'] / old_base if old_base else 1.0)
        if scheduled:
            group['initial_lr'] = new_base
    return sorted(set(changes))


def check_world_size(ckpt: Dict[str, Any], info: DistInfo, path: str) -> None:
    """Refuse another process count: the epoch's sharding, step counts and per-rank RNG states depend on it."""
    written = (ckpt.get('train_state') or {}).get('world_size', info.world_size)
    if written != info.world_size:
        raise UserError(f"checkpoint {path} was written by a run of {written} process(es), this run has "
                        f"{info.world_size}: resume it with {written} (torchrun --nproc_per_node={written} "
                        f"train_liif.py --resume {path}, or --gpu with {written} ids)")


@dataclass
class Restored:
    """Where a resumed run goes on, and the optimizer settings the config in force changed ('key old -> new')."""
    progress: Progress
    optimizer_changes: List[str] = field(default_factory=list)


def restore(ckpt: Dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: Any, scaler: torch.amp.GradScaler, cfg: Dict[str, Any], info: DistInfo,
            path: str) -> Restored:
    """Load weights, optimizer, schedule, scaler and RNGs; return where training goes on.

    The config in force decides the optimizer's hyperparameters (a changed lr becomes the schedule's
    base) and the schedule; a schedule the checkpoint lacks starts at its completed epoch.
    Checkpoints of the original release (no train_state) resume at the next epoch, lr in closed form.
    """
    check_world_size(ckpt, info, path)
    state = ckpt.get('train_state')
    try:
        model.load_state_dict(ckpt['model']['sd'])
    except RuntimeError:
        raise UserError(f"checkpoint {path} holds a {ckpt['model']['name']!r} model that does not fit "
                        f"the config's model") from None
    name = cfg['optimizer']['name']
    if ckpt.get('optimizer', {}).get('name', name) != name:
        raise UserError(f"checkpoint {path} was trained with optimizer {ckpt['optimizer']['name']!r}, "
                        f"the config names {name!r}")
    changes: List[str] = []
    if 'optimizer' in ckpt:
        fresh = _settings(optimizer)
        optimizer.load_state_dict(ckpt['optimizer']['sd'])
        changes = _apply_settings(optimizer, fresh, _base_lr(name, ckpt['optimizer'].get('args') or {}),
                                  scheduler is not None)
    epoch_done = int(ckpt.get('epoch', 0))
    if isinstance(scheduler, WarmupCosineLR):  # closed form: the config in force and the epoch decide
        scheduler.base_lrs = [g['initial_lr'] for g in optimizer.param_groups]
        scheduler.set_epoch(epoch_done)
    elif scheduler is not None:
        if state is not None and state['scheduler'] is not None:
            milestones, gamma = scheduler.milestones, scheduler.gamma
            scheduler.load_state_dict(state['scheduler'])
            # the config in force (maybe overridden) decides the schedule from here on
            scheduler.milestones, scheduler.gamma = collections.Counter(milestones), gamma
            scheduler.base_lrs = [g['initial_lr'] for g in optimizer.param_groups]
            scheduler._last_lr = [g['lr'] for g in optimizer.param_groups]
        else:
            multi_step_at_epoch(scheduler, epoch_done)
    if state is None:
        return Restored(Progress(epoch=epoch_done + 1), changes)
    if scaler.is_enabled() and state['scaler'] is not None:
        scaler.load_state_dict(state['scaler'])
    set_rng_state(state['rng'][info.rank])
    return Restored(Progress(epoch=epoch_done + 1, step=state['step'], loss_sum=state['loss_sum'],
                             global_step=state['global_step'], best_val_psnr=state['best_val_psnr'],
                             history=list(state['history'])), changes)
