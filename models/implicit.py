"""What every arbitrary-scale model shares: an encoder whose feature map is queried at any coordinate.

The interface inference/, evaluation/ and training/ use (every registered SR model implements it):
features(inp) -> the encoder's feature map (tileable); prepare(feat, inp) -> the query state built once
per image; encode(inp) = prepare(features(inp), inp); query(state, coord, cell) -> RGB at points for
pointwise models, query_grid_bands(...) for models whose outputs depend on the whole grid (SRNO);
test_time() -> the options the authors evaluate the model with; query_layout -> the layout of the
authors' forward ('points' or 'grid').
"""
from typing import Any, Iterator, Optional, Tuple

import torch
from torch import nn

from models import fast_query
from utils.testtime import TestTime


def encoder_input(inp: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """inp in the memory format the encoder should run in (channels_last: ~1.5-3x faster CPU convs)."""
    return inp.contiguous(memory_format=torch.channels_last) if channels_last and inp.dim() == 4 else inp


class ImplicitSR(nn.Module):
    """encode(inp) -> feat and query(feat, coord, cell) -> RGB, both pure; the authors' API on top.

    query keeps nothing between calls (any table or buffer it builds is dropped when it returns), so
    it always follows the current weights and is safe from several threads or DataParallel replicas.
    gen_feat / query_rgb are the authors' stateful pair (the feature map kept in self.feat);
    forward(inp, coord, cell) stores nothing.

    Runtime switches (plain attributes, not constructor args, so checkpoints are unaffected):
    query_mode 'fast' (default; models/fast_query.py) or 'reference' (the computation of LIIF.md);
    channels_last (default True) runs the encoder in channels_last memory format.
    """

    query_mode = 'fast'
    channels_last = True
    # the authors' forward: 'points' coord (N, Q, 2), cell (N, Q, 2) -> (N, Q, 3);
    # 'grid' coord (N, H, W, 2), cell (N, 2) -> (N, 3, H, W)
    query_layout = 'points'
    # each output depends only on its own query; False: query_grid_bands renders the whole grid
    pointwise = True

    def __init__(self):
        super().__init__()
        self.feat: Optional[torch.Tensor] = None

    def features(self, inp: torch.Tensor) -> torch.Tensor:
        """The encoder's feature map (N, C, h, w) of inp (N, 3, h, w); tiles of it are exact (models/tiling.py)."""
        return self.encoder(encoder_input(inp, self.channels_last))

    def prepare(self, feat: torch.Tensor, inp: torch.Tensor) -> Any:
        """The query state of one image from its feature map (and input); here the feature map itself."""
        return feat

    def encode(self, inp: torch.Tensor) -> Any:
        """The query state of inp (N, 3, h, w): prepare(features(inp), inp); stores nothing."""
        return self.prepare(self.features(inp), inp)

    def test_time(self) -> TestTime:
        """The test-time options the method's authors evaluate it with (none for LIIF and MetaSR)."""
        return TestTime()

    def query_grid_bands(self, state: Any, rows: torch.Tensor, cols: torch.Tensor, cell: torch.Tensor,
                         band_rows: int) -> Iterator[Tuple[int, torch.Tensor]]:
        """Non-pointwise models: (row0, band (N, 3, r, W)) of the grid rows (H,) x cols (W,), cell (N, 2)."""
        raise NotImplementedError(f"{type(self).__name__} is pointwise: use query")

    def query(self, feat: torch.Tensor, coord: torch.Tensor, cell: Optional[torch.Tensor] = None,
              table_mb: float = fast_query.DEFAULT_TABLE_MB) -> torch.Tensor:
        """RGB (N, Q, 3) of feat at coord (N, Q, 2) with query cells (N, Q, 2).

        table_mb bounds the fast path's per-code table (built for the feature rows the queries reach).
        """
        if fast_query.check_query_mode(self.query_mode) == 'fast' and self.has_fast_path():
            return self.query_fast(feat, coord, cell, table_mb)
        return self.query_reference(feat, coord, cell)

    def has_fast_path(self) -> bool:
        """Whether query_fast handles this configuration."""
        return False

    def has_int8_query(self) -> bool:
        """Whether query_int8 handles this configuration (on a CPU whose torch has the int8 kernels)."""
        return False

    def query_int8(self, state: Any, coord: torch.Tensor, cell: Optional[torch.Tensor] = None,
                   table_mb: float = fast_query.DEFAULT_TABLE_MB) -> torch.Tensor:
        """query with the MLP's hidden layers in dynamic int8 (CPU inference): within a few 8-bit levels of query."""
        raise NotImplementedError(f"{type(self).__name__} has no int8 query")

    def query_fast(self, feat: torch.Tensor, coord: torch.Tensor, cell: Optional[torch.Tensor],
                   table_mb: float) -> torch.Tensor:
        """query through models/fast_query.py: the same values up to float rounding."""
        raise NotImplementedError

    def query_reference(self, feat: torch.Tensor, coord: torch.Tensor,
                        cell: Optional[torch.Tensor] = None) -> torch.Tensor:
        """query computed as LIIF.md describes it."""
        raise NotImplementedError

    def gen_feat(self, inp: torch.Tensor) -> torch.Tensor:
        """Encode inp and keep the feature map for query_rgb (the authors' API)."""
        self.feat = self.encode(inp)
        return self.feat

    def query_rgb(self, coord: torch.Tensor, cell: Optional[torch.Tensor] = None) -> torch.Tensor:
        """query of the feature map of the last gen_feat (the authors' API)."""
        if self.feat is None:
            raise RuntimeError("query_rgb needs a feature map: call gen_feat(inp) first")
        return self.query(self.feat, coord, cell)

    def forward(self, inp: torch.Tensor, coord: torch.Tensor, cell: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Encode inp and query it: (N, Q, 3); self.feat is left alone."""
        return self.query(self.encode(inp), coord, cell)
