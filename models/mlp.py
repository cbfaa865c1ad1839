"""The MLP decoder ('imnet') of LIIF.md: Linear layers with ReLU between them."""
from typing import List, Sequence

import torch
from torch import nn

from models.registry import register


@register('mlp')
class MLP(nn.Module):
    """Linear layers in_dim -> *hidden_list -> out_dim, a ReLU between consecutive ones.

    The modules sit in one nn.Sequential `layers` (Linear i at index 2 i), the state-dict layout of
    the released checkpoints.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_list: Sequence[int]):
        super().__init__()
        widths = [in_dim, *hidden_list, out_dim]
        modules: List[nn.Module] = []
        for width_in, width_out in zip(widths[:-1], widths[1:]):
            if modules:
                modules.append(nn.ReLU())
            modules.append(nn.Linear(width_in, width_out))
        self.layers = nn.Sequential(*modules)
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in_dim) -> (..., out_dim)."""
        # as one 2-D batch: Linear on more dims may round its bias add differently
        return self.layers(x.reshape(-1, x.shape[-1])).view(*x.shape[:-1], -1)
