"""Wrappers that turn images into LIIF samples {'inp', 'coord', 'cell', 'gt'} (LIIF.md, training recipe)."""
import math
import random
from typing import Dict, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from datasets.downsample import downsample
from datasets.registry import register
from utils.coord import make_cell, to_pixel_samples
from utils.errors import UserError
from utils.image import u8_to_float


def _as_float(img: torch.Tensor) -> torch.Tensor:
    return u8_to_float(img) if img.dtype == torch.uint8 else img


def _random_dihedral():
    """The paper's augmentation: random flips of both axes and a random transpose, the same for LR and HR."""
    hflip, vflip, dflip = random.random() < 0.5, random.random() < 0.5, random.random() < 0.5

    def apply(x: torch.Tensor) -> torch.Tensor:
        if hflip:
            x = x.flip(-2)
        if vflip:
            x = x.flip(-1)
        if dflip:
            x = x.transpose(-2, -1)
        return x
    return apply


def _samples(inp: torch.Tensor, hr: torch.Tensor, sample_q: Optional[int]) -> Dict[str, torch.Tensor]:
    """Coordinates, cells and colours of the HR pixels (all, or sample_q drawn without replacement)."""
    coord, rgb = to_pixel_samples(hr.contiguous())
    if sample_q is not None:
        if sample_q > len(coord):
            raise UserError(f"sample_q {sample_q} exceeds the {len(coord)} pixels of an HR crop")
        idx = torch.from_numpy(np.random.choice(len(coord), sample_q, replace=False))
        coord, rgb = coord[idx], rgb[idx]
    return {'inp': inp, 'coord': coord, 'cell': make_cell(coord, hr.shape[-2:]), 'gt': rgb}


@register('sr-implicit-paired')
class SRImplicitPaired(Dataset):
    """(LR, HR) pairs with an integer scale; random aligned crops of inp_size LR pixels if given."""

    def __init__(self, dataset, inp_size: Optional[int] = None, augment: bool = False,
                 sample_q: Optional[int] = None):
        self.dataset, self.inp_size, self.augment, self.sample_q = dataset, inp_size, augment, sample_q

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        img_lr, img_hr = self.dataset[idx]
        s = img_hr.shape[-2] // img_lr.shape[-2]
        if self.inp_size is None:
            h_lr, w_lr = img_lr.shape[-2:]
            crop_lr, crop_hr = img_lr, img_hr[:, :h_lr * s, :w_lr * s]
        else:
            w_lr = self.inp_size
            x0 = random.randint(0, img_lr.shape[-2] - w_lr)
            y0 = random.randint(0, img_lr.shape[-1] - w_lr)
            crop_lr = img_lr[:, x0:x0 + w_lr, y0:y0 + w_lr]
            crop_hr = img_hr[:, x0 * s:(x0 + w_lr) * s, y0 * s:(y0 + w_lr) * s]
        crop_lr, crop_hr = _as_float(crop_lr), _as_float(crop_hr)
        if self.augment:
            aug = _random_dihedral()
            crop_lr, crop_hr = aug(crop_lr), aug(crop_hr)
        return _samples(crop_lr, crop_hr, self.sample_q)


@register('sr-implicit-downsampled')
class SRImplicitDownsampled(Dataset):
    """HR images downscaled by a random s ~ U(scale_min, scale_max); crops of inp_size LR pixels if given."""

    def __init__(self, dataset, inp_size: Optional[int] = None, scale_min: float = 1,
                 scale_max: Optional[float] = None, augment: bool = False, sample_q: Optional[int] = None,
                 resize: str = 'torch'):
        self.dataset, self.inp_size, self.augment, self.sample_q = dataset, inp_size, augment, sample_q
        self.scale_min = scale_min
        self.scale_max = scale_min if scale_max is None else scale_max
        self.resize = resize

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        img = self.dataset[idx]
        s = random.uniform(self.scale_min, self.scale_max)
        if self.inp_size is None:
            h_lr = math.floor(img.shape[-2] / s + 1e-9)
            w_lr = math.floor(img.shape[-1] / s + 1e-9)
            crop_hr = _as_float(img[:, :round(h_lr * s), :round(w_lr * s)])
            crop_lr = downsample(crop_hr, (h_lr, w_lr), self.resize)
        else:
            w_lr = self.inp_size
            w_hr = round(w_lr * s)
            if min(img.shape[-2:]) < w_hr:
                raise UserError(f"image of {tuple(img.shape[-2:])} px is smaller than an HR crop of {w_hr} px")
            x0 = random.randint(0, img.shape[-2] - w_hr)
            y0 = random.randint(0, img.shape[-1] - w_hr)
            crop_hr = _as_float(img[:, x0:x0 + w_hr, y0:y0 + w_hr])
            crop_lr = downsample(crop_hr, (w_lr, w_lr), self.resize)
        if self.augment:
            aug = _random_dihedral()
            crop_lr, crop_hr = aug(crop_lr), aug(crop_hr)
        return _samples(crop_lr, crop_hr, self.sample_q)
