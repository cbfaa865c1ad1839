"""Nearest latent-code lookup shared by LIIF and MetaSR."""
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
