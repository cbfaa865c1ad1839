"""The MLP decoder ('imnet'): Linear layers with ReLU between them."""
from typing import Sequence

import torch
from torch import nn

from models.registry import register


@register('mlp')
class MLP(nn.Module):
    """in_dim -> hidden_list... -> out_dim, ReLU after every hidden layer, none after the last."""

    def __init__(self, in_dim: int, out_dim: int, hidden_list: Sequence[int]):
        super().__init__()
        layers = []
        last = in_dim
        for hidden in hidden_list:
            layers += [nn.Linear(last, hidden), nn.ReLU()]
            last = hidden
        layers.append(nn.Linear(last, out_dim))
        self.layers = nn.Sequential(*layers)
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape[:-1]
        x = self.layers(x.reshape(-1, x.shape[-1]))
        return x.view(*shape, -1)
