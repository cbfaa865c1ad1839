"""Any image PIL reads as float RGB (+ alpha), and atomic writing of the upscaled result.

Grayscale stays grayscale, 16-bit grayscale keeps 16 bits where the output format can hold them,
palette images become RGB (RGBA when they have transparency), alpha is carried separately.
EXIF orientation is applied on read, as photo viewers do; float images are read by their value
range; 16-bit RGB(A) PNGs, which PIL would cut to 8 bits, are decoded here at 16 bits.
"""
import os
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from utils.atomic import atomic_open
from utils.errors import UserError

SIXTEEN_BIT_MODES = ('I;16', 'I;16B', 'I;16L', 'I;16N')
SIXTEEN_BIT_FORMATS = ('PNG', 'TIFF')
NO_ALPHA_FORMATS = ('JPEG', 'MPO')
# EXIF orientation -> what the stored pixels need to be shown upright (the EXIF 2.3 table)
ORIENTATIONS = {2: 'mirrored', 3: 'rotated 180', 4: 'flipped', 5: 'transposed', 6: 'rotated 90 clockwise',
                7: 'transversed', 8: 'rotated 90 counter-clockwise'}
# value ranges a float / 32-bit integer image may be stored in, smallest first
FLOAT_PEAKS = (1.0, 255.0, 65535.0)
INT_PEAKS = (65535.0, float(2 ** 31 - 1))


@dataclass
class InputImage:
    """An image as the model sees it, plus what the output must preserve."""
    rgb: torch.Tensor              # (3, h, w) float32 in [0, 1]
    alpha: Optional[torch.Tensor]  # (1, h, w) float32 in [0, 1], or None
    gray: bool                     # write a single colour channel
    bits: int                      # 8 or 16
    notes: List[str] = field(default_factory=list)  # how the file was interpreted, for the log

    @property
    def size(self) -> Tuple[int, int]:
        """(h, w)."""
        return tuple(self.rgb.shape[-2:])


