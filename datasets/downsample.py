"""Bicubic downscaling of HR crops to LR inputs, as the wrappers need it."""
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from utils.errors import UserError
from utils.imresize import imresize
from utils.image import float_to_u8, u8_to_float

METHODS = ('torch', 'pil', 'matlab')


def downsample(img: torch.Tensor, size: Sequence[int], method: str = 'torch') -> torch.Tensor:
    """Antialiased bicubic resize of a float image (3, H, W) in [0, 1] to size (h, w), 8-bit quantised.

    'torch' is PIL's filter (a = -0.5, support stretched by the scale) computed on tensors;
    'pil' is PIL itself on the 8-bit image, as the authors' code did;
    'matlab' is MATLAB's imresize on the 8-bit image, as the benchmark LR_bicubic folders were made.
    """
    h, w = int(size[0]), int(size[1])
    if method == 'torch':
        out = F.interpolate(img.unsqueeze(0), size=(h, w), mode='bicubic', antialias=True,
                            align_corners=False)[0]
        return u8_to_float(float_to_u8(out))
    if method == 'pil':
        arr = float_to_u8(img).permute(1, 2, 0).numpy()
        out = np.asarray(Image.fromarray(arr).resize((w, h), Image.BICUBIC))
        return u8_to_float(torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1))))
    if method == 'matlab':
        return u8_to_float(imresize(float_to_u8(img), size=(h, w)))
    raise UserError(f"downsample method must be one of {', '.join(METHODS)}, not {method!r}")
