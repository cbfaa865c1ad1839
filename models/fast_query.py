"""Exact fast query paths for LIIF and MetaSR: the per-code part of the MLP as a convolution.

LIIF's first layer applied to a code's unfolded 3x3 block is a 3x3 convolution of the feature map
(unfold's channel order c*9 + k is conv2d's (out, in, kh, kw) weight layout), so it is computed
once per code instead of once per query and corner; each query gathers its code's row by integer
index and adds the tiny offset / cell term. MetaSR's last layer contracted with the code is
likewise a convolution, leaving per query only the 3 -> 256 layer and a 256 x 3 dot product.
Only float rounding differs from the reference path.

Lifetime: a query call builds its table (for the feature rows its queries reach, a window of
them at a time when they exceed table_mb) and its scratch buffers, reuses them across its
chunks and drops them when it returns. A call is a pure function of (feat, current weights,
coord, cell): nothing to invalidate after weight edits, nothing shared between threads or
DataParallel replicas, nothing unpicklable left on the model.
"""
import contextlib
import functools
import warnings
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from models.sampling import BORDER_EPS, corner_shifts, corner_weights, nearest_index
from utils.amp import cpu_flags
from utils.coord import coord_seq

QUERY_MODES = ('fast', 'reference')
# MLP rows per pass without autograd: (8192 x 256) fp32 activations stay in L2/L3, and a
# (8192 x 256) @ (256 x 256) product already runs at ~90% of the sgemm peak on a 2-core AVX-512 CPU
ROWS_PER_PASS = 8192
# on a GPU a pass must be large enough to hide the per-op launch cost of ~40 small ops per chunk
GPU_ROWS_PER_PASS = 1 << 17
# CPU inference without autocast runs a pass's rows through the MLP in blocks of this many rows
# per thread: a core's share of the (rows x 257) fp32 activation (1 MB) stays in its L2, so the
# gather, the offset term, the in-place ReLUs and the 3-wide last layer cost less than on a whole
# 8 MB pass (the x4 query stage took 8-11% less CPU time single-threaded)
BLOCK_ROWS_PER_THREAD = 1024
DEFAULT_TABLE_MB = 256


def check_query_mode(mode: str) -> str:
    """`mode` if it is 'fast' or 'reference', else a ValueError."""
    if mode not in QUERY_MODES:
        raise ValueError(f"query_mode must be one of {QUERY_MODES}, not {mode!r}")
    return mode


@contextlib.contextmanager
def query_mode(model: nn.Module, mode: str) -> Iterator[nn.Module]:
    """Temporarily set model.query_mode ('fast' or 'reference')."""
    old = model.query_mode
    model.query_mode = check_query_mode(mode)
    try:
        yield model
    finally:
        model.query_mode = old


def mlp_layers(imnet: Optional[nn.Module]) -> Optional[List[nn.Module]]:
    """imnet's layers if it is a Linear/ReLU stack starting with a Linear (what the fast path runs), else None."""
    layers = getattr(imnet, 'layers', None)
    if not isinstance(layers, nn.Sequential) or len(layers) == 0 or not isinstance(layers[0], nn.Linear):
        return None
    if not all(isinstance(m, (nn.Linear, nn.ReLU)) for m in layers):
        return None
    return list(layers)


def rows_per_pass(device: torch.device) -> int:
    """MLP rows per chunk on `device`."""
    return ROWS_PER_PASS if device.type == 'cpu' else GPU_ROWS_PER_PASS


def block_rows() -> int:
    """MLP rows per block of a CPU chunk run on scratch buffers (at most a chunk)."""
    return min(ROWS_PER_PASS, BLOCK_ROWS_PER_THREAD * torch.get_num_threads())


# ---- running Linear/ReLU layers ------------------------------------------------------------------

def run_layers(x: torch.Tensor, layers: Sequence[nn.Module]) -> torch.Tensor:
    """Apply Linear/ReLU layers to x (M, K) with addmm and in-place ReLU."""
    for m in layers:
        if isinstance(m, nn.ReLU):
            x = x.relu_()
        elif m.bias is None:
            x = torch.mm(x, m.weight.t())
        else:
            x = torch.addmm(m.bias, x, m.weight.t())
    return x


