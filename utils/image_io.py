"""Any image PIL reads as float RGB (+ alpha), and atomic writing of the upscaled result.

Grayscale stays grayscale, 16-bit grayscale keeps 16 bits where the output format can hold them,
palette images become RGB (RGBA when they have transparency), alpha is carried separately.
"""
import os
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from utils.atomic import atomic_open
from utils.errors import UserError

SIXTEEN_BIT_MODES = ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I')
SIXTEEN_BIT_FORMATS = ('PNG', 'TIFF')
NO_ALPHA_FORMATS = ('JPEG', 'MPO')


@dataclass
class InputImage:
    """An image as the model sees it, plus what the output must preserve."""
    rgb: torch.Tensor              # (3, h, w) float32 in [0, 1]
    alpha: Optional[torch.Tensor]  # (1, h, w) float32 in [0, 1], or None
    gray: bool                     # write a single colour channel
    bits: int                      # 8 or 16

    @property
    def size(self) -> Tuple[int, int]:
        """(h, w)."""
        return tuple(self.rgb.shape[-2:])


def _to_tensor(arr: np.ndarray, peak: float) -> torch.Tensor:
    """(h, w[, c]) array -> (c, h, w) float32 in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32) / peak).clamp_(0, 1)
    return t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1).contiguous()


def read_image(path: str) -> InputImage:
    """Decode any image PIL reads; an unreadable or non-image file is a one-line UserError."""
    if not os.path.isfile(path):
        raise UserError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            return _decode(im)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"cannot read image {path}: {first}") from None


def _decode(im: Image.Image) -> InputImage:
    """InputImage of a loaded PIL image, by mode."""
    if im.mode in SIXTEEN_BIT_MODES:
        # PIL's convert('RGB') would clip 16-bit values at 255: read the integers directly
        gray = _to_tensor(np.asarray(im), 65535.0)
        return InputImage(gray.expand(3, -1, -1).contiguous(), None, True, 16)
    has_alpha = 'A' in im.mode or 'a' in im.mode or 'transparency' in im.info
    gray = im.mode in ('1', 'L', 'LA', 'La')
    target = ('LA' if has_alpha else 'L') if gray else ('RGBA' if has_alpha else 'RGB')
    arr = _to_tensor(np.asarray(im.convert(target)), 255.0)
    colour = arr[:1].expand(3, -1, -1) if gray else arr[:3]
    alpha = arr[-1:].contiguous() if has_alpha else None
    return InputImage(colour.contiguous(), alpha, gray, 8)


def output_format(path: str) -> str:
    """PIL format name for the output path's extension; unknown extensions are UserErrors."""
    ext = os.path.splitext(path)[1].lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None or fmt not in Image.SAVE:
        raise UserError(f"cannot write {path}: unknown image extension {ext or '(none)'!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UserError(f"output folder does not exist: {folder}")
    return fmt


def save_atomic(arr: np.ndarray, path: str, fmt: str) -> None:
    """Save (H, W[, C]) uint8 / uint16 to path through a temporary file and a rename; nothing is left on failure."""
    try:
        with atomic_open(path, 'wb') as f:
            Image.fromarray(arr).save(f, format=fmt)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot write {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
