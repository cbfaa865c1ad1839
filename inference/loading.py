"""The device and the arbitrary-scale SR model (LIIF, MetaSR) that test.py and demo.py run."""
import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Union

import torch

import models
from utils.checkpoint import PathLike, load_checkpoint
from utils.errors import UserError
from utils.norm import DataNorm

log = logging.getLogger(__name__)

# the model trained here and shipped with the repository: demo.py's and viewer.py's default
BUNDLED_MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'weights',
                             'liif-edsr-baseline.pth')


def resolve_model(path: Optional[str]) -> str:
    """The checkpoint to use: --model, else the bundled one if it exists."""
    if path is not None:
        return path
    if not os.path.isfile(BUNDLED_MODEL):
        raise UserError(f"no bundled model at {os.path.relpath(BUNDLED_MODEL)}: pass --model CKPT")
    return BUNDLED_MODEL


def select_device(gpu: Optional[str]) -> torch.device:
    """cuda:ID for `--gpu ID`; without it cuda:0 when CUDA is present, else the CPU; `--gpu cpu` forces the CPU."""
    if gpu is None or gpu == '':
        return _exact_fp32(torch.device('cuda:0' if torch.cuda.is_available() else 'cpu'))
    if gpu.lower() == 'cpu':
        return torch.device('cpu')
    if not gpu.isdigit():
        raise UserError(f"--gpu takes a device number such as 0 (or cpu), not {gpu!r}")
    if not torch.cuda.is_available():
        # one rule for every script (train_liif.py too): a GPU asked for and absent stops the run
        raise UserError(f"--gpu {gpu}: CUDA is not available here (drop --gpu, or pass --gpu cpu, to run on the CPU)")
    if int(gpu) >= torch.cuda.device_count():
        raise UserError(f"--gpu {gpu}: only {torch.cuda.device_count()} CUDA device(s) present")
    return _exact_fp32(torch.device(f'cuda:{int(gpu)}'))


def _exact_fp32(device: torch.device) -> torch.device:
    """Turn off TF32 for CUDA convolutions and matmuls, so CUDA results match the CPU's within fp32 rounding.

    cuDNN's default TF32 convolutions moved MetaSR's outputs by 3.1e-3 and LIIF's by 1.0e-5 from the
    authors' vectors on an H100 (3e-8 / 9.5e-6 without TF32); the encoder is a small part of the cost.
    """
    if device.type == 'cuda':
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    return device


@dataclass(frozen=True)
class StoredNorm:
    """The normalisation a checkpoint carries, and where in it it was found."""
    norm: DataNorm
    where: str


def stored_norm(ckpt: Dict[str, Any]) -> Optional[StoredNorm]:
    """The checkpoint's own data_norm, else that of the training config stored in it; None if neither.

    Training and export_model write a top-level 'data_norm'; older files of this project keep the
    training config under train_state.config (training) or meta.train_config (export_model);
    the authors' released files hold none.
    """
    train_config = (ckpt.get('train_state') or {}).get('config') or {}
    released_config = (ckpt.get('meta') or {}).get('train_config') or {}
    candidates = (('data_norm', ckpt.get('data_norm')),
                  ('train_state.config.data_norm', train_config.get('data_norm')),
                  ('meta.train_config.data_norm', released_config.get('data_norm')))
    for where, value in candidates:
        if value is not None:
            return StoredNorm(DataNorm.from_mapping(value, where), where)
    return None


@dataclass(frozen=True)
class LoadedModel:
    """An arbitrary-scale SR model in eval mode and the normalisation to run it with."""
    model: torch.nn.Module
    norm: DataNorm
    norm_source: str  # where norm came from, for the log


def _sr_model(ckpt: Dict[str, Any], path: str, device: torch.device) -> torch.nn.Module:
    """The model of a loaded checkpoint if it can be queried at any coordinate (gen_feat + query_rgb)."""
    spec = ckpt['model']
    model = models.make(spec, load_sd=True)
    if not (callable(getattr(model, 'gen_feat', None)) and callable(getattr(model, 'query_rgb', None))):
        raise UserError(f"{os.path.basename(path)} holds a {spec['name']!r} model, not an arbitrary-scale "
                        f"SR model (LIIF or MetaSR)")
    log.info("loaded %s model from %s", spec['name'], path)
    return model.to(device).eval()


def load_sr(path: str, device: torch.device, fallback: DataNorm, fallback_source: str,
            trusted: bool = False) -> LoadedModel:
    """Model of a checkpoint (gen_feat + query_rgb), in eval mode, with the normalisation to run it with.

    That is the one stored with it (stored_norm), else `fallback` (e.g. the test config's); a stored
    one wins over a fallback that differs, and the log says so.
    """
    ckpt = load_checkpoint(path, map_location='cpu', trusted=trusted)
    model = _sr_model(ckpt, path, device)
    stored = stored_norm(ckpt)
    if stored is None:
        log.info("data_norm: %s stores none, using %s (%s)", os.path.basename(path), fallback_source,
                 fallback.describe())
        return LoadedModel(model, fallback, fallback_source)
    source = f"{stored.where} of {os.path.basename(path)}"
    if stored.norm != fallback:
        log.info("data_norm: using the checkpoint's (%s: %s), not %s (%s)", stored.where, stored.norm.describe(),
                 fallback_source, fallback.describe())
    else:
        log.info("data_norm: %s (%s)", stored.norm.describe(), source)
    return LoadedModel(model, stored.norm, source)


def load_sr_model(path: str, device: torch.device, trusted: bool = False) -> torch.nn.Module:
    """The model alone of load_sr (gen_feat + query_rgb), in eval mode: its normalisation is the caller's."""
    return _sr_model(load_checkpoint(path, map_location='cpu', trusted=trusted), path, device)


def load_model(path: PathLike, device: Union[str, torch.device] = 'cpu', trusted: bool = False):
    """Rebuild the model a checkpoint describes, with its weights, on `device`, in eval mode."""
    ckpt = load_checkpoint(path, map_location='cpu', trusted=trusted)
    return models.make(ckpt['model'], load_sd=True).to(device).eval()
