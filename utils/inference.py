"""Whole-image inference: encode once, query the output grid in chunks."""
from typing import Sequence

import torch

from utils.coord import coord_seq, make_cell, make_coord


@torch.no_grad()
def batched_predict(model: torch.nn.Module, inp: torch.Tensor, coord: torch.Tensor,
                    cell: torch.Tensor, bsize: int = 30000) -> torch.Tensor:
    """model(inp, coord, cell) with the queries split into chunks of `bsize`: (N, Q, 3)."""
    model.gen_feat(inp)
    preds = [model.query_rgb(coord[:, i:i + bsize], cell[:, i:i + bsize])
             for i in range(0, coord.shape[1], bsize)]
    return torch.cat(preds, dim=1)


@torch.no_grad()
def upscale(model: torch.nn.Module, inp: torch.Tensor, size: Sequence[int],
            bsize: int = 30000) -> torch.Tensor:
    """Query the full H x W pixel grid of inp (N, 3, h, w), normalised space in and out: (N, 3, H, W)."""
    h, w = size
    coord = make_coord((h, w), device=inp.device)
    cell = make_cell(coord, (h, w))
    n = inp.shape[0]
    pred = batched_predict(model, inp, coord.expand(n, -1, -1), cell.expand(n, -1, -1), bsize)
    return pred.view(n, h, w, -1).permute(0, 3, 1, 2)


@torch.no_grad()
def iter_upscale_bands(model: torch.nn.Module, inp: torch.Tensor, size: Sequence[int],
                       bsize: int = 30000):
    """Yield (row0, band (N, 3, rows, W)) covering the H x W output top to bottom, normalised space.

    Only one band is alive at a time, so callers can write huge outputs into a uint8 buffer.
    """
    h, w = size
    n = inp.shape[0]
    rows = max(1, bsize // w)
    model.gen_feat(inp)
    row_c, col_c = coord_seq(h, device=inp.device), coord_seq(w, device=inp.device)
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        coord = torch.stack(torch.meshgrid(row_c[r0:r1], col_c, indexing='ij'), dim=-1).view(-1, 2)
        cell = make_cell(coord, (h, w))
        pred = model.query_rgb(coord.expand(n, -1, -1), cell.expand(n, -1, -1))
        yield r0, pred.view(n, r1 - r0, w, -1).permute(0, 3, 1, 2)
