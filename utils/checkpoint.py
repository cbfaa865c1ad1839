"""Checkpoints in the released format: {'model': {'name', 'args', 'sd'}, 'optimizer': ..., 'epoch': ...}.

Two file formats hold it: torch.save's (.pth, zip or legacy) and safetensors (.safetensors: the weights
as tensors, everything else as one JSON document in the header metadata, so loading runs no code).
"""
import json
import os
import pickle
import re
import struct
import zipfile
from typing import Any, Dict, List, Optional, Union

import torch

try:
    import safetensors.torch as safetensors_torch
    from safetensors import SafetensorError
except ImportError:  # optional: only .safetensors files need it
    safetensors_torch = None
    SafetensorError = None

from utils.atomic import atomic_open
from utils.errors import UserError

PathLike = Union[str, os.PathLike]
TRUST_FLAG = '--trust-checkpoint'
# torch.save's legacy (non-zip) format opens with a pickled magic number (protocol 2, long of 10 bytes)
LEGACY_MAGIC = b'\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19'
ZIP_MAGIC = b'PK\x03\x04'
SAFETENSORS_EXT = '.safetensors'
# the header metadata key holding the checkpoint (less its tensors) as JSON, and the version of that layout
SAFETENSORS_KEY = 'liif'
SAFETENSORS_VERSION = 1
SAFETENSORS_HINT = "safetensors files need the safetensors package: pip install safetensors"
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
    """Load a checkpoint: torch.save's zip or legacy format (weights_only unless `trusted`) or safetensors.

    Every format gives the same released-format dict; bad files are one-line UserErrors.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"checkpoint not found: {path}")
    with open(path, 'rb') as f:
        head = f.read(len(LEGACY_MAGIC))
    if _is_safetensors(path, head):
        ckpt = _load_safetensors(path, map_location)
    else:
        ckpt = _load_torch(path, head, map_location, trusted)
    entry = ckpt.get('model') if isinstance(ckpt, dict) else None
    if not (isinstance(entry, dict) and {'name', 'args', 'sd'} <= set(entry)):
        raise UserError(f"{path} is not a LIIF checkpoint: it needs a 'model' entry with "
                        f"'name', 'args' and 'sd'")
    return ckpt


def _is_safetensors(path: str, head: bytes) -> bool:
    """Whether to read `path` as safetensors: by its content (a JSON header after the length), else its name."""
    if head.startswith(ZIP_MAGIC) or head == LEGACY_MAGIC:
        return False
    return head[8:9] == b'{' or path.lower().endswith(SAFETENSORS_EXT)


def _load_torch(path: str, head: bytes, map_location: Union[str, torch.device], trusted: bool) -> Any:
    """torch.load of a zip or legacy file, its failures as one-line UserErrors."""
    unreadable = UserError(f"cannot read checkpoint {path}: truncated or not a PyTorch file")
    if not zipfile.is_zipfile(path) and head != LEGACY_MAGIC:
        raise unreadable
    try:
        # an open file, not the path: torch.load would take any '*.safetensors' path for safetensors
        with open(path, 'rb') as f:
            ckpt = torch.load(f, map_location=map_location, weights_only=not trusted)
    except pickle.UnpicklingError as e:
        # a truncated legacy file also ends in the weights-only unpickler, naming no real class
        refused = _REFUSED_GLOBAL.search(str(e))
        if refused is None:
            raise unreadable from None
        raise UserError(f"checkpoint {path} holds a {refused.group(1)} object, beyond tensors and plain data; "
                        f"if you trust its source, pass {TRUST_FLAG} (unpickling it can run any code)") from None
    except (RuntimeError, EOFError, IndexError, KeyError, zipfile.BadZipFile, OSError, ValueError):
        raise unreadable from None
    return ckpt


def save_safetensors(path: PathLike, ckpt: Dict[str, Any]) -> None:
    """Write a released-format checkpoint as safetensors, atomically: the state dict as tensors, the rest
    (model name and args, data_norm, meta) as JSON in the header; every non-tensor value must be plain JSON."""
    if safetensors_torch is None:
        raise UserError(f"cannot write {os.fspath(path)}: {SAFETENSORS_HINT}")
    entry = ckpt.get('model')
    if not (isinstance(entry, dict) and {'name', 'args', 'sd'} <= set(entry)):
        raise UserError("only a LIIF checkpoint ({'model': {'name', 'args', 'sd'}, ...}) can be saved as safetensors")
    sd = entry['sd']
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise UserError(f"state dict entry {bad[0]!r} is not a tensor: safetensors stores tensors only")
    # safetensors refuses views and tensors sharing storage: give each its own contiguous copy
    tensors = {k: v.detach().to('cpu').contiguous().clone() for k, v in sd.items()}
    doc = {**ckpt, 'model': {**entry, 'sd': list(sd)}}  # the key order, so a load gives the same dict back
    for key, value in doc.items():
        if not _json_exact(value):
            raise UserError(f"checkpoint entry {key!r} is not plain JSON data (numbers, strings, lists, dicts): "
                            f"safetensors cannot hold it; export a release checkpoint (scripts/export_model.py)")
    # 'format': 'pt' is what other safetensors loaders (transformers) look for
    metadata = {'format': 'pt', SAFETENSORS_KEY: json.dumps(doc),
                f'{SAFETENSORS_KEY}_version': str(SAFETENSORS_VERSION)}
    data = safetensors_torch.save(tensors, metadata=metadata)
    with atomic_open(path, 'wb', fsync=True) as f:
        f.write(data)


def _json_exact(value: Any) -> bool:
    """Whether `value` comes back from a JSON round trip equal and of the same types (no tuples, no int keys)."""
    try:
        back = json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return False
    return _same(value, back)


def _same(a: Any, b: Any) -> bool:
    """Deep equality that also tells lists from tuples and 1 from 1.0 from True (NaN equals NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b or (a != a and b != b)


def _load_safetensors(path: str, map_location: Union[str, torch.device]) -> Dict[str, Any]:
    """The released-format dict of a .safetensors checkpoint; any inconsistency is a one-line UserError."""
    if safetensors_torch is None:
        raise UserError(f"cannot read checkpoint {path}: {SAFETENSORS_HINT}")
    with open(path, 'rb') as f:
        data = f.read()
    header = _safetensors_header(path, data)
    meta = header.get('__metadata__')
    if not isinstance(meta, dict) or SAFETENSORS_KEY not in meta:
        raise UserError(f"{path} is not a LIIF checkpoint: its safetensors header has no {SAFETENSORS_KEY!r} "
                        f"metadata (the model spec)")
    version = meta.get(f'{SAFETENSORS_KEY}_version')
    if version != str(SAFETENSORS_VERSION):
        raise UserError(f"{path}: safetensors checkpoint layout version {version!r}, this code reads "
                        f"{SAFETENSORS_VERSION!r}")
    try:
        doc = json.loads(meta[SAFETENSORS_KEY])
    except (TypeError, ValueError):
        raise UserError(f"{path}: damaged safetensors checkpoint: its {SAFETENSORS_KEY!r} metadata is not "
                        f"valid JSON") from None
    entry = doc.get('model') if isinstance(doc, dict) else None
    if not (isinstance(entry, dict) and {'name', 'args', 'sd'} <= set(entry) and isinstance(entry['sd'], list)
            and all(isinstance(k, str) for k in entry['sd'])):
        raise UserError(f"{path} is not a LIIF checkpoint: its {SAFETENSORS_KEY!r} metadata needs a 'model' "
                        f"entry with 'name', 'args' and 'sd' (the list of weight names)")
    names = set(header) - {'__metadata__'}
    listed = entry['sd']
    if set(listed) != names or len(listed) != len(names):
        missing, extra = sorted(set(listed) - names), sorted(names - set(listed))
        found = [f"{len(missing)} listed weight(s) missing {_few(missing)}"] if missing else []
        found += [f"{len(extra)} tensor(s) not listed {_few(extra)}"] if extra else []
        raise UserError(f"{path}: damaged safetensors checkpoint: "
                        f"{'; '.join(found) or 'weights listed twice'}")
    try:
        tensors = safetensors_torch.load(data)
    except SafetensorError as e:
        raise UserError(f"{path}: damaged safetensors checkpoint ({str(e).splitlines()[0]})") from None
    device = torch.device(map_location)
    doc['model'] = {**entry, 'sd': {k: tensors[k].to(device) for k in listed}}
    return doc


def _few(names: List[str]) -> str:
    """Up to three names in parentheses, for a one-line message."""
    return '(' + ', '.join(names[:3]) + (', ...' if len(names) > 3 else '') + ')'


def _safetensors_header(path: str, data: bytes) -> Dict[str, Any]:
    """The JSON header of a safetensors file, checked against the file's length."""
    if len(data) < 8:
        raise UserError(f"cannot read checkpoint {path}: truncated or not a safetensors file")
    (n,) = struct.unpack('<Q', data[:8])
    if data[8:9] != b'{':
        raise UserError(f"cannot read checkpoint {path}: not a safetensors file (nor a PyTorch one)")
    if 8 + n > len(data):
        raise UserError(f"cannot read checkpoint {path}: truncated (header length {n} runs beyond the "
                        f"file's {len(data)} bytes)")
    try:
        header = json.loads(data[8:8 + n].decode('utf-8'))
    except (UnicodeDecodeError, ValueError):
        header = None
    if not isinstance(header, dict):
        raise UserError(f"cannot read checkpoint {path}: damaged safetensors header (not a JSON object)")
    end = _data_end(header)
    if end is None:
        raise UserError(f"cannot read checkpoint {path}: damaged safetensors header (bad tensor entries)")
    if 8 + n + end != len(data):
        what = 'truncated' if 8 + n + end > len(data) else 'damaged'
        raise UserError(f"cannot read checkpoint {path}: {what} (the header describes {8 + n + end} bytes, "
                        f"the file has {len(data)})")
    return header


def _data_end(header: Dict[str, Any]) -> Optional[int]:
    """The end of the last tensor's bytes that the header describes (0 for none); None if an entry is malformed."""
    end = 0
    for name, info in header.items():
        if name == '__metadata__':
            continue
        offsets = info.get('data_offsets') if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            return None
        end = max(end, offsets[1])
    return end
