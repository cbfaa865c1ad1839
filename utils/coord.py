"""Coordinates of pixel centres in [-1, 1]^2, pixel samples and cells (LIIF.md, 'Coordinates')."""
from typing import Optional, Sequence, Tuple, Union

import torch

Device = Union[str, torch.device, None]


def coord_seq(n: int, v0: float = -1.0, v1: float = 1.0, device: Device = None) -> torch.Tensor:
    """Centres of n equal cells covering [v0, v1], float32, computed exactly as the reference does."""
    r = (v1 - v0) / (2 * n)
    return v0 + r + (2 * r) * torch.arange(n, device=device).float()


def make_coord(shape: Sequence[int], ranges: Optional[Sequence[Tuple[float, float]]] = None,
               flatten: bool = True, device: Device = None) -> torch.Tensor:
    """Pixel-centre coordinates of a grid: (prod(shape), ndim) if flatten else (*shape, ndim)."""
    seqs = []
    for i, n in enumerate(shape):
        v0, v1 = (-1, 1) if ranges is None else ranges[i]
        seqs.append(coord_seq(n, v0, v1, device=device))
    ret = torch.stack(torch.meshgrid(*seqs, indexing='ij'), dim=-1)
    if flatten:
        ret = ret.view(-1, ret.shape[-1])
    return ret


def make_cell(coord: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Cell (2/H, 2/W) for every query of `coord` (..., 2), the pixel size of an H x W target."""
    cell = torch.ones_like(coord)
    cell[..., 0] *= 2 / shape[0]
    cell[..., 1] *= 2 / shape[1]
    return cell


def to_pixel_samples(img: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(coord (H*W, 2), rgb (H*W, C)) of an image (C, H, W), both in row-major pixel order."""
    coord = make_coord(img.shape[-2:], device=img.device)
    rgb = img.reshape(img.shape[0], -1).permute(1, 0)
    return coord, rgb
