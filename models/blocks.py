"""What EDSR and RCAN share: 'same' convolutions, unused mean shifts, the upsampler, the residual trunk."""
import math
from typing import Callable, Sequence

import torch
from torch import nn

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


def conv(in_ch: int, out_ch: int, kernel_size: int = 3) -> nn.Conv2d:
    """Zero-padded convolution that keeps the spatial size."""
    return nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2)


class MeanShift(nn.Conv2d):
    """Fixed 1x1 colour shift by the DIV2K mean; LIIF's encoders never apply it, released state dicts hold it.

    `trainable` says whether its parameters count as trainable: EDSR freezes them, the authors'
    RCAN flags only the module, so its parameter count (and an optimiser over model.parameters())
    includes these 24 numbers.
    """

    def __init__(self, rgb_range: float, sign: int, trainable: bool):
        super().__init__(3, 3, kernel_size=1)
        self.weight.data = torch.eye(3).view(3, 3, 1, 1)
        self.bias.data = sign * rgb_range * torch.tensor(DIV2K_RGB_MEAN)
        for p in self.parameters():
            p.requires_grad = trainable


class Upsampler(nn.Sequential):
    """Sub-pixel upsampling by 2^k (k conv + PixelShuffle(2) stages, none for scale 1) or 3."""

    def __init__(self, scale: int, n_feats: int):
        m = []
        if scale >= 1 and scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                m += [conv(n_feats, 4 * n_feats), nn.PixelShuffle(2)]
        elif scale == 3:
            m += [conv(n_feats, 9 * n_feats), nn.PixelShuffle(3)]
        else:
            raise ValueError(f"upsampling supports scales 2^n and 3, not {scale}")
        super().__init__(*m)


class ResidualTrunk(nn.Module):
    """head conv, body (blocks + conv) with a skip over it, then an upsampling tail unless no_upsampling.

    With no_upsampling it returns the n_feats feature map at input resolution (out_dim = n_feats),
    else the n_colors image at `scale` times the size. make_blocks is called after the head is built,
    so seeded initial weights come out as they did before this class existed (and as the authors' do).
    """

    def __init__(self, make_blocks: Callable[[], Sequence[nn.Module]], n_feats: int, scale: int,
                 no_upsampling: bool, rgb_range: float, mean_shift_trainable: bool, n_colors: int = 3):
        super().__init__()
        self.no_upsampling = no_upsampling
        self.sub_mean = MeanShift(rgb_range, -1, mean_shift_trainable)
        self.add_mean = MeanShift(rgb_range, 1, mean_shift_trainable)
        self.head = nn.Sequential(conv(n_colors, n_feats))
        self.body = nn.Sequential(*make_blocks(), conv(n_feats, n_feats))
        if no_upsampling:
            self.out_dim = n_feats
        else:
            self.out_dim = n_colors
            self.tail = nn.Sequential(Upsampler(scale, n_feats), conv(n_feats, n_colors))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x)
        res = self.body(x)
        res += x
        return res if self.no_upsampling else self.tail(res)
