"""MATLAB-compatible bicubic resize (imresize(img, scale|size, 'bicubic')) on torch tensors.

Rules (measured on reference/rcan-set5, see its README): cubic kernel with a = -0.5, kernel
stretched by 1/scale when downscaling (antialiasing), output size ceil(in * scale), source indices
clamped to the border (replicate), one axis at a time. uint8 input is rounded half up and clipped
after EACH pass, as MATLAB does; float input gets the same kernel without rounding or clipping.
"""
import math
from typing import Iterator, Optional, Sequence, Tuple, Union

import torch

Scale = Union[float, Sequence[float]]


def cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's 'bicubic')."""
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return near + far


def contributions(in_len: int, out_len: int, scale: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Source indices (out_len, P) and weights (out_len, P), float64, of one axis, as MATLAB computes them."""
    width = 4.0
    if scale < 1:
        # antialiasing: the kernel is stretched so that it low-passes at the output's Nyquist rate
        width = width / scale
    x = torch.arange(1, out_len + 1, dtype=torch.float64)
    # MATLAB's 1-based centre mapping, kept literally so the doubles match
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - width / 2)
    taps = math.ceil(width) + 2
    idx = left.unsqueeze(1) + torch.arange(taps, dtype=torch.float64)
    dist = u.unsqueeze(1) - idx
    weights = scale * cubic(scale * dist) if scale < 1 else cubic(dist)
    weights = weights / weights.sum(dim=1, keepdim=True)
    idx = (idx - 1).clamp_(0, in_len - 1).long()
    # taps that are zero for every output pixel change nothing but cost a pass: drop them
    keep = weights.ne(0).any(dim=0)
    return idx[:, keep], weights[:, keep]


def _output_size(in_size: Sequence[int], scale: Optional[Scale], size: Optional[Sequence[int]]
                 ) -> Tuple[Tuple[int, int], Tuple[float, float]]:
    """Output (h, w) and per-axis scales, from either a scale factor or an output size."""
    if (scale is None) == (size is None):
        raise ValueError("imresize needs exactly one of scale and size")
    if size is not None:
        out = (int(size[0]), int(size[1]))
        if min(out) < 1:
            raise ValueError(f"output size must be positive, got {tuple(size)}")
        return out, (out[0] / in_size[0], out[1] / in_size[1])
    sh, sw = (float(scale), float(scale)) if isinstance(scale, (int, float)) else map(float, scale)
    if not (sh > 0 and sw > 0 and math.isfinite(sh) and math.isfinite(sw)):
        raise ValueError(f"scale must be positive and finite, got {scale}")
    out = (math.ceil(in_size[0] * sh), math.ceil(in_size[1] * sw))
    return out, (sh, sw)


def _resize_axis(x: torch.Tensor, dim: int, idx: torch.Tensor, weights: torch.Tensor,
                 quantise: bool) -> torch.Tensor:
    """Weighted gather-sum along `dim` (taps accumulated in MATLAB's order), rounded if `quantise`."""
    idx = idx.to(x.device)
    weights = weights.to(device=x.device, dtype=x.dtype)
    shape = [1] * x.dim()
    shape[dim] = weights.shape[0]
    out = None
    for t in range(idx.shape[1]):  # loop over the few kernel taps, not over pixels
        term = x.index_select(dim, idx[:, t]) * weights[:, t].view(shape)
        out = term if out is None else out.add_(term)
    if quantise:
        out = out.add_(0.5).floor_().clamp_(0, 255)
    return out


def _pass_order(scales: Tuple[float, float]) -> Tuple[int, int]:
    """MATLAB resizes the axis with the smaller scale first; ties go height first."""
    return (0, 1) if scales[0] <= scales[1] else (1, 0)


def imresize(img: torch.Tensor, scale: Optional[Scale] = None,
             size: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Bicubic resize of the last two axes of img (..., H, W) by `scale` (number or (sh, sw)) or to `size` (h, w).

    uint8 in -> uint8 out, bit-exact with MATLAB; float in -> same float dtype, no rounding.
    """
    if img.dim() < 2:
        raise ValueError(f"imresize needs an image (..., H, W), got shape {tuple(img.shape)}")
    in_size = tuple(img.shape[-2:])
    out_size, scales = _output_size(in_size, scale, size)
    quantise = img.dtype == torch.uint8
    if not (quantise or img.is_floating_point()):
        raise TypeError(f"imresize takes uint8 or floating-point images, not {img.dtype}")
    x = img.double() if quantise else img
    for axis in _pass_order(scales):
        dim = x.dim() - 2 + axis
        if out_size[axis] == in_size[axis] and scales[axis] == 1:
            continue  # a scale of exactly 1 is the identity for this kernel: save the pass
        idx, w = contributions(in_size[axis], out_size[axis], scales[axis])
        x = _resize_axis(x, dim, idx, w, quantise)
    if x is img:
        x = img.clone()
    return x.to(torch.uint8) if quantise else x


class RowResizer:
    """imresize(img, size=size) of a float image, computed for any range of output rows on demand.

    Only the source rows a range needs are touched, so a huge output never exists as one float
    tensor. Float images only: uint8's per-pass rounding would make bands depend on the pass order.
    """

    def __init__(self, img: torch.Tensor, size: Sequence[int]):
        if not img.is_floating_point():
            raise TypeError("RowResizer takes floating-point images")
        self.img = img
        (h, w), (sh, sw) = _output_size(img.shape[-2:], None, size)
        self.size = (h, w)
        self.idx_h, self.w_h = contributions(img.shape[-2], h, sh)
        self.idx_w, self.w_w = contributions(img.shape[-1], w, sw)

    def __call__(self, r0: int, r1: int, c0: int = 0, c1: Optional[int] = None) -> torch.Tensor:
        """Output rows r0:r1 and columns c0:c1 (half-open; default all): (..., r1 - r0, c1 - c0)."""
        dim_h = self.img.dim() - 2
        band = _resize_axis(self.img, dim_h, self.idx_h[r0:r1], self.w_h[r0:r1], False)
        return _resize_axis(band, dim_h + 1, self.idx_w[c0:c1], self.w_w[c0:c1], False)


def iter_imresize_bands(img: torch.Tensor, size: Sequence[int], rows: int
                        ) -> Iterator[Tuple[int, torch.Tensor]]:
    """Yield (row0, band (..., rows, W_out)) of imresize(img, size=size) for a float image, top to bottom."""
    resizer = RowResizer(img, size)
    rows = max(1, rows)
    for r0 in range(0, resizer.size[0], rows):
        yield r0, resizer(r0, min(resizer.size[0], r0 + rows))
