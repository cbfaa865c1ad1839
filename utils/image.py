"""Reading and writing 8-bit RGB images."""
import os
from typing import Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from utils.errors import UserError

PathLike = Union[str, os.PathLike]


def read_rgb_u8(path: PathLike) -> torch.Tensor:
    """The image at `path` as a uint8 tensor (3, H, W); any unreadable file is a one-line UserError."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert('RGB'))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise UserError(f"cannot read image {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'unreadable'}") from None
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def u8_to_float(img: torch.Tensor) -> torch.Tensor:
    """uint8 image -> float32 in [0, 1]."""
    return img.float().div_(255)


def float_to_u8(img: torch.Tensor) -> torch.Tensor:
    """float image in [0, 1] -> uint8, rounded to nearest (values outside are clamped)."""
    return img.clamp(0, 1).mul(255).round_().to(torch.uint8)
