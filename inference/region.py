"""Any rectangle of an upscale's output grid, computed alone: the viewer's tiles.

An upscale of an h x w image to H x W pixels (inference.bounded.upscale) queries the model at the
centres of an H x W grid. A region is a crop of that grid, so a tile rendered here holds the same
pixels as the same crop of the whole upscale, without computing the rest: the encoder runs once
per image (RegionRenderer), each region queries only its own pixels, in chunks, and a cancel check
runs before the work and between chunks so superseded requests stop early.
"""
import collections
import math
import threading
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from inference.bounded import (DEFAULT_MAX_MEM_MB, EncodedInput, encode_for_upscale, output_grid,
                               recommended_test_time, table_budget_mb)
from models import fast_query
from utils.amp import autocast
from utils.image import float_to_u8
from utils.imresize import RowResizer
from utils.norm import DEMO, DataNorm
from utils.testtime import TestTime

# queries per model call: ~0.1 s on a 2-core CPU, the granularity at which a stale request stops
CHUNK_QUERIES = 8192
GPU_CHUNK_QUERIES = 1 << 16


def int8_unavailable(model: Any, device: torch.device) -> Optional[str]:
    """Why a RegionRenderer of `model` on `device` cannot run int8, or None if it can."""
    if torch.device(device).type != 'cpu':
        return f"int8 runs on the CPU, not {torch.device(device).type}"
    if not model.has_int8_query():
        return f"{type(getattr(model, 'inner', model)).__name__} (this configuration) has no int8 query"
    return fast_query.int8_unavailable()


class Cancelled(Exception):
    """A region's work was stopped because a newer request superseded it."""


@dataclass(frozen=True)
class Rect:
    """Rows r0:r1 and columns c0:c1 (half-open) of an output grid."""
    r0: int
    c0: int
    r1: int
    c1: int

    @property
    def shape(self) -> Tuple[int, int]:
        """(rows, cols)."""
        return self.r1 - self.r0, self.c1 - self.c0


def tile_hw(tile: Union[int, Sequence[int]]) -> Tuple[int, int]:
    """(rows, cols) of a tile given as one side (square) or as (rows, cols)."""
    th, tw = (tile, tile) if isinstance(tile, int) else tile
    if th < 1 or tw < 1:
        raise ValueError(f"tile size {th}x{tw} must be positive")
    return th, tw


def tile_count(size: Sequence[int], tile: Union[int, Sequence[int]],
               shift: Sequence[int] = (0, 0)) -> Tuple[int, int]:
    """(rows, cols) of the tiles covering an H x W grid whose tiles start `shift` px before it."""
    th, tw = tile_hw(tile)
    return math.ceil((size[0] + shift[0]) / th), math.ceil((size[1] + shift[1]) / tw)


def tile_rect(size: Sequence[int], tile: Union[int, Sequence[int]], i: int, j: int,
              shift: Sequence[int] = (0, 0)) -> Rect:
    """The pixels of tile (row i, column j) of the H x W grid; ValueError outside the grid or for a bad shift.

    Tiles are th x tw (tile, or tile = (th, tw)); tile (i, j) covers rows i*th - shift[0] ..
    (i+1)*th - shift[0] (and columns likewise) clipped to the grid: a shift and a tile size let the
    page line tiles up with the view's edges (less overhang to render).
    """
    th, tw = tile_hw(tile)
    if not (0 <= shift[0] < th and 0 <= shift[1] < tw):
        raise ValueError(f"tile shift {tuple(shift)} must be 0..{th - 1}, 0..{tw - 1}")
    rows, cols = tile_count(size, (th, tw), shift)
    if not (0 <= i < rows and 0 <= j < cols):
        raise ValueError(f"tile ({i}, {j}) is outside the {rows} x {cols} tiles of a {size[1]}x{size[0]} image")
    return Rect(max(0, i * th - shift[0]), max(0, j * tw - shift[1]),
                min(size[0], (i + 1) * th - shift[0]), min(size[1], (j + 1) * tw - shift[1]))


