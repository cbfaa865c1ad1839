"""RDN encoder (Zhang et al. 2018), with the released checkpoints' layer names."""
import torch
from torch import nn

from models.registry import register

# RDNconfig -> (D blocks, C conv layers per block, G growth rate)
RDN_CONFIGS = {'A': (20, 6, 32), 'B': (16, 8, 64)}


class RDBConv(nn.Module):
    """One densely connected layer: conv-ReLU, output concatenated to its input."""

    def __init__(self, in_ch: int, growth: int, k: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_ch, growth, k, padding=(k - 1) // 2), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((x, self.conv(x)), 1)


class RDB(nn.Module):
    """Residual dense block: C dense layers, 1x1 local fusion, local residual."""

    def __init__(self, g0: int, growth: int, n_layers: int, k: int):
        super().__init__()
        self.convs = nn.Sequential(*[RDBConv(g0 + c * growth, growth, k) for c in range(n_layers)])
        self.LFF = nn.Conv2d(g0 + n_layers * growth, g0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LFF(self.convs(x)) + x


class RDN(nn.Module):
    """RDN; with no_upsampling it returns the G0-channel feature map at input resolution."""

    def __init__(self, G0: int, RDNkSize: int, RDNconfig: str, scale: int, no_upsampling: bool,
                 n_colors: int = 3):
        super().__init__()
        if RDNconfig not in RDN_CONFIGS:
            raise ValueError(f"RDNconfig must be one of {sorted(RDN_CONFIGS)}, not {RDNconfig!r}")
        k = RDNkSize
        self.D, C, G = RDN_CONFIGS[RDNconfig]
        self.no_upsampling = no_upsampling
        self.SFENet1 = nn.Conv2d(n_colors, G0, k, padding=(k - 1) // 2)
        self.SFENet2 = nn.Conv2d(G0, G0, k, padding=(k - 1) // 2)
        self.RDBs = nn.ModuleList([RDB(G0, G, C, k) for _ in range(self.D)])
        self.GFF = nn.Sequential(nn.Conv2d(self.D * G0, G0, 1),
                                 nn.Conv2d(G0, G0, k, padding=(k - 1) // 2))
        if no_upsampling:
            self.out_dim = G0
            return
        self.out_dim = n_colors
        if scale in (2, 3):
            up = [nn.Conv2d(G0, G * scale * scale, k, padding=(k - 1) // 2), nn.PixelShuffle(scale)]
        elif scale == 4:
            up = [nn.Conv2d(G0, G * 4, k, padding=(k - 1) // 2), nn.PixelShuffle(2),
                  nn.Conv2d(G, G * 4, k, padding=(k - 1) // 2), nn.PixelShuffle(2)]
        else:
            raise ValueError(f"RDN upsampling supports scales 2, 3, 4, not {scale}")
        self.UPNet = nn.Sequential(*up, nn.Conv2d(G, n_colors, k, padding=(k - 1) // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f1 = self.SFENet1(x)
        x = self.SFENet2(f1)
        outs = []
        for block in self.RDBs:
            x = block(x)
            outs.append(x)
        x = self.GFF(torch.cat(outs, 1))
        x += f1
        return x if self.no_upsampling else self.UPNet(x)


@register('rdn')
def rdn(G0: int = 64, RDNkSize: int = 3, RDNconfig: str = 'B', scale: int = 2,
        no_upsampling: bool = False) -> RDN:
    """RDN, configuration B by default (16 blocks of 8 layers, growth 64)."""
    return RDN(G0, RDNkSize, RDNconfig, scale, no_upsampling)
