"""RCAN encoder (Zhang et al. 2018) as LIIF registers it, with the released checkpoints' layer names."""
import math

import torch
from torch import nn

from models.registry import register

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


def _conv(in_ch: int, out_ch: int, kernel_size: int = 3) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2)


class MeanShift(nn.Conv2d):
    """Fixed 1x1 colour shift, never applied; unlike EDSR's its parameters stay trainable.

    The authors flag the module, not its parameters, as frozen: their parameter count (and an
    optimiser built from model.parameters()) includes these 24 numbers, so ours must too.
    """

    def __init__(self, rgb_range: float, sign: int):
        super().__init__(3, 3, kernel_size=1)
        self.weight.data = torch.eye(3).view(3, 3, 1, 1)
        self.bias.data = sign * rgb_range * torch.tensor(DIV2K_RGB_MEAN)


class ChannelAttention(nn.Module):
    """Scales each channel by a sigmoid gate computed from its global average (squeeze-and-excite)."""

    def __init__(self, n_feats: int, reduction: int):
        super().__init__()
        # a module, not a tensor mean: models.tiling must see the global pool to refuse tiling
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(nn.Conv2d(n_feats, n_feats // reduction, 1), nn.ReLU(inplace=True),
                                     nn.Conv2d(n_feats // reduction, n_feats, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(self.avg_pool(x))


class RCAB(nn.Module):
    """Residual channel-attention block: conv-ReLU-conv, channel attention, plus identity (no scaling)."""

    def __init__(self, n_feats: int, reduction: int):
        super().__init__()
        self.body = nn.Sequential(_conv(n_feats, n_feats), nn.ReLU(True), _conv(n_feats, n_feats),
                                  ChannelAttention(n_feats, reduction))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class ResidualGroup(nn.Module):
    """n_resblocks RCABs and a closing conv, plus the group's input."""

    def __init__(self, n_feats: int, reduction: int, n_resblocks: int):
        super().__init__()
        blocks = [RCAB(n_feats, reduction) for _ in range(n_resblocks)]
        self.body = nn.Sequential(*blocks, _conv(n_feats, n_feats))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class Upsampler(nn.Sequential):
    """Sub-pixel upsampling by 2^k (k conv + PixelShuffle(2) stages, none for scale 1) or 3."""

    def __init__(self, scale: int, n_feats: int):
        m = []
        if scale >= 1 and scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                m += [_conv(n_feats, 4 * n_feats), nn.PixelShuffle(2)]
        elif scale == 3:
            m += [_conv(n_feats, 9 * n_feats), nn.PixelShuffle(3)]
        else:
            raise NotImplementedError(f"RCAN upsampling supports scales 2^n and 3, not {scale}")
        super().__init__(*m)


class RCAN(nn.Module):
    """RCAN; with no_upsampling it returns the n_feats feature map at input resolution."""

    def __init__(self, n_resgroups: int, n_resblocks: int, n_feats: int, reduction: int, scale: int,
                 no_upsampling: bool, rgb_range: float, n_colors: int = 3):
        super().__init__()
        self.no_upsampling = no_upsampling
        self.sub_mean = MeanShift(rgb_range, sign=-1)
        self.add_mean = MeanShift(rgb_range, sign=1)
        self.head = nn.Sequential(_conv(n_colors, n_feats))
        groups = [ResidualGroup(n_feats, reduction, n_resblocks) for _ in range(n_resgroups)]
        self.body = nn.Sequential(*groups, _conv(n_feats, n_feats))
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


@register('rcan')
def rcan(n_resgroups: int = 10, n_resblocks: int = 20, n_feats: int = 64, reduction: int = 16, scale: int = 2,
         no_upsampling: bool = False, rgb_range: float = 1) -> RCAN:
    """RCAN: 10 residual groups of 20 channel-attention blocks, 64 features."""
    return RCAN(n_resgroups, n_resblocks, n_feats, reduction, scale, no_upsampling, rgb_range)