def tiles_meeting(size: Sequence[int], tile: Union[int, Sequence[int]], view: Rect,
                  shift: Sequence[int] = (0, 0)) -> List[Tuple[int, int]]:
    """(i, j) of every tile that overlaps `view` (clipped to the grid), row by row."""
    th, tw = tile_hw(tile)
    r0, c0 = max(0, view.r0) + shift[0], max(0, view.c0) + shift[1]
    r1, c1 = min(size[0], view.r1) + shift[0], min(size[1], view.c1) + shift[1]
    if r0 >= r1 or c0 >= c1:
        return []
    return [(i, j) for i in range(r0 // th, (r1 - 1) // th + 1) for j in range(c0 // tw, (c1 - 1) // tw + 1)]


class RegionRenderer:
    """One image encoded once; any region of its upscale to any size, as uint8 RGB, on demand.

    The model is used through encode / query only (pure), so several threads may render at once.
    Pointwise models only: a region of a model whose outputs depend on the whole grid (SRNO)
    would differ from the same crop of the whole upscale.
    """

    def __init__(self, model: torch.nn.Module, inp: torch.Tensor, norm: DataNorm = DEMO, amp: Optional[str] = None,
                 test_time: Optional[TestTime] = None, max_mem_mb: float = DEFAULT_MAX_MEM_MB, int8: bool = False):
        if not getattr(model, 'pointwise', True):
            raise ValueError(f"{type(model).__name__} is not pointwise: a region of it is not a crop of its upscale")
        if inp.dim() != 4 or inp.shape[0] != 1:
            raise ValueError(f"RegionRenderer takes one image (1, 3, h, w), not {tuple(inp.shape)}")
        why = int8_unavailable(model, inp.device) if int8 else None
        if int8 and (amp is not None or why):
            raise ValueError(f"int8 regions need no autocast (amp {amp!r}) and an int8 query: {why or 'it has one'}")
        self.model, self.norm, self.amp, self.int8 = model, norm, amp, int8
        # the fast path's table budget inference.bounded gives the same max_mem_mb
        self.table_mb = table_budget_mb(max_mem_mb)
        # int8 packs its weights once per query call (~3 ms): one call per 128 px tile (~0.07 s of int8 work);
        # a GPU renders a 256 px tile in one call of a few ms, where the per-call overhead is what counts
        self.chunk = GPU_CHUNK_QUERIES if inp.device.type == 'cuda' else CHUNK_QUERIES * (2 if int8 else 1)
        self.test_time = recommended_test_time(model) if test_time is None else test_time
        self.in_hw: Tuple[int, int] = tuple(inp.shape[-2:])
        self.device = inp.device
        # the encoding iter_upscale_bands makes, kept: a save of the whole image can take it too
        self.encoded: EncodedInput = encode_for_upscale(model, inp, self.test_time, max_mem_mb, amp)

    def predict(self, size: Sequence[int], rect: Rect, should_stop: Optional[Callable[[], bool]] = None,
                chunk: Optional[int] = None) -> torch.Tensor:
        """The model's output (rows, cols, 3), normalised space, at the pixels `rect` of the (H, W) grid.

        should_stop() is asked before each chunk of queries (default self.chunk): once true, Cancelled is raised.
        With int8 the values are within a few 8-bit levels of the fp32 ones, not a crop of them.
        """
        chunk = chunk or self.chunk
        grid = output_grid(self.in_hw, size, self.encoded.model_hw, self.test_time, self.device)
        coord, cell = (t.unsqueeze(0) for t in grid.coords(rect.r0, rect.r1, rect.c0, rect.c1))
        pred = torch.empty(coord.shape[1], 3, device=self.device)
        query = self.model.query_int8 if self.int8 else self.model.query
        with torch.inference_mode(), autocast(self.device, self.amp):
            for q0 in range(0, coord.shape[1], chunk):
                if should_stop is not None and should_stop():
                    raise Cancelled()
                pred[q0:q0 + chunk] = query(self.encoded.state, coord[:, q0:q0 + chunk], cell[:, q0:q0 + chunk],
                                            table_mb=self.table_mb)[0].float()
        return pred.view(*rect.shape, 3)

    def render(self, size: Sequence[int], rect: Rect, should_stop: Optional[Callable[[], bool]] = None,
               chunk: Optional[int] = None) -> np.ndarray:
        """predict as uint8 RGB (rows, cols, 3), de-normalised and rounded as upscale_to_uint8 does."""
        return float_to_u8(self.norm.output(self.predict(size, rect, should_stop, chunk))).cpu().numpy()


def bicubic_region(rgb: torch.Tensor, size: Sequence[int], rect: Rect) -> np.ndarray:
    """The pixels `rect` of MATLAB's bicubic imresize of rgb (3, h, w) in [0, 1] to size (H, W), uint8.

    Same pixel centres as the model's grid; only the source pixels the region needs are touched.
    """
    return _resized_region(RowResizer(rgb, size), rect)


class BicubicRegions:
    """bicubic_region of one image, keeping the resize tables of the last few output sizes.

    A RowResizer's tables cover every output row and column of its size, so building one per tile
    cost more than the tile (measured, 512x512 input, one thread: a 128 px tile 5.4 -> 2.3 ms at x10,
    20.9 -> 1.3 ms at x64).
    """

    def __init__(self, rgb: torch.Tensor, sizes_kept: int = 4):
        self.rgb, self.sizes_kept = rgb, sizes_kept
        self._resizers: 'collections.OrderedDict[Tuple[int, int], RowResizer]' = collections.OrderedDict()
        self._lock = threading.Lock()

    def render(self, size: Sequence[int], rect: Rect) -> np.ndarray:
        """bicubic_region(rgb, size, rect), the same pixels."""
        key = (int(size[0]), int(size[1]))
        with self._lock:
            resizer = self._resizers.pop(key, None) or RowResizer(self.rgb, key)
            self._resizers[key] = resizer
            while len(self._resizers) > self.sizes_kept:
                self._resizers.popitem(last=False)
        return _resized_region(resizer, rect)


def _resized_region(resizer: RowResizer, rect: Rect) -> np.ndarray:
    band = resizer(rect.r0, rect.r1, rect.c0, rect.c1)
    return float_to_u8(band.permute(1, 2, 0)).cpu().numpy()
