"""Checkpoints in the released format: {'model': {'name', 'args', 'sd'}, 'optimizer': ..., 'epoch': ...}."""
import os
import pickle
import zipfile
from typing import Any, Dict, Union

import torch

from utils.atomic import atomic_open
from utils.errors import UserError

PathLike = Union[str, os.PathLike]


def atomic_save(obj: Any, path: PathLike) -> None:
    """torch.save to a temporary file beside `path`, then rename, so a crash never leaves half a file."""
    with atomic_open(path, 'wb', fsync=True) as f:
        torch.save(obj, f)


def model_spec(model: torch.nn.Module, name: str, args: Dict[str, Any]) -> Dict[str, Any]:
    """The self-describing {'name', 'args', 'sd'} entry of a checkpoint (unwraps DDP / compile)."""
    model = getattr(model, 'module', model)
    model = getattr(model, '_orig_mod', model)
    return {'name': name, 'args': args, 'sd': model.state_dict()}


def save_checkpoint(path: PathLike, model_entry: Dict[str, Any], **extra: Any) -> None:
    """Save {'model': model_entry, **extra} atomically in the released format."""
    atomic_save({'model': model_entry, **extra}, path)


def load_checkpoint(path: PathLike, map_location: Union[str, torch.device] = 'cpu',
                    trusted: bool = False) -> Dict[str, Any]:
    """Load a checkpoint (weights_only unless `trusted`); any unreadable or foreign file is a UserError."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"checkpoint not found: {path}")
    unreadable = UserError(f"cannot read checkpoint {path}: truncated or not a PyTorch file")
    if not zipfile.is_zipfile(path):
        raise unreadable
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=not trusted)
    except pickle.UnpicklingError:
        raise UserError(f"checkpoint {path} holds objects beyond tensors and plain data; "
                        f"load it only if you trust its source (trusted=True)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError):
        raise unreadable from None
    entry = ckpt.get('model') if isinstance(ckpt, dict) else None
    if not (isinstance(entry, dict) and {'name', 'args', 'sd'} <= set(entry)):
        raise UserError(f"{path} is not a LIIF checkpoint: it needs a 'model' entry with "
                        f"'name', 'args' and 'sd'")
    return ckpt
