"""Whole-image inference in bounded memory: (tiled) encoding once, then the output grid in chunks or bands.

Every function takes `max_mem_mb`, the working memory beyond the model, its feature map and the
returned output: it sizes the query chunks, the fast path's per-code table, and whether the
encoder runs on overlapping tiles. `amp` ('bf16' / 'fp16') runs under torch.autocast. Models are
used through their pure interface (models/implicit.py: features, prepare, encode, query,
query_grid_bands) only: nothing is stored on them. The test-time options (utils/testtime.py) apply
only when the caller passes them.
"""
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from models.fast_query import mlp_layers
from models.tiling import activation_channels, encode_tiled, receptive_radius
from utils.amp import autocast
from utils.coord import coord_seq
from utils.errors import UserError
from utils.image import float_to_u8
from utils.norm import DEMO, DataNorm
from utils.testtime import NONE as NO_TEST_TIME, TestTime, merge, mirror_pad

# working memory by default: RDN's encoder (131 px receptive radius, ~9 KB of activations per
# pixel) then runs untiled up to ~480 x 480 px inputs; tiles below that size get expensive
DEFAULT_MAX_MEM_MB = 2048


def bytes_per_query(model: torch.nn.Module) -> int:
    """Rough peak bytes per query point inside model.query (the reference path materialises much more).

    A model that states its own figure (query_bytes, e.g. an ONNX export's) is taken at its word.
    """
    if getattr(model, 'query_bytes', None):
        return int(model.query_bytes)
    layers = mlp_layers(getattr(model, 'imnet', None))
    if layers is None:
        return 64 + 4 * getattr(getattr(model, 'encoder', None), 'out_dim', 64)
    widest = max(m.out_features for m in layers if isinstance(m, torch.nn.Linear))
    in_dim = layers[0].in_features
    if getattr(model, 'query_mode', 'reference') == 'fast':
        return 128  # coordinates, outputs, uint8 conversion: the MLP runs in fixed-size chunks inside query
    # reference: for every corner at once an unfolded code, the MLP input, two activations, the prediction
    corners = 4 if getattr(model, 'local_ensemble', False) else 1
    return corners * 4 * (2 * in_dim + 2 * widest + layers[-1].out_features + 16)


def _queries_per_call(model: torch.nn.Module, max_mem_mb: float) -> int:
    # larger calls gain nothing (the fast path chunks internally) and only hold more memory
    return min(1 << 20, max(1024, int(max_mem_mb * 2 ** 20 / 4 / bytes_per_query(model))))


def table_budget_mb(max_mem_mb: float) -> float:
    """The part of a working-memory budget that a fast path's per-code table may take (a quarter)."""
    return max_mem_mb / 4


def encoder_tile(model: torch.nn.Module, inp: torch.Tensor, max_mem_mb: float,
                 amp: Optional[str] = None) -> Optional[Tuple[int, int]]:
    """(tile, halo) to encode inp within max_mem_mb; None if the whole image fits or tiles cannot be exact.

    Also None for a model without a torch encoder (an ONNX export): it is encoded whole.
    """
    encoder = getattr(model, 'encoder', None)
    halo = receptive_radius(encoder) if isinstance(encoder, torch.nn.Module) else None
    if halo is None:
        return None
    n, _, h, w = inp.shape
    per_px = n * activation_channels(encoder) * (2 if amp else 4)
    budget = max_mem_mb * 2 ** 20
    if h * w * per_px <= budget:
        return None
    side = int((budget / per_px) ** 0.5)
    # a core narrower than the halo would recompute each pixel > 9 times: exceed the budget instead
    return max(16, halo, side - 2 * halo), halo


@torch.inference_mode()
def encode_bounded(model: torch.nn.Module, inp: torch.Tensor, max_mem_mb: float = DEFAULT_MAX_MEM_MB,
                   amp: Optional[str] = None) -> Any:
    """model.encode(inp), its encoder on overlapping tiles when the activations exceed max_mem_mb."""
    with autocast(inp.device, amp):
        plan = encoder_tile(model, inp, max_mem_mb, amp)
        if plan is None:
            return model.encode(inp)
        tile, halo = plan
        return model.prepare(encode_tiled(model.features, inp, tile, halo), inp)


def _require_pointwise(model: torch.nn.Module) -> None:
    if not getattr(model, 'pointwise', True):
        raise UserError(f"{type(model).__name__}'s outputs depend on the whole output grid, not on each query "
                        "alone: query it through upscale / iter_upscale_bands, not on a list of points")


