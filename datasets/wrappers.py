"""Wrappers that turn images into LIIF samples {'inp', 'coord', 'cell', 'gt'} (LIIF.md, training recipe).

Every random draw of a sample comes from `self.rng(idx)`: call `reseed(seed, epoch)` for a
reproducible stream (the trainer does, every epoch); without it the draws follow the global RNG.
"""
import copy
import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from datasets.downsample import downsample
from datasets.registry import register
from datasets.sample_rng import SampleRNG
from utils.coord import make_cell, to_pixel_samples
from utils.errors import UserError
from utils.image import u8_to_float


# the wrappers whose samples are in the grid layout of SRNO (coord (H, W, 2), gt (3, H, W), cell (2,))
GRID_WRAPPERS = ('sr-implicit-downsampled-fast',)


def _as_float(img: torch.Tensor) -> torch.Tensor:
    return u8_to_float(img) if img.dtype == torch.uint8 else img


@dataclass(frozen=True)
class Dihedral:
    """One of the 8 symmetries of the square: the paper's augmentation, applied alike to LR and HR."""
    flip_rows: bool   # reverse the order of the rows (top <-> bottom)
    flip_cols: bool   # reverse the order of the columns (left <-> right)
    transpose: bool   # swap the two axes, after the flips

    @classmethod
    def draw(cls, rng: np.random.Generator) -> 'Dihedral':
        """Each of the three choices with probability 1/2, from one draw of three uniforms."""
        flip_rows, flip_cols, transpose = (bool(u < 0.5) for u in rng.random(3))
        return cls(flip_rows, flip_cols, transpose)

    def apply(self, img: torch.Tensor) -> torch.Tensor:
        """img (..., H, W) under this symmetry."""
        if self.flip_rows:
            img = img.flip(-2)
        if self.flip_cols:
            img = img.flip(-1)
        return img.transpose(-2, -1) if self.transpose else img


def _random_window(rng: np.random.Generator, hw: Sequence[int], side: int) -> Tuple[int, int]:
    """(top, left) of a side x side window drawn uniformly inside an image of size hw (top drawn first)."""
    top = int(rng.integers(0, hw[0] - side + 1))
    left = int(rng.integers(0, hw[1] - side + 1))
    return top, left


def _window(img: torch.Tensor, top: int, left: int, side: int) -> torch.Tensor:
    """The side x side window of img (C, H, W) at (top, left)."""
    return img[:, top:top + side, left:left + side]


def _pixel_samples(lr: torch.Tensor, hr: torch.Tensor, sample_q: Optional[int],
                   rng: np.random.Generator) -> Dict[str, torch.Tensor]:
    """LR input plus coordinates, cells and colours of the HR pixels (all, or sample_q without replacement)."""
    coord, rgb = to_pixel_samples(hr.contiguous())
    if sample_q is not None:
        if sample_q > len(coord):
            raise UserError(f"sample_q {sample_q} exceeds the {len(coord)} pixels of an HR crop "
                            f"of {tuple(hr.shape[-2:])}")
        chosen = torch.from_numpy(rng.choice(len(coord), sample_q, replace=False))
        coord, rgb = coord[chosen], rgb[chosen]
    return {'inp': lr.contiguous(), 'coord': coord, 'cell': make_cell(coord, hr.shape[-2:]),
            'gt': rgb.contiguous()}


