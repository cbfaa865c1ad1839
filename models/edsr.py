"""EDSR and EDSR-baseline encoders (Lim et al. 2017), with the released checkpoints' layer names."""
import torch
from torch import nn

from models.blocks import ResidualTrunk, conv
from models.registry import register


class ResBlock(nn.Module):
    """conv-ReLU-conv, scaled by res_scale, plus identity."""

    def __init__(self, n_feats: int, res_scale: float):
        super().__init__()
        self.body = nn.Sequential(conv(n_feats, n_feats), nn.ReLU(True), conv(n_feats, n_feats))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.body(x).mul(self.res_scale)
        res += x
        return res


class EDSR(ResidualTrunk):
    """EDSR: residual blocks in the trunk; with no_upsampling the n_feats feature map at input resolution."""

    def __init__(self, n_resblocks: int, n_feats: int, res_scale: float, scale: int,
                 no_upsampling: bool, rgb_range: float, n_colors: int = 3):
        def blocks():
            return [ResBlock(n_feats, res_scale) for _ in range(n_resblocks)]
        super().__init__(blocks, n_feats, scale, no_upsampling, rgb_range, mean_shift_trainable=False,
                         n_colors=n_colors)


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