@torch.inference_mode()
def batched_predict(model: torch.nn.Module, inp: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor,
                    bsize: Optional[int] = None, max_mem_mb: float = DEFAULT_MAX_MEM_MB,
                    amp: Optional[str] = None) -> torch.Tensor:
    """model(inp, coord, cell) with the queries in chunks of `bsize` (default: sized from max_mem_mb): (N, Q, 3).

    Pointwise models only (the chunks would change a model whose queries interact, e.g. SRNO).
    """
    _require_pointwise(model)
    feat = encode_bounded(model, inp, max_mem_mb, amp)
    bsize = bsize or _queries_per_call(model, max_mem_mb) // inp.shape[0]
    out = None
    with autocast(inp.device, amp):
        for i in range(0, coord.shape[1], bsize):
            pred = model.query(feat, coord[:, i:i + bsize], cell[:, i:i + bsize],
                               table_mb=table_budget_mb(max_mem_mb)).float()
            if out is None:
                out = pred.new_empty(coord.shape[0], coord.shape[1], pred.shape[-1])
            out[:, i:i + bsize] = pred
    return out


@dataclass(frozen=True)
class OutputGrid:
    """The H x W output pixels of an upscale in the model input's [-1, 1] coordinates, and their query cell.

    Without window padding these are make_coord((H, W)) and cell (2/H, 2/W). With it the model sees
    the padded input and the grid covers only the original image inside it (the authors' top-left crop).
    """
    rows: torch.Tensor
    cols: torch.Tensor
    cell: Tuple[float, float]
    cell_t: torch.Tensor  # cell on the grid's device, made once (a host-to-device copy per band would wait on a GPU)

    def coords(self, r0: int, r1: int, c0: int = 0, c1: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """(coord, cell), each (Q, 2): the pixels of rows r0:r1 x columns c0:c1, row by row."""
        coord = torch.stack(torch.meshgrid(self.rows[r0:r1], self.cols[c0:c1], indexing='ij'), dim=-1).view(-1, 2)
        return coord, self.cell_t.expand_as(coord)


@dataclass(frozen=True)
class EncodedInput:
    """An input as an upscale queries it: the query state of the (window-padded) input, and that input's size."""
    state: Any
    model_hw: Tuple[int, int]


def encode_for_upscale(model: torch.nn.Module, inp: torch.Tensor, test_time: TestTime = NO_TEST_TIME,
                       max_mem_mb: float = DEFAULT_MAX_MEM_MB, amp: Optional[str] = None) -> EncodedInput:
    """The window padding of test_time (if any), then the one bounded encoding an upscale of inp queries."""
    model_inp = mirror_pad(inp, test_time.window) if test_time.window else inp
    return EncodedInput(encode_bounded(model, model_inp, max_mem_mb, amp), tuple(model_inp.shape[-2:]))


def output_grid(in_hw: Sequence[int], size: Sequence[int], model_hw: Sequence[int], test_time: TestTime,
                device: Optional[torch.device] = None) -> OutputGrid:
    """OutputGrid of an H x W upscale of an h x w image that the model sees as model_hw (padded or not)."""
    (h, w), (big_h, big_w), (mh, mw) = in_hw, size, model_hw
    factor = test_time.cell_factor(max(big_h / h, big_w / w))
    rows = coord_seq(big_h, device=device) if mh == h else coord_seq(big_h, -1.0, -1.0 + 2.0 * h / mh, device)
    cols = coord_seq(big_w, device=device) if mw == w else coord_seq(big_w, -1.0, -1.0 + 2.0 * w / mw, device)
    # as the authors form it: the fp32 pixel size, then the enlargement
    cell = tuple(float(torch.tensor(2.0 * n / (big * m)) * factor) for n, big, m in ((h, big_h, mh), (w, big_w, mw)))
    return OutputGrid(rows, cols, cell, torch.tensor(cell, device=device))


@torch.inference_mode()
def iter_upscale_bands(model: torch.nn.Module, inp: torch.Tensor, size: Sequence[int],
                       bsize: Optional[int] = None, max_mem_mb: float = DEFAULT_MAX_MEM_MB,
                       amp: Optional[str] = None, test_time: TestTime = NO_TEST_TIME,
                       encoded: Optional[EncodedInput] = None) -> Iterator[Tuple[int, torch.Tensor]]:
    """Yield (row0, band (N, 3, rows, W)) covering the H x W output top to bottom, normalised space.

    Only one band is alive at a time, so callers can write huge outputs into a uint8 buffer.
    test_time: the cell enlargement and window padding to apply (default none; model.test_time()
    is what the method's authors use). encoded: encode_for_upscale of the same inp, test_time,
    max_mem_mb and amp, made earlier (it is made here if None).
    """
    h, w = size
    n = inp.shape[0]
    encoded = encoded or encode_for_upscale(model, inp, test_time, max_mem_mb, amp)
    grid = output_grid(inp.shape[-2:], size, encoded.model_hw, test_time, inp.device)
    feat = encoded.state
    rows = max(1, (bsize or _queries_per_call(model, max_mem_mb) // n) // w)
    if not getattr(model, 'pointwise', True):
        with autocast(inp.device, amp):
            for r0, band in model.query_grid_bands(feat, grid.rows, grid.cols, grid.cell_t.expand(n, 2), rows):
                yield r0, band.float()
        return
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        coord, cell = grid.coords(r0, r1)
        with autocast(inp.device, amp):
            pred = model.query(feat, coord.expand(n, -1, -1), cell.expand(n, -1, -1),
                               table_mb=table_budget_mb(max_mem_mb)).float()
        yield r0, pred.view(n, r1 - r0, w, -1).permute(0, 3, 1, 2)


@torch.inference_mode()
def upscale(model: torch.nn.Module, inp: torch.Tensor, size: Sequence[int], bsize: Optional[int] = None,
            max_mem_mb: float = DEFAULT_MAX_MEM_MB, amp: Optional[str] = None,
            test_time: TestTime = NO_TEST_TIME) -> torch.Tensor:
    """Query the full H x W pixel grid of inp (N, 3, h, w), normalised space in and out: (N, 3, H, W)."""
    out = None
    for r0, band in iter_upscale_bands(model, inp, size, bsize, max_mem_mb, amp, test_time):
        if out is None:
            out = band.new_empty(band.shape[0], band.shape[1], size[0], size[1])
        out[:, :, r0:r0 + band.shape[2]] = band
    return out


@torch.inference_mode()
def upscale_to_uint8(model: torch.nn.Module, inp: torch.Tensor, size: Sequence[int],
                     out: Optional[np.ndarray] = None, bsize: Optional[int] = None,
                     max_mem_mb: float = DEFAULT_MAX_MEM_MB, amp: Optional[str] = None,
                     norm: DataNorm = DEMO, test_time: TestTime = NO_TEST_TIME,
                     encoded: Optional[EncodedInput] = None) -> np.ndarray:
    """The H x W upscale of one image inp ((1, 3, h, w) or (3, h, w), normalised) as uint8 RGB (H, W, 3).

    Written band by band into `out` (allocated if None): no float copy of the whole output exists.
    Values are de-normalised with `norm` (the model's; default the authors' demo 0.5 / 0.5),
    clamped to [0, 1] and rounded to 8 bits. encoded: as iter_upscale_bands's.
    """
    if inp.dim() == 3:
        inp = inp.unsqueeze(0)
    if inp.shape[0] != 1:
        raise ValueError(f"upscale_to_uint8 takes one image, got a batch of {inp.shape[0]}")
    h, w = size
    if out is None:
        out = np.empty((h, w, 3), dtype=np.uint8)
    elif out.shape != (h, w, 3) or out.dtype != np.uint8:
        raise ValueError(f"out must be a uint8 array of shape {(h, w, 3)}, not {out.dtype} {out.shape}")
    for r0, band in iter_upscale_bands(model, inp, size, bsize, max_mem_mb, amp, test_time, encoded):
        rgb = float_to_u8(norm.output(band[0].permute(1, 2, 0)))
        out[r0:r0 + rgb.shape[0]] = rgb.cpu().numpy()
    return out



def recommended_test_time(model: torch.nn.Module) -> TestTime:
    """The test-time options the model's authors evaluate it with (none for a model that states none)."""
    stated = getattr(model, 'test_time', None)
    return stated() if callable(stated) else NO_TEST_TIME


def choose_test_time(model: torch.nn.Module, *overrides: Mapping[str, Any]) -> TestTime:
    """The model's recommended test-time options, overridden in turn by each mapping's cell_max_scale / window.

    Missing keys and None values leave the option as it is; 'none' switches it off (config keys,
    then command-line flags).
    """
    chosen = recommended_test_time(model)
    for values in overrides:
        chosen = merge(chosen, values.get('cell_max_scale'), values.get('window'))
    return chosen
