"""Checkpoints in the released format: {'model': {'name', 'args', 'sd'}, 'optimizer': ..., 'epoch': ...}."""
import os
import pickle
import re
import zipfile
from typing import Any, Dict, Union

import torch

from utils.atomic import atomic_open
from utils.errors import UserError

PathLike = Union[str, os.PathLike]
TRUST_FLAG = '--trust-checkpoint'
# torch.save's legacy (non-zip) format opens with a pickled magic number (protocol 2, long of 10 bytes)
LEGACY_MAGIC = b'\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19'
# what torch's weights-only unpickler names when it meets a class it refuses (a real, dotted name)
_REFUSED_GLOBAL = re.compile(r'GLOBAL ((?:[A-Za-z_]\w*\.)+[A-Za-z_]\w*) was not an allowed global')


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
    """Load a checkpoint, zip or legacy torch.save format (weights_only unless `trusted`); bad files are UserErrors."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"checkpoint not found: {path}")
    unreadable = UserError(f"cannot read checkpoint {path}: truncated or not a PyTorch file")
    if not zipfile.is_zipfile(path):
        with open(path, 'rb') as f:
            if f.read(len(LEGACY_MAGIC)) != LEGACY_MAGIC:
                raise unreadable
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=not trusted)
    except pickle.UnpicklingError as e:
        # a truncated legacy file also ends in the weights-only unpickler, naming no real class
        refused = _REFUSED_GLOBAL.search(str(e))
        if refused is None:
            raise unreadable from None
        raise UserError(f"checkpoint {path} holds a {refused.group(1)} object, beyond tensors and plain data; "
                        f"if you trust its source, pass {TRUST_FLAG} (unpickling it can run any code)") from None
    except (RuntimeError, EOFError, IndexError, KeyError, zipfile.BadZipFile, OSError, ValueError):
        raise unreadable from None
    entry = ckpt.get('model') if isinstance(ckpt, dict) else None
    if not (isinstance(entry, dict) and {'name', 'args', 'sd'} <= set(entry)):
        raise UserError(f"{path} is not a LIIF checkpoint: it needs a 'model' entry with "
                        f"'name', 'args' and 'sd'")
    return ckpt