def run_layers_split(x: torch.Tensor, layers: Sequence[nn.Module], rows: int) -> torch.Tensor:
    """run_layers with autograd on row blocks of x after its leading ReLUs.

    Every activation and gradient is then a block of a few MB instead of one of ~150 MB (training
    shape): large tensors are fresh mmaps whose page faults cost ~15% of a CPU training iteration.
    """
    i = 0
    while i < len(layers) and isinstance(layers[i], nn.ReLU):
        x = x.relu_()
        i += 1
    if x.shape[0] <= rows:
        return run_layers(x, layers[i:])
    # torch.split's backward is a single cat, unlike slicing (a zero-filled full tensor per slice)
    return torch.cat([run_layers(part, layers[i:]) for part in x.split(rows)])


@dataclass
class Scratch:
    """Named buffers reused across the chunks of one query call, grown when a larger one is asked for.

    A fresh multi-MB tensor per layer and chunk costs page faults that slowed the CPU query stage by ~30%.
    """

    buffers: Dict[str, torch.Tensor] = field(default_factory=dict)
    ones_width: Dict[str, int] = field(default_factory=dict)  # buffers whose last column holds ones, and their width

    def get(self, name: str, shape: Tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """A tensor of `shape` with like's dtype and device (contents undefined)."""
        numel = 1
        for d in shape:
            numel *= d
        buf = self.buffers.get(name)
        if buf is None or buf.numel() < numel or buf.dtype != like.dtype or buf.device != like.device:
            buf = self.buffers[name] = torch.empty(numel, dtype=like.dtype, device=like.device)
            self.ones_width.pop(name, None)
        return buf[:numel].view(shape)


# ---- the ones column -----------------------------------------------------------------------------
# With scratch buffers (inference without autocast), activations carry a trailing column of ones, so
# that each Linear's bias is one more row of its weight matrix: one matmul per layer, written in place
# into the next buffer, instead of a matmul plus a pass over the activations to add the bias (~5%).
# The LIIF table gets the column as one more output channel, so its gathered rows come with it.

def with_ones(x: torch.Tensor, scratch: Scratch, name: str) -> torch.Tensor:
    """x (M, K) copied into a (M, K + 1) scratch buffer whose last column is 1."""
    out = ones_buffer(scratch, name, x.shape[0], x.shape[1], x)
    out[:, :-1].copy_(x)
    return out


def ones_buffer(scratch: Scratch, name: str, rows: int, cols: int, like: torch.Tensor) -> torch.Tensor:
    """A (rows, cols + 1) scratch buffer whose last column is 1 (the first cols are undefined).

    The column is filled once per buffer and width (a strided fill of one float per row costs
    ~1% of a pass): matmuls write beside it and ReLU keeps it, so it stays 1 across chunks.
    """
    buf = scratch.get(name, (rows, cols + 1), like)
    if scratch.ones_width.get(name) != cols + 1:
        buf_all = scratch.buffers[name]
        rows_all = buf_all.numel() // (cols + 1)
        buf_all[:rows_all * (cols + 1)].view(rows_all, cols + 1)[:, -1].fill_(1)
        scratch.ones_width[name] = cols + 1
    return buf


@dataclass
class BiasRowLayers:
    """Linear/ReLU layers for activations with a ones column: each Linear as one (K + 1, D) matrix, None for a ReLU."""

    steps: List[Optional[torch.Tensor]]
    _last_t: Optional[torch.Tensor] = None

    @classmethod
    def of(cls, layers: Sequence[nn.Module]) -> 'BiasRowLayers':
        """The layers' bias-row matrices (a missing bias is a zero row)."""
        steps = []
        for m in layers:
            if isinstance(m, nn.ReLU):
                steps.append(None)
                continue
            bias = m.bias if m.bias is not None else m.weight.new_zeros(m.out_features)
            steps.append(torch.cat([m.weight.t(), bias.view(1, -1)]))
        return cls(steps)

    def run(self, x: torch.Tensor, scratch: Scratch, out_t: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x (M, K + 1), last column 1, through the layers (x is overwritten): (M, D) without the ones column.

        With out_t (D, M), the result is written there transposed and its transpose returned.
        """
        written = 0  # two buffers take turns: a layer's input is the other one
        for i, matrix in enumerate(self.steps):
            if matrix is None:
                x = x.relu_()  # the ones column stays 1
            elif i + 1 == len(self.steps):
                if out_t is None:
                    return torch.mm(x, matrix.to(x.dtype))  # the small last output is a fresh tensor
                # (D, K + 1) @ (M, K + 1)^T: MKL reads a narrow last layer's input once, in half
                # the time of (M, K + 1) @ (K + 1, D) for D = 3
                return torch.mm(self.last_t(x.dtype), x.t(), out=out_t).t()
            else:
                y = ones_buffer(scratch, f'act{written % 2}', x.shape[0], matrix.shape[1], x)
                # a BLAS-compatible strided view: the product is written in place beside the ones
                torch.mm(x, matrix.to(x.dtype), out=y[:, :-1])
                x, written = y, written + 1
        if out_t is None:
            return x[:, :-1]
        return out_t.copy_(x[:, :-1].t()).t()

    def last_t(self, dtype: torch.dtype) -> torch.Tensor:
        """The last layer's bias-row matrix transposed, contiguous (D, K + 1), made once per call."""
        if self._last_t is None or self._last_t.dtype != dtype:
            self._last_t = self.steps[-1].t().to(dtype).contiguous()
        return self._last_t


@dataclass
class Layers:
    """A run of an MLP's Linear/ReLU modules (of one query call), and their bias-row form once it is used."""

    modules: List[nn.Module]
    bias_rows: Optional[BiasRowLayers] = None
    uses_ones_column = True  # run's input carries the ones column when it runs on scratch buffers

    def run(self, x: torch.Tensor, scratch: Optional[Scratch], out_t: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x (M, K) through the modules; with scratch, x carries the ones column (M, K + 1) and out_t may take the result."""
        if scratch is not None:
            if self.bias_rows is None:  # once per call: the weights may change between calls
                self.bias_rows = BiasRowLayers.of(self.modules)
            return self.bias_rows.run(x, scratch, out_t)
        if torch.is_grad_enabled():
            return run_layers_split(x, self.modules, rows_per_pass(x.device))
        return run_layers(x, self.modules)


# ---- int8 hidden layers (CPU) --------------------------------------------------------------------
# The viewer's reduced precision on CPUs without native bf16: each hidden Linear (+ its ReLU) as one
# dynamic-int8 product of torch's quantized CPU kernels (fbgemm / oneDNN; weights int8 per output
# channel, activations int8 per block of rows, int32 accumulation, dequantisation, bias and ReLU in
# the same kernel); the first layer (the table) and the last, 3-wide one stay fp32. Measured on a
# 2-core AVX-512 VNNI CPU with the bundled model: the viewer's tiles ~1.5x as fast as in fp32
# (benchmarks/viewer_speed.py); Set5 / Set14 at x2-x4 within 0.01 dB of fp32's PSNR, 13-17% of
# 8-bit values changed, at most 4 levels (benchmarks/precision_accuracy.py --precisions int8).
# The activation scale is per block of rows, so values depend (within that error) on which queries
# share a call: an int8 region is close to, not equal to, the same crop of an int8 whole image.
INT8_OPS = ('linear_prepack', 'linear_dynamic', 'linear_relu_dynamic')
# CPU flags of int8 dot products that accumulate in int32 (no int16 saturation): activations may use all 8 bits
# (AVX-VNNI on AVX2 CPUs is left out: whether fbgemm's AVX2 kernels use it was not checked)
VNNI_FLAGS = ('avx512_vnni',)


@functools.lru_cache(maxsize=None)
def int8_unavailable() -> Optional[str]:
    """Why this torch build cannot run the int8 hidden layers on this CPU, or None if it can."""
    missing = [op for op in INT8_OPS if not hasattr(torch.ops.quantized, op)]
    if missing:
        return f"this torch has no quantized.{missing[0]} op"
    try:
        with torch.random.fork_rng(devices=[]):  # the probe's initial weights leave the caller's RNG alone
            layers = Int8Layers.of([nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)])
        with torch.no_grad():
            layers.run(torch.ones(2, 8), None)
    except (RuntimeError, NotImplementedError) as e:
        return f"this torch's int8 kernels fail here ({str(e).splitlines()[0][:120]})"
    return None


@dataclass
class Int8Layers:
    """An MLP's Linear/ReLU modules after its first layer, with every Linear but the last in dynamic int8."""

    steps: List[Tuple[str, object]]  # ('relu', None), ('int8', packed weights), ('int8_relu', ...), ('fp32', Linear)
    reduce_range: bool
    uses_ones_column = False  # the table, and every input to run, has no ones column

    @classmethod
    def of(cls, modules: Sequence[nn.Module]) -> 'Int8Layers':
        """Quantise the modules' weights (int8, a scale per output channel; the bias stays fp32)."""
        last = max((i for i, m in enumerate(modules) if isinstance(m, nn.Linear)), default=-1)
        steps, i = [], 0
        while i < len(modules):
            m = modules[i]
            if isinstance(m, nn.ReLU):
                steps.append(('relu', None))
            elif i == last:
                steps.append(('fp32', m))
            else:
                fused = i + 1 < len(modules) and isinstance(modules[i + 1], nn.ReLU)
                steps.append(('int8_relu' if fused else 'int8', _pack_int8(m)))
                i += fused
            i += 1
        # without VNNI, fbgemm multiplies u8 x s8 pairs into saturating int16: 7-bit activations avoid overflow
        return cls(steps, reduce_range=not any(flag in cpu_flags() for flag in VNNI_FLAGS))

    def run(self, x: torch.Tensor, scratch: Optional[Scratch], out_t: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x (M, K) fp32 through the layers (x may be overwritten): (M, D); with out_t (D, M) written there."""
        ops = torch.ops.quantized
        for i, (kind, step) in enumerate(self.steps):
            if kind == 'relu':
                x = x.relu_()
            elif kind == 'int8_relu':
                x = ops.linear_relu_dynamic(x, step, self.reduce_range)
            elif kind == 'int8':
                x = ops.linear_dynamic(x, step, self.reduce_range)
            elif out_t is not None and i + 1 == len(self.steps):  # (D, K) @ x^T, as BiasRowLayers does
                bias = step.bias.view(-1, 1) if step.bias is not None else torch.zeros(1, 1)
                return torch.addmm(bias, step.weight, x.t(), out=out_t).t()
            else:
                x = F.linear(x, step.weight, step.bias)
        return x if out_t is None else out_t.copy_(x.t()).t()

    @staticmethod
    def quantises(modules: Sequence[nn.Module]) -> bool:
        """Whether Int8Layers.of(modules) runs any layer in int8 (a Linear before the last one)."""
        return sum(isinstance(m, nn.Linear) for m in modules) >= 2


def check_int8(feat: torch.Tensor, params: Iterator[torch.Tensor]) -> None:
    """ValueError unless an int8 query of feat can run: CPU, int8 kernels, no autocast, nothing to differentiate."""
    if feat.device.type != 'cpu':
        raise ValueError(f"the int8 query runs on the CPU, not {feat.device.type}")
    reason = int8_unavailable()
    if reason:
        raise ValueError(f"the int8 query cannot run: {reason}")
    if autocast_enabled(feat.device):
        raise ValueError("the int8 query does not mix with autocast")
    if torch.is_grad_enabled() and (feat.requires_grad or any(p.requires_grad for p in params)):
        raise ValueError("the int8 query is for inference: it has no gradients (use torch.no_grad)")


def _pack_int8(linear: nn.Linear) -> object:
    """linear's weights quantised symmetrically per output channel and packed for fbgemm (bias fp32)."""
    w = linear.weight.detach().float()
    scale = (w.abs().amax(dim=1).clamp_min(1e-12) / 127).double()
    with warnings.catch_warnings():  # torch marks the quantized-tensor API for a later removal: int8_unavailable asks
        warnings.simplefilter('ignore')
        qw = torch.quantize_per_channel(w, scale, torch.zeros(w.shape[0], dtype=torch.long), 0, torch.qint8)
    bias = None if linear.bias is None else linear.bias.detach().float()
    return torch.ops.quantized.linear_prepack(qw, bias)


# ---- the per-code table --------------------------------------------------------------------------

@dataclass
class TableConv:
    """The 'same' convolution of the feature map whose output at each code is that code's table row."""

    weight: torch.Tensor  # (D, C, k, k)
    bias: Optional[torch.Tensor]  # (D,)

    @property
    def channels(self) -> int:
        """D, the table's row width."""
        return self.weight.shape[0]

    def with_ones_channel(self) -> 'TableConv':
        """This convolution with one more output channel that is exactly 1 (zero filter, bias 1)."""
        d, c, k, _ = self.weight.shape
        bias = self.bias if self.bias is not None else self.weight.new_zeros(d)
        return TableConv(torch.cat([self.weight, self.weight.new_zeros(1, c, k, k)]),
                         torch.cat([bias, bias.new_ones(1)]))


@dataclass
class CodeTable:
    """Table rows of the codes in feature rows r0..r1 (exclusive) of every image of the batch."""

    values: torch.Tensor  # (N * (r1 - r0) * w, D), image-major then row-major
    r0: int
    r1: int
    w: int

    def covers(self, lo: int, hi: int) -> bool:
        """Whether feature rows lo..hi (exclusive) are in the table."""
        return self.r0 <= lo and hi <= self.r1

    def index(self, row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        """Flat table row (M,) of each code (row, col) of shape (..., N, q), in their order."""
        n = torch.arange(row.shape[-2], device=row.device).view(-1, 1)
        return ((n * (self.r1 - self.r0) + (row - self.r0)) * self.w + col).reshape(-1)

    def gather(self, row: torch.Tensor, col: torch.Tensor, scratch: Optional[Scratch]) -> torch.Tensor:
        """Rows (M, D) of the codes (row, col) of shape (..., N, q), M their number, in their order."""
        return self.rows(self.index(row, col), scratch)

    def rows(self, flat: torch.Tensor, scratch: Optional[Scratch]) -> torch.Tensor:
        """Table rows (M, D) at flat indices (M,) (in the scratch buffer 'gather' if given)."""
        out = None if scratch is None else scratch.get('gather', (flat.shape[0], self.values.shape[1]), self.values)
        return torch.index_select(self.values, 0, flat, out=out)


def build_table(feat: torch.Tensor, conv: TableConv, r0: int, r1: int) -> CodeTable:
    """The table of conv over feat (N, C, h, w) for feature rows r0..r1 (zero padding at the map's borders)."""
    n, _, h, w = feat.shape
    p = conv.weight.shape[-1] // 2
    lo, hi = r0 - p, r1 + p
    src = feat[:, :, max(lo, 0):min(hi, h)]
    top, bottom = max(0, -lo), max(0, hi - h)
    if (top, bottom) == (p, p):
        pad = p
    else:  # a window inside the map: its neighbour rows are real data, pad only at the map's borders
        src = F.pad(src, (0, 0, top, bottom)) if top or bottom else src
        pad = (0, p)
    # channels_last makes the output's (N, rows, w, D) view contiguous, and is the fast CPU layout
    with _conv_precision_of_matmul(feat.device):
        out = F.conv2d(src.contiguous(memory_format=torch.channels_last), conv.weight, conv.bias, padding=pad)
    return CodeTable(out.permute(0, 2, 3, 1).reshape(-1, conv.channels), r0, r1, w)


@contextlib.contextmanager
def _conv_precision_of_matmul(device: torch.device) -> Iterator[None]:
    """On CUDA, let the table convolution use TF32 only where fp32 matmuls may.

    It replaces part of the reference path's Linear layer; cuDNN allows TF32 by default while
    matmuls do not, which would cost the fast path ~1e-3 of relative precision.
    """
    if device.type != 'cuda':
        yield
        return
    cudnn = torch.backends.cudnn
    with cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic,
                     allow_tf32=torch.backends.cuda.matmul.allow_tf32):
        yield


def autocast_enabled(device: torch.device) -> bool:
    """Whether autocast is on for device's type, on any torch (the per-device-type query is torch >= 2.4)."""
    try:
        return torch.is_autocast_enabled(device.type)
    except TypeError:  # torch < 2.4: per-device functions
        if device.type == 'cpu':
            return torch.is_autocast_cpu_enabled()
        return device.type == 'cuda' and torch.is_autocast_enabled()


def _rows_chosen(chosen_row_coord: torch.Tensor, h: int) -> Tuple[int, int]:
    """(lo, hi): the feature rows (hi exclusive) nearest_index picks for row coordinates in the given range.

    The pick is monotone in the coordinate, so the extremes bound every query between them.
    """
    coord = torch.stack([chosen_row_coord, torch.zeros_like(chosen_row_coord)], dim=-1)
    rows = nearest_index(coord, h, 1)[0]
    return int(rows.min()), int(rows.max()) + 1


# ---- one call: chunks of queries over a table ----------------------------------------------------

@dataclass
class Codes:
    """The codes chosen for a chunk of queries, (..., N, q) each."""

    row: torch.Tensor
    col: torch.Tensor


@dataclass
class _Plan:
    """What a model's fast query needs besides the feature map (subclassed per model)."""

    conv: TableConv  # the table's convolution
    params: List[torch.Tensor]  # every weight the queries read (autograd records if one requires grad)
    passes: int  # codes per query
    out_dim: int

    def table_conv(self, ones_column: bool) -> TableConv:
        """The convolution of the table (with the ones column when the MLP runs on scratch buffers)."""
        return self.conv

    def row_span(self, coord: torch.Tensor, extra: Optional[torch.Tensor]) -> Tuple[int, int]:
        """Feature rows (lo, hi exclusive) that the call's queries choose codes from."""
        raise NotImplementedError

    def choose(self, coord: torch.Tensor, extra: Optional[torch.Tensor]) -> Codes:
        """The codes of a chunk of queries."""
        raise NotImplementedError

    def predict(self, table: CodeTable, codes: Codes, coord: torch.Tensor, extra: Optional[torch.Tensor],
                scratch: Optional[Scratch]) -> torch.Tensor:
        """Output (N, q, out_dim) of a chunk of queries whose codes the table covers."""
        raise NotImplementedError


def _run(plan: _Plan, feat: torch.Tensor, coord: torch.Tensor, extra: Optional[torch.Tensor],
         table_mb: float) -> torch.Tensor:
    """plan's queries coord (N, Q, 2) with per-query `extra` (N, Q, E): one pass with autograd, else chunks."""
    n, _, h, w = feat.shape
    q = coord.shape[1]
    if q == 0 or n == 0:
        return coord.new_zeros(n, q, plan.out_dim)
    span = plan.row_span(coord, extra)
    if torch.is_grad_enabled() and (feat.requires_grad or any(p.requires_grad for p in plan.params)):
        return plan.predict(build_table(feat, plan.conv, *span), plan.choose(coord, extra), coord, extra, None)

    # out= buffers do not mix with autocast (it would not cast them); the GPU allocator is cheap anyway
    scratch = None if autocast_enabled(feat.device) else Scratch()
    conv = plan.table_conv(ones_column=scratch is not None)
    budget_rows = int(table_mb * 2 ** 20 // (n * w * conv.channels * 4))
    windowed = span[1] - span[0] > budget_rows
    table = None if windowed else build_table(feat, conv, *span)
    step = max(1, rows_per_pass(feat.device) // (plan.passes * n))
    out = None
    for i in range(0, q, step):
        crd = coord[:, i:i + step]
        ext = None if extra is None else extra[:, i:i + step]
        codes = plan.choose(crd, ext)
        if windowed:
            lo, hi = int(codes.row.min()), int(codes.row.max()) + 1
            if table is None or not table.covers(lo, hi):
                table = None  # free the old window before building the next
                table = build_table(feat, conv, lo, min(span[1], max(hi, lo + budget_rows)))
        part = plan.predict(table, codes, crd, ext, scratch)
        if q <= step:
            return part
        if out is None:
            out = part.new_empty(n, q, part.shape[-1])
        out[:, i:i + step] = part
    return out


# ---- LIIF ----------------------------------------------------------------------------------------

@dataclass
class _LiifPlan(_Plan):
    """LIIF's first layer split into the code part (the table) and the offset / cell part."""

    layers: Union[Layers, Int8Layers]  # the MLP after its first layer
    offset_weight: torch.Tensor  # first-layer weights on rel and rel_cell: (hidden, 2 or 4)
    shifts: torch.Tensor  # (P, 1, 1, 2)
    row_centres: torch.Tensor  # the codes' centre coordinates
    col_centres: torch.Tensor
    hw: torch.Tensor  # (h, w)
    local_ensemble: bool

    def table_conv(self, ones_column: bool) -> TableConv:
        """The code part of the first layer, with the ones channel if the MLP runs on scratch buffers."""
        return self.conv.with_ones_channel() if ones_column and self.layers.uses_ones_column else self.conv

    def row_span(self, coord: torch.Tensor, extra: Optional[torch.Tensor]) -> Tuple[int, int]:
        """Rows of the codes around the topmost and bottommost queries (the same float ops as choose)."""
        ends = torch.stack(coord[..., 0].aminmax())
        chosen = (ends.view(1, 2) + self.shifts[:, 0, 0, :1]).clamp_(-1 + BORDER_EPS, 1 - BORDER_EPS)
        return _rows_chosen(chosen, len(self.row_centres))

    def choose(self, coord: torch.Tensor, extra: Optional[torch.Tensor]) -> Codes:
        """The code of each corner: (P, N, q); coord + shift rounds as the reference's, so the choice is identical."""
        chosen = (coord.unsqueeze(0) + self.shifts).clamp_(-1 + BORDER_EPS, 1 - BORDER_EPS)
        return Codes(*nearest_index(chosen, len(self.row_centres), len(self.col_centres)))

    def predict(self, table: CodeTable, codes: Codes, coord: torch.Tensor, rel_cell: Optional[torch.Tensor],
                scratch: Optional[Scratch]) -> torch.Tensor:
        """Blend of the corners' MLP outputs: (N, q, out_dim)."""
        rel = (coord.unsqueeze(0) - torch.stack([self.row_centres[codes.row], self.col_centres[codes.col]], -1)) \
            * self.hw
        extra = rel if rel_cell is None else torch.cat([rel, rel_cell.unsqueeze(0).expand_as(rel)], dim=-1)
        extra = extra.reshape(-1, extra.shape[-1])
        flat = table.index(codes.row, codes.col)
        if scratch is None:
            pred = self.first_layer(table.rows(flat, None), extra)
            pred = self.layers.run(pred, None)
        else:
            pred_t = scratch.get('pred', (self.out_dim, flat.shape[0]), table.values)
            block = block_rows() if flat.device.type == 'cpu' else flat.shape[0]
            for b in range(0, flat.shape[0], block):
                x = self.first_layer(table.rows(flat[b:b + block], scratch), extra[b:b + block])
                self.layers.run(x, scratch, pred_t[:, b:b + block])
            pred = pred_t.t()
        pred = pred.float().view(*codes.row.shape, -1)
        return (pred * corner_weights(rel, self.local_ensemble).unsqueeze(-1)).sum(dim=0)

    def first_layer(self, x: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        """Gathered table rows x (M, D [+ ones column]) plus the offset / cell term extra (M, E), in place."""
        hidden = self.offset_weight.shape[0]
        x[:, :hidden].addmm_(extra.to(x.dtype), self.offset_weight.t().to(x.dtype))
        return x


def liif_query(model: nn.Module, feat: torch.Tensor, coord: torch.Tensor, cell: Optional[torch.Tensor],
               table_mb: float = DEFAULT_TABLE_MB, int8: bool = False) -> torch.Tensor:
    """LIIF's query through the per-code table of its first layer: (N, Q, out_dim), the same values up to rounding.

    int8: the hidden layers in dynamic int8 (Int8Layers; CPU inference without autocast only).
    """
    modules = mlp_layers(model.imnet)
    if int8:
        check_int8(feat, model.imnet.parameters())
    first = modules[0]
    _, c, h, w = feat.shape
    k = 3 if model.feat_unfold else 1
    hidden = first.out_features
    ncode = c * k * k
    plan = _LiifPlan(
        conv=TableConv(first.weight[:, :ncode].reshape(hidden, c, k, k), first.bias),
        passes=4 if model.local_ensemble else 1,
        out_dim=[m for m in modules if isinstance(m, nn.Linear)][-1].out_features,
        params=list(model.imnet.parameters()),
        layers=Int8Layers.of(modules[1:]) if int8 else Layers(modules[1:]),
        offset_weight=first.weight[:, ncode:],
        shifts=corner_shifts(h, w, model.local_ensemble, coord).view(-1, 1, 1, 2),
        row_centres=coord_seq(h, device=coord.device),
        col_centres=coord_seq(w, device=coord.device),
        hw=coord.new_tensor([h, w]),
        local_ensemble=model.local_ensemble)
    rel_cell = cell * plan.hw if model.cell_decode else None
    return _run(plan, feat, coord, rel_cell, table_mb)


# ---- MetaSR --------------------------------------------------------------------------------------

@dataclass
class _MetaSRPlan(_Plan):
    """MetaSR's last layer contracted with the code (the table); the layers before it run per query."""

    layers: Layers  # the MLP before its last layer
    row_corners: torch.Tensor  # the codes' top-left corner coordinates
    col_corners: torch.Tensor
    half_hw: torch.Tensor  # (h / 2, w / 2)

    def row_span(self, coord: torch.Tensor, cell: Optional[torch.Tensor]) -> Tuple[int, int]:
        """Rows of the codes of the topmost and bottommost query corners (the same float ops as choose)."""
        ends = torch.stack((coord[..., 0] - cell[..., 0] / 2).aminmax())
        return _rows_chosen((ends + BORDER_EPS).clamp_(-1 + BORDER_EPS, 1 - BORDER_EPS), len(self.row_corners))

    def choose(self, coord: torch.Tensor, cell: Optional[torch.Tensor]) -> Codes:
        """The code containing each query pixel's top-left corner (nudged inside): (N, q)."""
        chosen = (coord - cell / 2 + BORDER_EPS).clamp_(-1 + BORDER_EPS, 1 - BORDER_EPS)
        return Codes(*nearest_index(chosen, len(self.row_corners), len(self.col_corners)))

    def predict(self, table: CodeTable, codes: Codes, coord: torch.Tensor, cell: Optional[torch.Tensor],
                scratch: Optional[Scratch]) -> torch.Tensor:
        """code . weights(offset, scale) per query: (N, q, 3)."""
        p = table.gather(codes.row, codes.col, scratch)
        corner = coord - cell / 2
        rel = (corner - torch.stack([self.row_corners[codes.row], self.col_corners[codes.col]], -1)) * self.half_hw
        x = torch.cat([rel, cell[..., :1] * self.half_hw[0]], dim=-1).view(-1, 3)
        if scratch is not None:
            x = with_ones(x, scratch, 'input')
        hidden = self.layers.run(x, scratch).to(p.dtype)
        hid = hidden.shape[1]
        pred = torch.bmm(p[:, :3 * hid].view(-1, 3, hid), hidden.unsqueeze(-1)).squeeze(-1) + p[:, 3 * hid:]
        return pred.float().view(*codes.row.shape, 3)


def metasr_query(model: nn.Module, feat: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor,
                 table_mb: float = DEFAULT_TABLE_MB) -> torch.Tensor:
    """MetaSR's query with the last layer folded into a per-code table: (N, Q, 3)."""
    modules = mlp_layers(model.imnet)
    last = modules[-1]
    _, c, h, w = feat.shape
    hid = last.in_features
    # weights (viewed 9C x 3)[i, j] = W[3i + j] . hidden + b[3i + j]; contracted with code i over the
    # 3x3 block this is a conv with out channel j * hid + k (and 3 more for the bias)
    weight = last.weight.view(c, 9, 3, hid).permute(2, 3, 0, 1).reshape(3 * hid, c, 3, 3)
    bias = last.bias if last.bias is not None else last.weight.new_zeros(last.out_features)
    weight = torch.cat([weight, bias.view(c, 3, 3, 3).permute(3, 0, 1, 2)])
    plan = _MetaSRPlan(
        conv=TableConv(weight, None),
        passes=1,
        out_dim=3,
        params=list(model.imnet.parameters()),
        layers=Layers(modules[:-1]),
        row_corners=coord_seq(h, device=coord.device) - 1 / h,
        col_corners=coord_seq(w, device=coord.device) - 1 / w,
        half_hw=coord.new_tensor([h / 2, w / 2]))
    return _run(plan, feat, coord, cell, table_mb)