def _to_tensor(arr: np.ndarray, peak: float) -> torch.Tensor:
    """(h, w[, c]) array -> (c, h, w) float32 in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32) / np.float32(peak)).clamp_(0, 1)
    return t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1).contiguous()


def read_image(path: str) -> InputImage:
    """Decode any image PIL reads (first frame, EXIF orientation applied); unreadable files are one-line UserErrors."""
    if not os.path.isfile(path):
        raise UserError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            deep = _png16(path) if im.format == 'PNG' and _png16_rawmode(im) else None  # tile: before load()
            im.load()
            frames = getattr(im, 'n_frames', 1)
            img = decode(im, deep)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"cannot read image {path}: {first}") from None
    if frames > 1:
        img.notes.append(f"{frames} frames: only frame 1 is used")
    return img


def decode(im: Image.Image, deep: Optional[np.ndarray] = None) -> InputImage:
    """InputImage of a loaded PIL image, upright (EXIF orientation), by mode.

    deep: the image's 16-bit RGB(A) pixels where PIL decoded them to 8 bits.
    """
    notes = []
    orientation = im.getexif().get(0x0112, 1)
    if orientation in ORIENTATIONS:
        im = ImageOps.exif_transpose(im)
        if deep is not None:
            deep = _orient(deep, orientation)
        notes.append(f"EXIF orientation {orientation} applied ({ORIENTATIONS[orientation]})")
    if deep is not None:
        t = _to_tensor(deep, 65535.0)
        alpha = t[3:].contiguous() if t.shape[0] == 4 else None
        return InputImage(t[:3].contiguous(), alpha, False, 16, notes + ['16-bit RGB'])
    if im.mode in SIXTEEN_BIT_MODES:
        # PIL's convert('RGB') would clip 16-bit values at 255: read the integers directly
        gray = _to_tensor(np.asarray(im).astype(np.float32), 65535.0)
        return InputImage(gray.expand(3, -1, -1).contiguous(), None, True, 16, notes)
    if im.mode in ('F', 'I'):
        arr = np.asarray(im).astype(np.float64)
        peak = _by_range(arr, FLOAT_PEAKS if im.mode == 'F' else INT_PEAKS, im.mode, notes)
        gray = _to_tensor(arr, peak)
        return InputImage(gray.expand(3, -1, -1).contiguous(), None, True, 16, notes)
    if im.mode == 'La':  # premultiplied: PIL converts it to nothing else than LA
        im = im.convert('LA')
    if im.mode == 'LAB':
        raise UserError("CIELAB images are not supported: convert them to RGB first")
    has_alpha = 'A' in im.mode or 'a' in im.mode or 'transparency' in im.info
    gray = im.mode in ('1', 'L', 'LA')
    target = ('LA' if has_alpha else 'L') if gray else ('RGBA' if has_alpha else 'RGB')
    arr = _to_tensor(np.asarray(im.convert(target)), 255.0)
    colour = arr[:1].expand(3, -1, -1) if gray else arr[:3]
    alpha = arr[-1:].contiguous() if has_alpha else None
    return InputImage(colour.contiguous(), alpha, gray, 8, notes)


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """An (h, w, c) array turned upright as exif_transpose turns a PIL image."""
    flipped = arr[:, ::-1] if orientation in (2, 7) else arr[::-1] if orientation in (4, 5) else arr
    if orientation in (5, 6, 7):  # 6: 90 degrees clockwise; 5 and 7 after a flip
        flipped = np.rot90(flipped, -1)
    elif orientation == 8:
        flipped = np.rot90(flipped, 1)
    elif orientation == 3:
        flipped = flipped[::-1, ::-1]
    return np.ascontiguousarray(flipped)


def _by_range(arr: np.ndarray, peaks: Tuple[float, ...], mode: str, notes: List[str]) -> float:
    """The full-scale value of a float / int32 image: the smallest of `peaks` holding its largest value."""
    if not np.isfinite(arr).all():
        raise ValueError(f"mode {mode} image holds NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    peak = next((p for p in peaks if hi <= p), None)
    if peak is None:
        raise ValueError(f"mode {mode} values reach {hi:g}, beyond any known range (up to {peaks[-1]:g})")
    notes.append(f"mode {mode} values in [{lo:g}, {hi:g}] read as [0, {peak:g}]"
                 + (" (negative values clipped to 0)" if lo < 0 else ''))
    return peak


def _png16_rawmode(im: Image.Image) -> bool:
    """True for a 16-bit RGB(A) PNG, which PIL decodes to 8 bits."""
    tile = getattr(im, 'tile', None) or []
    return im.mode in ('RGB', 'RGBA') and bool(tile) and tile[0][3] in ('RGB;16B', 'RGBA;16B')


def _png16(path: str) -> np.ndarray:
    """The pixels of a 16-bit RGB(A) PNG as uint16 (h, w, 3 or 4).

    PIL unfilters the PNG, then unpacks each big-endian 16-bit sample to 8 bits by its first (high)
    byte; decoding again with the little-endian unpacker takes the other (low) byte instead.
    """
    planes = []
    for order in ('16B', '16L'):
        with Image.open(path) as im:
            im.tile = [t._replace(args=t.args.replace('16B', order)) for t in im.tile]
            im.load()
            planes.append(np.asarray(im).astype(np.uint16))
    return planes[0] << 8 | planes[1]


def output_format(path: str) -> str:
    """PIL format name for the output path's extension; unknown extensions and folders are UserErrors."""
    if os.path.isdir(path):
        raise UserError(f"output path {path} is a folder: give a file name such as {os.path.join(path, 'out.png')}")
    ext = os.path.splitext(path)[1].lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None or fmt not in Image.SAVE:
        raise UserError(f"cannot write {path}: unknown image extension {ext or '(none)'!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UserError(f"output folder does not exist: {folder}")
    return fmt


def same_file(a: str, b: str) -> bool:
    """True if paths a and b name the same file (b need not exist)."""
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def save_atomic(arr: np.ndarray, path: str, fmt: str) -> None:
    """Save (H, W[, C]) uint8 / uint16 to path through a temporary file and a rename; nothing is left on failure."""
    try:
        with atomic_open(path, 'wb') as f:
            Image.fromarray(arr).save(f, format=fmt)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot write {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
