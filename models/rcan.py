"""RCAN encoder (Zhang et al. 2018) as LIIF registers it, with the released checkpoints' layer names."""
import torch
from torch import nn

from models.blocks import ResidualTrunk, conv
from models.registry import register


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
        self.body = nn.Sequential(conv(n_feats, n_feats), nn.ReLU(True), conv(n_feats, n_feats),
                                  ChannelAttention(n_feats, reduction))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class ResidualGroup(nn.Module):
    """n_resblocks RCABs and a closing conv, plus the group's input."""

    def __init__(self, n_feats: int, reduction: int, n_resblocks: int):
        super().__init__()
        blocks = [RCAB(n_feats, reduction) for _ in range(n_resblocks)]
        self.body = nn.Sequential(*blocks, conv(n_feats, n_feats))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class RCAN(ResidualTrunk):
    """RCAN: residual groups in the trunk; with no_upsampling the n_feats feature map at input resolution."""

    def __init__(self, n_resgroups: int, n_resblocks: int, n_feats: int, reduction: int, scale: int,
                 no_upsampling: bool, rgb_range: float, n_colors: int = 3):
        def groups():
            return [ResidualGroup(n_feats, reduction, n_resblocks) for _ in range(n_resgroups)]
        # the authors freeze the mean shifts as modules only: their parameters count as trainable
        super().__init__(groups, n_feats, scale, no_upsampling, rgb_range, mean_shift_trainable=True,
                         n_colors=n_colors)


@register('rcan')
def rcan(n_resgroups: int = 10, n_resblocks: int = 20, n_feats: int = 64, reduction: int = 16, scale: int = 2,
         no_upsampling: bool = False, rgb_range: float = 1) -> RCAN:
    """RCAN: 10 residual groups of 20 channel-attention blocks, 64 features."""
    return RCAN(n_resgroups, n_resblocks, n_feats, reduction, scale, no_upsampling, rgb_range)
