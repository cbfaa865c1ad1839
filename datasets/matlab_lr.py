"""Benchmark LR inputs made from HR images with MATLAB's bicubic, cached on disk.

The published LR_bicubic/X{s} folders are `imresize(modcrop(HR, s), 1/s, 'bicubic')` in MATLAB;
utils.imresize reproduces that bit-exactly, so a missing folder can be rebuilt from HR alone.
"""
import hashlib
import logging
import os
import re
from typing import List, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from datasets.image_folder import list_images
from utils.atomic import atomic_open
from utils.errors import UserError
from utils.image import read_rgb_u8
from utils.imresize import imresize

log = logging.getLogger(__name__)


def matlab_lr(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """LR of a uint8 HR image (3, H, W): crop to a multiple of `scale`, then MATLAB bicubic by 1/scale."""
    h, w = hr.shape[-2] // scale * scale, hr.shape[-1] // scale * scale
    if h == 0 or w == 0:
        raise UserError(f"image of {tuple(hr.shape[-2:])} px is smaller than the scale {scale}")
    return imresize(hr[..., :h, :w], 1 / scale)


def _save_png_atomic(arr: np.ndarray, path: str) -> None:
    """PNG to a temporary file beside `path`, then rename: readers never see half a file."""
    with atomic_open(path, 'wb') as f:
        Image.fromarray(arr).save(f, format='PNG')


def _cache_dir(hr_root: str, names: Sequence[str], scale: int, cache_root: str) -> str:
    """Cache folder keyed by the HR folder and its files' sizes and times, so edited HR images are redone."""
    key = hashlib.sha1(os.path.abspath(hr_root).encode())
    for n in names:
        st = os.stat(os.path.join(hr_root, n))
        key.update(f"{n}:{st.st_size}:{st.st_mtime_ns};".encode())
    parent = os.path.basename(os.path.dirname(os.path.abspath(hr_root))) or 'images'
    tag = re.sub(r'[^A-Za-z0-9_.-]', '_', parent)
    return os.path.join(cache_root, f"{tag}-{key.hexdigest()[:10]}", f"X{scale}")


def ensure_matlab_lr(hr_root: str, scale: int, cache_root: str, names: Optional[List[str]] = None,
                     missing: Optional[str] = None) -> str:
    """Folder of MATLAB-bicubic LR images for the HR images of hr_root (made once, then reused); returns its path.

    LR files keep the HR file names (always PNG-encoded: lossless), so split files and sorting
    pair them with their HR images exactly as in the published folders.
    """
    if names is None:
        names = list_images(hr_root)
    out_dir = _cache_dir(hr_root, names, scale, cache_root)
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the LR cache folder {out_dir}: {e.strerror}") from None
    made = 0
    for n in names:
        path = os.path.join(out_dir, n)
        if os.path.exists(path):
            continue
        lr = matlab_lr(read_rgb_u8(os.path.join(hr_root, n)), scale)
        _save_png_atomic(np.ascontiguousarray(lr.permute(1, 2, 0).numpy()), path)
        made += 1
    why = f"{missing} not found: " if missing else ''
    log.info("%susing MATLAB-bicubic x1/%d LR images generated from %s, cached in %s "
             "(%d generated now, %d reused)", why, scale, hr_root, out_dir, made, len(names) - made)
    return out_dir
