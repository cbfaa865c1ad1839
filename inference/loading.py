"""The device and the arbitrary-scale SR model (LIIF, MetaSR) that test.py and demo.py run."""
import logging
import os
from typing import Optional, Union

import torch

import models
from utils.checkpoint import PathLike, load_checkpoint
from utils.errors import UserError

log = logging.getLogger(__name__)


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


def load_sr_model(path: str, device: torch.device, trusted: bool = False) -> torch.nn.Module:
    """Model of a checkpoint that can be queried at any coordinate (gen_feat + query_rgb), in eval mode."""
    ckpt = load_checkpoint(path, map_location='cpu', trusted=trusted)
    spec = ckpt['model']
    model = models.make(spec, load_sd=True)
    if not (callable(getattr(model, 'gen_feat', None)) and callable(getattr(model, 'query_rgb', None))):
        raise UserError(f"{os.path.basename(path)} holds a {spec['name']!r} model, not an arbitrary-scale "
                        f"SR model (LIIF or MetaSR)")
    log.info("loaded %s model from %s", spec['name'], path)
    return model.to(device).eval()


def load_model(path: PathLike, device: Union[str, torch.device] = 'cpu', trusted: bool = False):
    """Rebuild the model a checkpoint describes, with its weights, on `device`, in eval mode."""
    ckpt = load_checkpoint(path, map_location='cpu', trusted=trusted)
    return models.make(ckpt['model'], load_sd=True).to(device).eval()
