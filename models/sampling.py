"""Latent-code lookup and the local ensemble's corners, shared by LIIF and MetaSR and by both query paths."""
from typing import Tuple

import torch
import torch.nn.functional as F

# every chosen position is kept this far inside [-1, 1], so that the nearest code always exists
BORDER_EPS = 1e-6


def sample_nearest(feat: torch.Tensor, coord: torch.Tensor) -> torch.Tensor:
    """Values (N, ..., C) of the feature pixels of feat (N, C, h, w) that contain coord (N, ..., 2).

    grid_sample's nearest mode decides (LIIF.md: the choice must round exactly as it does); a
    coordinate outside the map reads zeros.
    """
    n, c = feat.shape[:2]
    grid = coord.flip(-1).reshape(n, 1, -1, 2)
    out = F.grid_sample(feat, grid, mode='nearest', align_corners=False)
    return out[:, :, 0].permute(0, 2, 1).reshape(*coord.shape[:-1], c)


def sample_corners(feat: torch.Tensor, coord: torch.Tensor) -> torch.Tensor:
    """sample_nearest of feat (N, C, h, w) at the corners' coord (P, N, Q, 2): (P, N, Q, C)."""
    return sample_nearest(feat, coord.transpose(0, 1)).transpose(0, 1)


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


def corner_shifts(h: int, w: int, local_ensemble: bool, like: torch.Tensor) -> torch.Tensor:
    """(P, 2) offsets added to a query to choose its P codes on an h x w map (LIIF.md, step 3).

    Local ensemble: half a feature pixel towards each of the four corners (-,-), (-,+), (+,-), (+,+)
    plus 1e-6, so a query on a code border picks a side deterministically; else one unshifted pass.
    Float32 like the coordinates, so that `coord + shift` rounds as the authors' in-place add does.
    """
    if not local_ensemble:
        return like.new_zeros(1, 2)
    return like.new_tensor([[dr / h + BORDER_EPS, dc / w + BORDER_EPS] for dr in (-1, 1) for dc in (-1, 1)])


def corner_weights(rel: torch.Tensor, local_ensemble: bool) -> torch.Tensor:
    """Blend weights (P, ...) of the P predictions whose offsets to their codes are rel (P, ..., 2) (LIIF.md, step 4).

    Each prediction is weighted by the area of the rectangle between the query and the diagonally
    opposite code (corner k and P - 1 - k), so the nearest code weighs most and the blend is continuous.
    """
    areas = (rel[..., 0] * rel[..., 1]).abs() + 1e-9
    total = areas.sum(dim=0)
    return (areas.flip(0) if local_ensemble else areas) / total