def _augmented(lr: torch.Tensor, hr: torch.Tensor, augment: bool,
               rng: np.random.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    """The pair after one random symmetry of both if `augment` (no draw otherwise)."""
    if augment:
        symmetry = Dihedral.draw(rng)
        lr, hr = symmetry.apply(lr), symmetry.apply(hr)
    return lr, hr


def _training_sample(lr: torch.Tensor, hr: torch.Tensor, augment: bool, sample_q: Optional[int],
                     rng: np.random.Generator) -> Dict[str, torch.Tensor]:
    """_pixel_samples of the pair, after one random symmetry of both if `augment` (drawn before the pixels)."""
    return _pixel_samples(*_augmented(lr, hr, augment, rng), sample_q, rng)


def _resize_short_edge(img: torch.Tensor, size: int, method: str) -> torch.Tensor:
    """Resize so the smaller edge is `size` (torchvision Resize(int) semantics), bicubic, 8-bit quantised."""
    h, w = img.shape[-2:]
    short, long = (h, w) if h <= w else (w, h)
    new_long = int(size * long / short)
    new_hw = (size, new_long) if h <= w else (new_long, size)
    if tuple(new_hw) == (h, w):
        return img
    return downsample(img, new_hw, method)


class _Wrapper(Dataset):
    """Common parts: the wrapped dataset, per-sample RNG, length."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self.rng = SampleRNG()

    def reseed(self, seed: int, epoch: int = 0, stream: int = 0) -> None:
        """Make every following sample a function of (seed, stream, epoch, index)."""
        self.rng.reseed(seed, epoch, stream)

    def full_grid(self) -> '_Wrapper':
        """A copy that returns every HR pixel (sample_q None) and draws from its own RNG, for previews."""
        out = copy.copy(self)
        out.sample_q = None
        out.rng = copy.copy(self.rng)
        return out

    def __len__(self) -> int:
        return len(self.dataset)


@register('sr-implicit-paired')
class SRImplicitPaired(_Wrapper):
    """(LR, HR) pairs with an integer scale; random aligned crops of inp_size LR pixels if given."""

    def __init__(self, dataset: Dataset, inp_size: Optional[int] = None, augment: bool = False,
                 sample_q: Optional[int] = None):
        super().__init__(dataset)
        self.inp_size, self.augment, self.sample_q = inp_size, augment, sample_q

    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        rng = self.rng(idx)
        lr, hr = self.dataset[idx]
        scale = hr.shape[-2] // lr.shape[-2]
        if self.inp_size is None:  # the whole LR, and the HR rows and columns it covers
            lr_h, lr_w = lr.shape[-2:]
            hr = hr[:, :lr_h * scale, :lr_w * scale]
        else:
            side = self.inp_size
            if min(lr.shape[-2:]) < side:
                raise UserError(f"LR image of {tuple(lr.shape[-2:])} px is smaller than inp_size {side}")
            top, left = _random_window(rng, lr.shape[-2:], side)
            lr = _window(lr, top, left, side)
            hr = _window(hr, top * scale, left * scale, side * scale)
        return _training_sample(_as_float(lr), _as_float(hr), self.augment, self.sample_q, rng)


@register('sr-implicit-downsampled')
class SRImplicitDownsampled(_Wrapper):
    """HR images downscaled by a random s ~ U(scale_min, scale_max); crops of inp_size LR pixels if given.

    cap_scale: for images smaller than an HR crop of inp_size * scale_max pixels, draw s from
    U(scale_min, side / inp_size) instead of failing (small training sets such as T91).
    """

    def __init__(self, dataset: Dataset, inp_size: Optional[int] = None, scale_min: float = 1,
                 scale_max: Optional[float] = None, augment: bool = False, sample_q: Optional[int] = None,
                 resize: str = 'torch', cap_scale: bool = False):
        super().__init__(dataset)
        self.inp_size, self.augment, self.sample_q = inp_size, augment, sample_q
        self.scale_min = scale_min
        self.scale_max = scale_min if scale_max is None else scale_max
        if not 0 < self.scale_min <= self.scale_max:
            raise UserError(f"need 0 < scale_min <= scale_max, got {self.scale_min} and {self.scale_max}")
        self.resize = resize
        self.cap_scale = cap_scale

    def _scale(self, rng: np.random.Generator, hw: Sequence[int]) -> float:
        scale_max = self.scale_max
        if self.inp_size is not None and min(hw) < round(self.inp_size * scale_max):
            if not self.cap_scale:
                raise UserError(f"image of {tuple(hw)} px is smaller than an HR crop of "
                                f"{round(self.inp_size * scale_max)} px (inp_size {self.inp_size} x "
                                f"scale_max {scale_max}); set cap_scale: true or drop small images")
            scale_max = min(hw) / self.inp_size
            if scale_max < self.scale_min:
                raise UserError(f"image of {tuple(hw)} px is smaller than an HR crop of "
                                f"{round(self.inp_size * self.scale_min)} px even at scale_min")
        return float(rng.uniform(self.scale_min, scale_max))

    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        rng = self.rng(idx)
        lr, hr = self._pair(idx, rng)
        return _training_sample(lr, hr, self.augment, self.sample_q, rng)

    def _pair(self, idx: int, rng: np.random.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
        """(LR, HR) of sample idx: the scale, then the crop, drawn from rng; the LR downscaled from the HR."""
        img = self.dataset[idx]
        scale = self._scale(rng, img.shape[-2:])
        if self.inp_size is None:
            # the largest LR that fits and the HR region it stands for; 1e-9 keeps a whole ratio that
            # floating point puts just below an integer (0.7 / 0.1 = 6.99..) from losing a pixel
            lr_hw = tuple(math.floor(n / scale + 1e-9) for n in img.shape[-2:])
            hr = _as_float(img[:, :round(lr_hw[0] * scale), :round(lr_hw[1] * scale)])
        else:
            lr_hw = (self.inp_size, self.inp_size)
            side = min(round(self.inp_size * scale), *img.shape[-2:])  # a capped scale may round one pixel over
            top, left = _random_window(rng, img.shape[-2:], side)
            hr = _as_float(_window(img, top, left, side))
        return downsample(hr, lr_hw, self.resize), hr


@register('sr-implicit-downsampled-fast')
class SRImplicitDownsampledFast(SRImplicitDownsampled):
    """The grid-layout samples of SRNO (and LTE-fast): crops as sr-implicit-downsampled, targets as a 2-D grid.

    With inp_size, inp_size^2 HR pixels are drawn without replacement and arranged, in the order
    drawn, as an inp_size x inp_size grid: coord (inp_size, inp_size, 2), gt (3, inp_size,
    inp_size). Without it (or in full_grid), every HR pixel in place: coord (H, W, 2), gt (3, H, W).
    One cell (2,) per sample, the HR crop's pixel size.
    """

    def __init__(self, dataset: Dataset, inp_size: Optional[int] = None, scale_min: float = 1,
                 scale_max: Optional[float] = None, augment: bool = False, resize: str = 'torch',
                 cap_scale: bool = False):
        super().__init__(dataset, inp_size, scale_min, scale_max, augment, None, resize, cap_scale)
        # how many HR pixels a sample draws: as many as the LR crop has (None: all of them)
        self.sample_q = None if inp_size is None else inp_size * inp_size

    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        rng = self.rng(idx)
        lr, hr = _augmented(*self._pair(idx, rng), self.augment, rng)
        # the LIIF sample laid out as a grid: checked first to name the grid in the error
        grid = tuple(hr.shape[-2:]) if self.sample_q is None else (self.inp_size, self.inp_size)
        if self.sample_q is not None and self.sample_q > hr.shape[-2] * hr.shape[-1]:
            raise UserError(f"an HR crop of {tuple(hr.shape[-2:])} px has fewer pixels than the {grid[0]} x {grid[1]} "
                            f"grid of targets (scale below 1?)")
        sample = _pixel_samples(lr, hr, self.sample_q, rng)
        # one cell per sample, copied: a view would carry every query's cell along to the loader
        return {'inp': sample['inp'], 'coord': sample['coord'].view(*grid, 2), 'cell': sample['cell'][0].clone(),
                'gt': sample['gt'].t().contiguous().view(-1, *grid)}


@register('sr-implicit-uniform-varied')
class SRImplicitUniformVaried(_Wrapper):
    """(LR, HR) pairs whose HR is resized to a size growing with the index (the paper's CelebA-HQ setup).

    Sample idx gets an HR of round(size_min + (size_max - size_min) * idx / (len - 1)) pixels on its
    smaller edge; augment is a random horizontal flip of both; gt_resize resizes the HR once more.
    """

    def __init__(self, dataset: Dataset, size_min: int, size_max: Optional[int] = None,
                 augment: bool = False, gt_resize: Optional[int] = None, sample_q: Optional[int] = None,
                 resize: str = 'torch'):
        super().__init__(dataset)
        self.size_min = size_min
        self.size_max = size_min if size_max is None else size_max
        self.augment, self.gt_resize, self.sample_q, self.resize = augment, gt_resize, sample_q, resize

    def hr_size(self, idx: int) -> int:
        """The smaller edge of sample idx's HR target."""
        progress = idx / (len(self.dataset) - 1) if len(self.dataset) > 1 else 0.0
        return round(self.size_min + (self.size_max - self.size_min) * progress)

    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        rng = self.rng(idx)
        lr, hr = self.dataset[idx]
        lr = _as_float(lr)
        hr = _resize_short_edge(_as_float(hr), self.hr_size(idx), self.resize)
        if self.augment and rng.random() < 0.5:  # mirror both left <-> right
            lr, hr = lr.flip(-1), hr.flip(-1)
        if self.gt_resize is not None:
            hr = _resize_short_edge(hr, self.gt_resize, self.resize)
        return _pixel_samples(lr, hr, self.sample_q, rng)
