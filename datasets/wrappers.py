"""Wrappers that turn images into LIIF samples {'inp', 'coord', 'cell', 'gt'} (LIIF.md, training recipe).

Every random draw of a sample comes from `self.rng(idx)`: call `reseed(seed, epoch)` for a
reproducible stream (the trainer does, every epoch); without it the draws follow the global RNG.
"""
import copy
import math
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from datasets.downsample import downsample
from datasets.registry import register
from datasets.sample_rng import SampleRNG
from utils.coord import make_cell, to_pixel_samples
from utils.errors import UserError
from utils.image import u8_to_float


def _as_float(img: torch.Tensor) -> torch.Tensor:
    return u8_to_float(img) if img.dtype == torch.uint8 else img


def _random_dihedral(rng: np.random.Generator) -> Callable[[torch.Tensor], torch.Tensor]:
    """The paper's augmentation: random flips of both axes and a random transpose, the same for LR and HR."""
    hflip, vflip, dflip = (bool(v) for v in rng.random(3) < 0.5)

    def apply(x: torch.Tensor) -> torch.Tensor:
        if hflip:
            x = x.flip(-2)
        if vflip:
            x = x.flip(-1)
        if dflip:
            x = x.transpose(-2, -1)
        return x
    return apply


def _samples(inp: torch.Tensor, hr: torch.Tensor, sample_q: Optional[int],
             rng: np.random.Generator) -> Dict[str, torch.Tensor]:
    """Coordinates, cells and colours of the HR pixels (all, or sample_q drawn without replacement)."""
    coord, rgb = to_pixel_samples(hr.contiguous())
    if sample_q is not None:
        if sample_q > len(coord):
            raise UserError(f"sample_q {sample_q} exceeds the {len(coord)} pixels of an HR crop "
                            f"of {tuple(hr.shape[-2:])}")
        idx = torch.from_numpy(rng.choice(len(coord), sample_q, replace=False))
        coord, rgb = coord[idx], rgb[idx]
    return {'inp': inp.contiguous(), 'coord': coord, 'cell': make_cell(coord, hr.shape[-2:]),
            'gt': rgb.contiguous()}


def _augmented_samples(crop_lr: torch.Tensor, crop_hr: torch.Tensor, augment: bool, sample_q: Optional[int],
                       rng: np.random.Generator) -> Dict[str, torch.Tensor]:
    """The same random dihedral transform on both crops if `augment`, then the HR pixel samples."""
    if augment:
        aug = _random_dihedral(rng)
        crop_lr, crop_hr = aug(crop_lr), aug(crop_hr)
    return _samples(crop_lr, crop_hr, sample_q, rng)


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
        img_lr, img_hr = self.dataset[idx]
        s = img_hr.shape[-2] // img_lr.shape[-2]
        if self.inp_size is None:
            h_lr, w_lr = img_lr.shape[-2:]
            crop_lr, crop_hr = img_lr, img_hr[:, :h_lr * s, :w_lr * s]
        else:
            w_lr = self.inp_size
            if min(img_lr.shape[-2:]) < w_lr:
                raise UserError(f"LR image of {tuple(img_lr.shape[-2:])} px is smaller than inp_size {w_lr}")
            x0 = int(rng.integers(0, img_lr.shape[-2] - w_lr + 1))
            y0 = int(rng.integers(0, img_lr.shape[-1] - w_lr + 1))
            crop_lr = img_lr[:, x0:x0 + w_lr, y0:y0 + w_lr]
            crop_hr = img_hr[:, x0 * s:(x0 + w_lr) * s, y0 * s:(y0 + w_lr) * s]
        return _augmented_samples(_as_float(crop_lr), _as_float(crop_hr), self.augment, self.sample_q, rng)


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
        img = self.dataset[idx]
        s = self._scale(rng, img.shape[-2:])
        if self.inp_size is None:
            h_lr = math.floor(img.shape[-2] / s + 1e-9)
            w_lr = math.floor(img.shape[-1] / s + 1e-9)
            crop_hr = _as_float(img[:, :round(h_lr * s), :round(w_lr * s)])
            crop_lr = downsample(crop_hr, (h_lr, w_lr), self.resize)
        else:
            w_lr = self.inp_size
            w_hr = min(round(w_lr * s), *img.shape[-2:])  # a capped scale may round one pixel over
            x0 = int(rng.integers(0, img.shape[-2] - w_hr + 1))
            y0 = int(rng.integers(0, img.shape[-1] - w_hr + 1))
            crop_hr = _as_float(img[:, x0:x0 + w_hr, y0:y0 + w_hr])
            crop_lr = downsample(crop_hr, (w_lr, w_lr), self.resize)
        return _augmented_samples(crop_lr, crop_hr, self.augment, self.sample_q, rng)


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
        p = idx / (len(self.dataset) - 1) if len(self.dataset) > 1 else 0.0
        return round(self.size_min + (self.size_max - self.size_min) * p)

    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        rng = self.rng(idx)
        img_lr, img_hr = self.dataset[idx]
        img_lr = _as_float(img_lr)
        img_hr = _resize_short_edge(_as_float(img_hr), self.hr_size(idx), self.resize)
        if self.augment and rng.random() < 0.5:
            img_lr, img_hr = img_lr.flip(-1), img_hr.flip(-1)
        if self.gt_resize is not None:
            img_hr = _resize_short_edge(img_hr, self.gt_resize, self.resize)
        return _samples(img_lr, img_hr, self.sample_q, rng)

