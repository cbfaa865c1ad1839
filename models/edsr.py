"""EDSR and EDSR-baseline encoders (Lim et al. 2017), with the released checkpoints' layer names."""
import math

import torch
from torch import nn

from models.registry import register


def _conv(in_ch: int, out_ch: int, kernel_size: int = 3) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2)


class MeanShift(nn.Conv2d):
    """Fixed 1x1 colour shift; kept only so released state dicts load (LIIF's EDSR never applies it)."""

    def __init__(self, rgb_range: float, rgb_mean=(0.4488, 0.4371, 0.4040), sign: int = -1):
        super().__init__(3, 3, kernel_size=1)
        self.weight.data = torch.eye(3).view(3, 3, 1, 1)
        self.bias.data = sign * rgb_range * torch.tensor(rgb_mean)
        for p in self.parameters():
            p.requires_grad = False


class ResBlock(nn.Module):
    """conv-ReLU-conv, scaled by res_scale, plus identity."""

    def __init__(self, n_feats: int, res_scale: float):
        super().__init__()
        self.body = nn.Sequential(_conv(n_feats, n_feats), nn.ReLU(True), _conv(n_feats, n_feats))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.body(x).mul(self.res_scale)
        res += x
        return res


class Upsampler(nn.Sequential):
    """Sub-pixel upsampling by 2^k or 3."""

    def __init__(self, scale: int, n_feats: int):
        m = []
        if scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                m += [_conv(n_feats, 4 * n_feats), nn.PixelShuffle(2)]
        elif scale == 3:
            m += [_conv(n_feats, 9 * n_feats), nn.PixelShuffle(3)]
        else:
            raise ValueError(f"EDSR upsampling supports scales 2^n and 3, not {scale}")
        super().__init__(*m)


class EDSR(nn.Module):
    """EDSR body; with no_upsampling it returns the n_feats feature map at input resolution."""

    def __init__(self, n_resblocks: int, n_feats: int, res_scale: float, scale: int,
                 no_upsampling: bool, rgb_range: float, n_colors: int = 3):
        super().__init__()
        self.no_upsampling = no_upsampling
        self.sub_mean = MeanShift(rgb_range)
        self.add_mean = MeanShift(rgb_range, sign=1)
        self.head = nn.Sequential(_conv(n_colors, n_feats))
        body = [ResBlock(n_feats, res_scale) for _ in range(n_resblocks)]
        body.append(_conv(n_feats, n_feats))
        self.body = nn.Sequential(*body)
        if no_upsampling:
            self.out_dim = n_feats
        else:
            self.out_dim = n_colors
            self.tail = nn.Sequential(Upsampler(scale, n_feats), _conv(n_feats, n_colors))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x)
        res = self.body(x)
        res += x
        return res if self.no_upsampling else self.tail(res)


@register('edsr-baseline')
def edsr_baseline(n_resblocks: int = 16, n_feats: int = 64, res_scale: float = 1, scale: int = 2,
                  no_upsampling: bool = False, rgb_range: float = 1) -> EDSR:
    """EDSR-baseline: 16 blocks, 64 features."""
    return EDSR(n_resblocks, n_feats, res_scale, scale, no_upsampling, rgb_range)


@register('edsr')
def edsr(n_resblocks: int = 32, n_feats: int = 256, res_scale: float = 0.1, scale: int = 2,
         no_upsampling: bool = False, rgb_range: float = 1) -> EDSR:
    """EDSR: 32 blocks, 256 features, residual scaling 0.1."""
    return EDSR(n_resblocks, n_feats, res_scale, scale, no_upsampling, rgb_range)
