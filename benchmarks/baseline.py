"""The honest baseline of the speed benchmarks: LIIF's query computed the way the authors' code does it.

Written from LIIF.md ('The query function', and the evaluation's 30000-query chunks), independent
of models/fast_query.py and of models/liif.py's reference path, with the model's own weights:
per shift a grid_sample (nearest) of the unfolded features and of the code centres, the
concatenation [code, rel_coord, rel_cell], the whole MLP per row, four separate shift passes,
the area-weighted sum with diagonally opposite areas. Every ratio the benchmarks print is against it.
"""
import torch
import torch.nn.functional as F

SHIFT_EPS = 1e-6
AREA_EPS = 1e-9
SHIFTS = ((-1, -1), (-1, 1), (1, -1), (1, 1))  # (row, col) directions, in the authors' order


def _opposite(areas: list) -> list:
    """Each corner's weight is the area towards the diagonally opposite corner (k <-> 3 - k)."""
    return areas[::-1]


def _pixel_centres(h: int, w: int, device: torch.device) -> torch.Tensor:
    """Pixel centres of an h x w grid, (h, w, 2), coordinate 0 = row, in [-1, 1]."""
    axes = []
    for n in (h, w):
        r = 1 / n  # half a pixel
        axes.append(-1 + r + 2 * r * torch.arange(n, device=device, dtype=torch.float32))
    return torch.stack(torch.meshgrid(*axes, indexing='ij'), dim=-1)


def _nearest(grid_src: torch.Tensor, coord: torch.Tensor) -> torch.Tensor:
    """grid_sample(nearest, align_corners=False) of (N, C, h, w) at coord (N, Q, 2) [row, col]: (N, Q, C)."""
    grid = coord.flip(-1).unsqueeze(1)  # grid_sample takes (x, y) = (col, row)
    return F.grid_sample(grid_src, grid, mode='nearest', align_corners=False)[:, :, 0, :].permute(0, 2, 1)


def authors_style_query(model: torch.nn.Module, feat: torch.Tensor, coord: torch.Tensor,
                        cell: torch.Tensor) -> torch.Tensor:
    """LIIF's query of (N, Q, 2) coords on encoder output feat (N, C, h, w), four passes as the authors do: (N, Q, 3)."""
    if model.feat_unfold:
        n, c, h, w = feat.shape
        feat = F.unfold(feat, 3, padding=1).view(n, c * 9, h, w)
    n, _, h, w = feat.shape
    if model.local_ensemble:
        shifts, eps = SHIFTS, SHIFT_EPS
    else:
        shifts, eps = [(0, 0)], 0.0
    rx, ry = 1 / h, 1 / w
    centres = _pixel_centres(h, w, feat.device).permute(2, 0, 1).unsqueeze(0).expand(n, 2, h, w)
    preds, areas = [], []
    for vx, vy in shifts:
        shifted = coord.clone()
        shifted[:, :, 0] += vx * rx + eps
        shifted[:, :, 1] += vy * ry + eps
        shifted.clamp_(-1 + 1e-6, 1 - 1e-6)
        code = _nearest(feat, shifted)
        rel = coord - _nearest(centres, shifted)
        rel[:, :, 0] *= h
        rel[:, :, 1] *= w
        parts = [code, rel]
        if model.cell_decode:
            rel_cell = cell.clone()
            rel_cell[:, :, 0] *= h
            rel_cell[:, :, 1] *= w
            parts.append(rel_cell)
        inp = torch.cat(parts, dim=-1)
        q = coord.shape[1]
        preds.append(model.imnet(inp.view(n * q, -1)).view(n, q, -1))
        areas.append((rel[:, :, 0] * rel[:, :, 1]).abs() + AREA_EPS)
    total = torch.stack(areas).sum(dim=0)
    if model.local_ensemble:
        areas = _opposite(areas)
    out = 0
    for pred, area in zip(preds, areas):
        out = out + pred * (area / total).unsqueeze(-1)
    return out


@torch.no_grad()
def authors_style_batched_predict(model: torch.nn.Module, inp: torch.Tensor, coord: torch.Tensor,
                                  cell: torch.Tensor, bsize: int = 30000) -> torch.Tensor:
    """Encode once, then authors_style_query over chunks of `bsize` queries, concatenated: (N, Q, 3)."""
    feat = model.encoder(inp)
    outs = [authors_style_query(model, feat, coord[:, i:i + bsize], cell[:, i:i + bsize])
            for i in range(0, coord.shape[1], bsize)]
    return torch.cat(outs, dim=1)
