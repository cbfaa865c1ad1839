"""Nearest latent-code lookup shared by LIIF and MetaSR."""
from typing import Tuple

import torch
import torch.nn.functional as F


def sample_nearest(feat: torch.Tensor, coord: torch.Tensor) -> torch.Tensor:
    """Values (N, Q, C) of the feature pixels of feat (N, C, h, w) that contain coord (N, Q, 2)."""
    return F.grid_sample(feat, coord.flip(-1).unsqueeze(1), mode='nearest',
                         align_corners=False)[:, :, 0, :].permute(0, 2, 1)


def unfold3x3(feat: torch.Tensor) -> torch.Tensor:
    """Each C-vector replaced by its zero-padded 3x3 neighbourhood, channel-major: (N, 9C, h, w)."""
    n, c, h, w = feat.shape
    return F.unfold(feat, 3, padding=1).view(n, c * 9, h, w)


def nearest_index(coord: torch.Tensor, h: int, w: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(row, col) int64 of the feature pixel of an h x w map that sample_nearest picks at coord (..., 2).

    grid_sample itself makes the choice, on maps of row and column numbers (broadcast views, no
    h x w copy), so the rounding is the reference's on every device; -1 marks a coordinate outside
    the map (where sample_nearest reads zeros).
    """
    shape = coord.shape[:-1]
    grid = coord.reshape(1, 1, -1, 2).flip(-1).float()
    # numbers are stored +1 so that grid_sample's zero padding reads back as -1 (outside)
    rows = torch.arange(1, h + 1, dtype=torch.float32, device=coord.device).view(1, 1, h, 1).expand(1, 1, h, w)
    cols = torch.arange(1, w + 1, dtype=torch.float32, device=coord.device).view(1, 1, 1, w).expand(1, 1, h, w)
    r = F.grid_sample(rows, grid, mode='nearest', align_corners=False)
    c = F.grid_sample(cols, grid, mode='nearest', align_corners=False)
    row, col = r.view(shape).long() - 1, c.view(shape).long() - 1
    outside = (row < 0) | (col < 0)
    return row.masked_fill_(outside, -1), col.masked_fill_(outside, -1)
