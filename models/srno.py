"""SRNO (`sronet`, Wei & Zhang, CVPR 2023): corner features lifted to a field, two Galerkin attention layers.

Not a per-query model: each attention layer sums k^T v over EVERY query position of a call
(SRNO.md, "Exact evaluation at any size"). The computation is split into pointwise pieces plus
the per-image, per-head sums S, so that the one-call forward and the band-wise multi-pass
evaluation (query_grid_bands) run the same code.
"""
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from models.implicit import ImplicitSR
from models.registry import make, register
from models.sampling import BORDER_EPS, corner_shifts, corner_weights, sample_nearest
from utils.coord import make_coord
from utils.errors import UserError
from utils.testtime import CELL_MAX_SCALE, TestTime

# fc1's width is fixed in the authors' model, whatever `width` is
HEAD_HIDDEN = 256


class HeadNorm(nn.Module):
    """The authors' layer norm over each head's d channels: unbiased std, eps added to the std."""

    def __init__(self, heads: int, dim: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(heads, 1, dim))
        self.bias = nn.Parameter(torch.zeros(heads, 1, dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, heads, P, d) normalised over d, with one (gamma, beta) d-vector per head."""
        mean = x.mean(-1, keepdim=True)
        std = x.std(-1, keepdim=True)
        return self.weight * (x - mean) / (std + self.eps) + self.bias


@dataclass
class Projections:
    """A band's per-head q and normalised k, v (N, heads, P, d) in one attention layer."""
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor

    def kv_sum(self) -> torch.Tensor:
        """k^T v summed over this band's positions: (N, heads, d, d)."""
        return self.k.transpose(-2, -1) @ self.v


class GalerkinAttention(nn.Module):
    """The authors' `simple_attn`: o = q (k^T v / P) per head; returns o_proj2(GELU(o_proj1(o + x))) + x."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise UserError(f"sronet: width {width} is not a multiple of blocks (heads) {heads}")
        self.heads, self.head_dim = heads, width // heads
        self.qkv_proj = nn.Conv2d(width, 3 * width, 1)
        self.o_proj1 = nn.Conv2d(width, width, 1)
        self.o_proj2 = nn.Conv2d(width, width, 1)
        self.kln = HeadNorm(heads, self.head_dim)
        self.vln = HeadNorm(heads, self.head_dim)

    def project(self, x: torch.Tensor) -> Projections:
        """q, k, v of x (N, C, H, W): the 3C channels are grouped per head (q, k, v of a head contiguous)."""
        n, _, h, w = x.shape
        qkv = self.qkv_proj(x).permute(0, 2, 3, 1).reshape(n, h * w, self.heads, 3 * self.head_dim)
        q, k, v = qkv.permute(0, 2, 1, 3).chunk(3, dim=-1)
        return Projections(q, self.kln(k), self.vln(v))

    def apply_sum(self, x: torch.Tensor, q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """The block's output at x (N, C, H, W) with queries q of x and the divided sum s = S / P (N, heads, d, d)."""
        n, c, h, w = x.shape
        o = (q @ s).permute(0, 2, 1, 3).reshape(n, h, w, c).permute(0, 3, 1, 2)
        return self.o_proj2(F.gelu(self.o_proj1(o + x))) + x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block over all H * W positions of x (N, C, H, W)."""
        p = self.project(x)
        return self.apply_sum(x, p.q, p.kv_sum() / (x.shape[-2] * x.shape[-1]))


@dataclass
class SRNOState:
    """What a query needs from one image: the encoder's features and the input (for the bilinear skip)."""
    feat: torch.Tensor
    inp: torch.Tensor


@register('sronet')
class SRNO(ImplicitSR):
    """Super-Resolution Neural Operator (SRNO.md): grid layout, coord (N, H, W, 2) and one cell (N, 2) per image.

    `blocks` is the number of attention heads (there are always two attention layers).
    """

    query_layout = 'grid'
    pointwise = False

    def __init__(self, encoder_spec: Dict[str, Any], width: int = 256, blocks: int = 16):
        super().__init__()
        self.width = width
        self.encoder = make(encoder_spec)
        # 4 corner offsets, 4 area-weighted corner features and the cell: 266 for the authors' 64 features
        lift_in = (self.encoder.out_dim + 2) * 4 + 2
        self.conv00 = nn.Conv2d(lift_in, width, 1)
        self.conv0 = GalerkinAttention(width, blocks)
        self.conv1 = GalerkinAttention(width, blocks)
        self.fc1 = nn.Conv2d(width, HEAD_HIDDEN, 1)
        self.fc2 = nn.Conv2d(HEAD_HIDDEN, 3, 1)
        self.inp: Optional[torch.Tensor] = None

    # -- pointwise pieces (SRNO.md "Forward", steps 1-6 and 8-9)

    def lift(self, state: SRNOState, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """conv00 of the 266-channel per-query vectors at coord (N, H, W, 2), cell (N, 2): (N, width, H, W)."""
        feat = state.feat
        n, _, h, w = feat.shape
        hw = coord.new_tensor([h, w])
        chosen = (coord + corner_shifts(h, w, True, coord).view(4, 1, 1, 1, 2)) \
            .clamp(-1 + BORDER_EPS, 1 - BORDER_EPS)
        centres = make_coord((h, w), flatten=False, device=feat.device).permute(2, 0, 1).expand(n, 2, h, w)
        rel = torch.stack([(coord - sample_nearest(centres, s)) * hw for s in chosen])  # (4, N, H, W, 2)
        weights = corner_weights(rel, True)  # area_{3-t} / total: (4, N, H, W)
        feats = [sample_nearest(feat, s) * wt.unsqueeze(-1) for s, wt in zip(chosen, weights)]
        rel_cell = (cell * hw).view(n, 1, 1, 2).expand(*coord.shape)
        vectors = torch.cat([*rel, *feats, rel_cell], dim=-1)  # (N, H, W, 266)
        return self.conv00(vectors.permute(0, 3, 1, 2))

    def emit(self, state: SRNOState, x: torch.Tensor, coord: torch.Tensor) -> torch.Tensor:
        """RGB (N, 3, H, W) from the last attention layer's output x plus the bilinear skip of the input at coord."""
        skip = F.grid_sample(state.inp, coord.flip(-1), mode='bilinear', padding_mode='border',
                             align_corners=False)
        return self.fc2(F.gelu(self.fc1(x))) + skip

    # -- the framework interface (models/implicit.py)

    def prepare(self, feat: torch.Tensor, inp: torch.Tensor) -> SRNOState:
        """The query state: the feature map (N, C, h, w) and the input it came from (for the bilinear skip)."""
        return SRNOState(feat, inp)

    def test_time(self) -> TestTime:
        """The authors' demo.py and test.py --mcell: cells enlarged by max(scale / 4, 1)."""
        return TestTime(cell_max_scale=CELL_MAX_SCALE)

    @property
    def query_bytes(self) -> int:
        """Rough peak bytes per query position inside one band's pass (inference.bounded sizes bands with it)."""
        # corner features and their weighted copies, the lifted vector twice (concatenated, conv input),
        # and ~16 width-sized activations of an attention block (qkv, its per-head copy, norms, o, MLP)
        return 4 * (8 * self.encoder.out_dim + 2 * self.conv00.in_channels + 16 * self.width)

    def query(self, state: SRNOState, coord: torch.Tensor, cell: Optional[torch.Tensor] = None,
              table_mb: float = 0.0) -> torch.Tensor:
        """One call over ALL queries coord (N, H, W, 2) with one cell (N, 2) per image: (N, 3, H, W).

        table_mb is unused (no per-code table); inference.bounded renders large grids through query_grid_bands.
        """
        _check_grid_call(coord, cell)
        x = self.conv1(self.conv0(self.lift(state, coord, cell)))
        return self.emit(state, x, coord)

    def query_grid_bands(self, state: SRNOState, rows: torch.Tensor, cols: torch.Tensor, cell: torch.Tensor,
                         band_rows: int) -> Iterator[Tuple[int, torch.Tensor]]:
        """The one-call output on the grid rows (H,) x cols (W,), yielded as (row0, (N, 3, r, W)) bands.

        Three passes over bands of at most band_rows rows (SRNO.md, "Exact evaluation at any
        size"): layer 0's sums k^T v, then layer 1's (layer 0 recomputed per band), then the
        outputs. Only one band and the (N, heads, d, d) sums are alive at a time; the sums are
        divided by the count of the WHOLE grid, as in one call.
        """
        if band_rows < 1:
            raise ValueError(f"band_rows must be positive, not {band_rows}")
        n, count = state.feat.shape[0], rows.numel() * cols.numel()
        if band_rows >= rows.numel():  # the whole grid fits in one band: one pass, the plain call
            yield 0, self.query(state, _grid(rows, cols, n), cell)
            return
        bands = [(r0, min(rows.numel(), r0 + band_rows)) for r0 in range(0, rows.numel(), band_rows)]
        sums: List[torch.Tensor] = []
        for layer in (self.conv0, self.conv1):
            total = None
            for r0, r1 in bands:
                x = self._attended(state, _grid(rows[r0:r1], cols, n), cell, sums)
                part = layer.project(x).kv_sum().float()  # float32 sums, also under autocast
                total = part if total is None else total + part
            sums.append(total / count)
        for r0, r1 in bands:
            coord = _grid(rows[r0:r1], cols, n)
            yield r0, self.emit(state, self._attended(state, coord, cell, sums), coord)

    def _attended(self, state: SRNOState, coord: torch.Tensor, cell: torch.Tensor,
                  sums: Sequence[torch.Tensor]) -> torch.Tensor:
        """The lifted queries at coord through the first len(sums) attention layers, whose divided sums are known."""
        x = self.lift(state, coord, cell)
        for layer, s in zip((self.conv0, self.conv1), sums):
            x = layer.apply_sum(x, layer.project(x).q, s)
        return x

    # -- the authors' API

    def gen_feat(self, inp: torch.Tensor) -> torch.Tensor:
        """Encode inp and keep it and its feature map for query_rgb (the authors' API)."""
        self.inp = inp
        self.feat = self.features(inp)
        return self.feat

    def query_rgb(self, coord: torch.Tensor, cell: Optional[torch.Tensor] = None) -> torch.Tensor:
        """query of the input of the last gen_feat (the authors' API): (N, 3, H, W)."""
        if self.feat is None or self.inp is None:
            raise RuntimeError("query_rgb needs a feature map: call gen_feat(inp) first")
        return self.query(SRNOState(self.feat, self.inp), coord, cell)

    def forward(self, inp: torch.Tensor, coord: torch.Tensor, cell: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The authors' forward: inp (N, 3, h, w), coord (N, H, W, 2), cell (N, 2) -> (N, 3, H, W); stores nothing."""
        return self.query(self.encode(inp), coord, cell)


def _grid(rows: torch.Tensor, cols: torch.Tensor, n: int) -> torch.Tensor:
    """The coordinates (N, r, W, 2) of the grid rows (r,) x cols (W,), for each of n images."""
    return torch.stack(torch.meshgrid(rows, cols, indexing='ij'), dim=-1).unsqueeze(0).expand(n, -1, -1, -1)


def _check_grid_call(coord: torch.Tensor, cell: Optional[torch.Tensor]) -> None:
    """SRNO's call layout, or a ValueError saying what was given instead."""
    if coord.dim() != 4 or coord.shape[-1] != 2:
        raise ValueError(f"sronet queries a grid: coord must be (N, H, W, 2), not {tuple(coord.shape)}")
    if cell is None or tuple(cell.shape) != (coord.shape[0], 2):
        shape = None if cell is None else tuple(cell.shape)
        raise ValueError(f"sronet takes one cell per image: cell must be ({coord.shape[0]}, 2), not {shape}")


def authors_row_chunked(model: SRNO, inp: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor,
                        bsize: int) -> torch.Tensor:
    """The authors' test.py batched_predict: each block of bsize grid rows as a SEPARATE call (N, 3, H, W).

    Each chunk's attention sums over its own rows only, so this is not the one-call output; it
    reproduces the authors' numbers for configs that set eval_bsize.
    """
    if bsize < 1:
        raise ValueError(f"bsize must be positive, not {bsize}")
    state = model.encode(inp)
    return torch.cat([model.query(state, coord[:, r:r + bsize], cell) for r in range(0, coord.shape[1], bsize)],
                     dim=2)
