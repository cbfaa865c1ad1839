"""Image quality metrics of the SR literature: PSNR (RGB or Y) and SSIM (Wang et al. 2004, on Y).

Images are float tensors in [0, 1] (or uint8) shaped (3, H, W) or (N, 3, H, W); results are per
image: a scalar tensor for (3, H, W), shape (N,) for a batch. The Y channel is MATLAB's
rgb2ycbcr luminance, Y = 16 + 65.481 R + 128.553 G + 24.966 B on the 0..255 scale.
"""
from typing import Tuple

import torch
import torch.nn.functional as F

Y_WEIGHTS = (65.481, 128.553, 24.966)


def _as_batch(img: torch.Tensor) -> Tuple[torch.Tensor, bool]:
    """(N, C, H, W) float64 in [0, 1] and whether the input had no batch axis."""
    single = img.dim() == 3
    if img.dim() not in (3, 4):
        raise ValueError(f"expected an image (C, H, W) or a batch (N, C, H, W), got shape {tuple(img.shape)}")
    x = img.unsqueeze(0) if single else img
    x = x.double() / 255 if x.dtype == torch.uint8 else x.double()
    return x, single


def rgb_to_y(img: torch.Tensor) -> torch.Tensor:
    """Luminance (..., 1, H, W) of RGB (..., 3, H, W) in [0, 1], as MATLAB's rgb2ycbcr: in [16, 235] / 255."""
    w = img.new_tensor(Y_WEIGHTS).view(3, 1, 1) / 255
    return (img * w).sum(dim=-3, keepdim=True) + 16 / 255


def _prepare(sr: torch.Tensor, hr: torch.Tensor, shave: int, y_channel: bool, round_u8: bool
             ) -> Tuple[torch.Tensor, torch.Tensor, bool]:
    """Both images as float64 batches in [0, 1], quantised / converted to Y / shaved as asked."""
    if sr.shape != hr.shape:
        raise ValueError(f"images differ in shape: {tuple(sr.shape)} vs {tuple(hr.shape)}")
    (a, single), (b, _) = _as_batch(sr), _as_batch(hr)
    if round_u8:
        # the 8-bit image a user would save: clamp, then round to the nearest level
        a = a.clamp(0, 1).mul(255).round().div(255)
    if y_channel and a.shape[1] == 3:
        a, b = rgb_to_y(a), rgb_to_y(b)
    if shave > 0:
        if min(a.shape[-2:]) <= 2 * shave:
            raise ValueError(f"image of {tuple(a.shape[-2:])} px is too small to shave {shave} px")
        a = a[..., shave:-shave, shave:-shave]
        b = b[..., shave:-shave, shave:-shave]
    return a, b, single


def squared_error(sr: torch.Tensor, hr: torch.Tensor, shave: int = 0, y_channel: bool = False
                  ) -> Tuple[torch.Tensor, int]:
    """Per image, the float64 sum of squared errors (N,) (as psnr scores them) and the values it sums."""
    a, b, _ = _prepare(sr, hr, shave, y_channel, False)
    d = (a - b).flatten(1)
    return d.pow(2).sum(dim=1), d.shape[1]


def psnr(sr: torch.Tensor, hr: torch.Tensor, shave: int = 0, y_channel: bool = False,
         round_u8: bool = False) -> torch.Tensor:
    """PSNR in dB (peak 1, i.e. 255 on the 8-bit scale) of sr against hr, per image; inf when equal."""
    a, b, single = _prepare(sr, hr, shave, y_channel, round_u8)
    mse = (a - b).pow(2).flatten(1).mean(dim=1)
    out = -10 * torch.log10(mse)
    return out[0] if single else out


def gaussian_1d(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """1-D factor of MATLAB fspecial('gaussian', size, sigma): its outer product with itself is that window."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r * r) / (2 * sigma * sigma))
    return g / g.sum()


def ssim(sr: torch.Tensor, hr: torch.Tensor, shave: int = 0, round_u8: bool = False) -> torch.Tensor:
    """SSIM on Y as MATLAB ssim_index (Wang 2004): 11x11 Gaussian sigma 1.5, K1 .01, K2 .03, L 255, 'valid' filtering."""
    a, b, single = _prepare(sr, hr, shave, True, round_u8)
    if a.shape[1] != 1:
        raise ValueError(f"SSIM takes RGB or grayscale images, got {a.shape[1]} channels")
    a, b = a * 255, b * 255
    if min(a.shape[-2:]) < 11:
        raise ValueError(f"image of {tuple(a.shape[-2:])} px is smaller than the 11x11 SSIM window")
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    g = gaussian_1d().to(a.device)
    col, row = g.view(1, 1, 11, 1), g.view(1, 1, 1, 11)

    def filt(x: torch.Tensor) -> torch.Tensor:
        # the Gaussian is separable: two 1-D passes; no padding, like filter2(..., 'valid')
        return F.conv2d(F.conv2d(x, col), row)

    mu1, mu2 = filt(a), filt(b)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s1 = filt(a * a) - mu1_sq
    s2 = filt(b * b) - mu2_sq
    s12 = filt(a * b) - mu12
    ssim_map = ((2 * mu12 + c1) * (2 * s12 + c2)) / ((mu1_sq + mu2_sq + c1) * (s1 + s2 + c2))
    out = ssim_map.flatten(1).mean(dim=1)
    return out[0] if single else out


def max_scaled_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max(1, |want|): absolute error for values up to 1, relative above."""
    # relative above 1 so that large outputs (unbounded features) are judged at their own precision
    return ((got - want).abs() / want.abs().clamp(min=1)).max().item()
