"""Exact fast query paths for LIIF and MetaSR: the per-code part of the MLP as a convolution.

LIIF's first layer applied to a code's unfolded 3x3 block is a 3x3 convolution of the feature map
(unfold's channel order c*9 + k is conv2d's (out, in, kh, kw) weight layout), so it is computed
once per code instead of once per query and shift; each query gathers its code's row by integer
index and adds the tiny coordinate / cell term. MetaSR's last layer contracted with the code is
likewise a convolution, leaving per query only the 3 -> 256 layer and a 256 x 3 dot product.
Only float rounding differs from the reference path.
"""
import contextlib
import weakref
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from models.sampling import nearest_index
from utils.coord import coord_seq

QUERY_MODES = ('fast', 'reference')
# MLP rows per pass without autograd: (8192 x 256) fp32 activations stay in L2/L3, and a
# (8192 x 256) @ (256 x 256) product already runs at ~90% of the sgemm peak on a 2-core AVX-512 CPU
ROWS_PER_PASS = 8192
# on a GPU a pass must be large enough to hide the per-op launch cost of ~40 small ops per chunk
GPU_ROWS_PER_PASS = 1 << 17
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


def run_layers(x: torch.Tensor, layers: Sequence[nn.Module], buffers: Optional['Workspace'] = None,
               ones_column: bool = False) -> torch.Tensor:
    """Apply Linear/ReLU layers to x (M, K) with addmm and in-place ReLU.

    With `buffers` (inference), activations go to two reused buffers: a fresh multi-MB tensor per
    layer and chunk costs page faults that slowed the CPU query stage by ~30%. Those buffers carry
    a trailing column of ones so that each bias is one more row of the weight matrix instead of a
    separate pass over the activations (~5%); `ones_column` says x comes with one (K + 1 columns).
    """
    if buffers is None:
        for m in layers:
            if isinstance(m, nn.ReLU):
                x = x.relu_()
            elif m.bias is None:
                x = torch.mm(x, m.weight.t())
            else:
                x = torch.addmm(m.bias, x, m.weight.t())
        return x[:, :-1] if ones_column else x
    n_linear = 0
    for i, m in enumerate(layers):
        if isinstance(m, nn.ReLU):
            x = x.relu_()  # the ones column stays 1
            continue
        last = i + 1 == len(layers)
        if ones_column:
            bias = m.bias if m.bias is not None else m.weight.new_zeros(m.out_features)
            weight = torch.cat([m.weight.t(), bias.view(1, -1)]).to(x.dtype)
        out = None
        if not last:  # the small last output is allocated
            y = buffers.get(f'act{n_linear % 2}', (x.shape[0], m.out_features + 1), x)
            y[:, -1].fill_(1)
            out = y[:, :-1]  # a BLAS-compatible strided view: the product is written in place
        n_linear += 1
        if ones_column:
            res = torch.mm(x, weight, out=out)
        elif m.bias is not None:
            res = torch.addmm(m.bias, x, m.weight.t(), out=out)
        else:
            res = torch.mm(x, m.weight.t(), out=out)
        x, ones_column = (res, False) if last else (y, True)
    return x[:, :-1] if ones_column else x


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


class Workspace:
    """Named scratch tensors reused across chunks and calls (grown when a larger one is asked for)."""

    def __init__(self):
        self._bufs = {}

    def get(self, name: str, shape: Tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """A tensor of `shape` with like's dtype and device (contents undefined)."""
        numel = 1
        for d in shape:
            numel *= d
        buf = self._bufs.get(name)
        if buf is None or buf.numel() < numel or buf.dtype != like.dtype or buf.device != like.device:
            buf = self._bufs[name] = torch.empty(numel, dtype=like.dtype, device=like.device)
        return buf[:numel].view(shape)

    def clear(self) -> None:
        """Free every buffer."""
        self._bufs = {}


def conv_rows(feat: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
              r0: int, r1: int) -> torch.Tensor:
    """Zero-padded 'same' convolution of feat (N, C, h, w), output rows r0..r1 only: (N, r1 - r0, w, D)."""
    h = feat.shape[2]
    p = weight.shape[-1] // 2
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
        out = F.conv2d(src.contiguous(memory_format=torch.channels_last), weight, bias, padding=pad)
    return out.permute(0, 2, 3, 1).contiguous()


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


class CodeTable:
    """Per-code rows of a convolution of the current feature map, for a window of feature rows.

    Reused across query_rgb calls while the feature map, the weights (by tensor version) and the
    autocast state are unchanged. Never used when autograd records: training builds it inside the
    graph on every call instead.
    """

    def __init__(self, budget_mb: float = DEFAULT_TABLE_MB):
        self.budget_mb = budget_mb
        self.workspace = Workspace()
        self.clear()

    def clear(self) -> None:
        """Forget the table (the feature map changed) and free the scratch buffers."""
        self._feat_ref, self._key, self.table, self.r0, self.r1 = None, None, None, 0, 0
        self.workspace.clear()

    def rows(self, feat: torch.Tensor, weight_fn, params: Sequence[torch.Tensor], need: Tuple[int, int],
             cache: bool, ones_column: bool = False) -> Tuple[torch.Tensor, int]:
        """(table (N * rows * w, D), first row) covering feature rows need[0]..need[1] (exclusive end).

        weight_fn(ones_column) gives the convolution's (weight, bias).
        """
        n, _, h, w = feat.shape
        key = (feat._version, tuple(p._version for p in params), _autocast_state(feat.device), ones_column)
        if cache and self._feat_ref is not None and self._feat_ref() is feat and self._key == key \
                and self.r0 <= need[0] and need[1] <= self.r1:
            return self.table, self.r0
        self.table = None  # free the old table before building the next one
        weight, bias = weight_fn(ones_column)
        per_row = n * w * weight.shape[0] * 4
        budget_rows = int(self.budget_mb * 2 ** 20 // per_row)
        r0, r1 = (0, h) if budget_rows >= h else (need[0], min(h, max(need[1], need[0] + budget_rows)))
        table = conv_rows(feat, weight, bias, r0, r1).view(-1, weight.shape[0])
        if cache:
            self._feat_ref, self._key, self.table, self.r0, self.r1 = weakref.ref(feat), key, table, r0, r1
        return table, r0

    def full_fits(self, feat: torch.Tensor, channels: int) -> bool:
        """Whether a table of all rows fits the budget (then no per-chunk row range is needed)."""
        n, _, h, w = feat.shape
        return n * h * w * channels * 4 <= self.budget_mb * 2 ** 20


def _autocast_state(device: torch.device) -> Tuple[bool, Optional[torch.dtype]]:
    kind = device.type
    try:
        if torch.is_autocast_enabled(kind):
            return True, torch.get_autocast_dtype(kind)
    except (TypeError, AttributeError):  # torch < 2.4: per-device functions
        if kind == 'cpu' and torch.is_autocast_cpu_enabled():
            return True, torch.get_autocast_cpu_dtype()
        if kind == 'cuda' and torch.is_autocast_enabled():
            return True, torch.get_autocast_gpu_dtype()
    return False, None


def rows_per_pass(device: torch.device) -> int:
    """MLP rows per chunk on `device`."""
    return ROWS_PER_PASS if device.type == 'cpu' else GPU_ROWS_PER_PASS


def _records_grad(feat: torch.Tensor, params: Sequence[torch.Tensor]) -> bool:
    return torch.is_grad_enabled() and (feat.requires_grad or any(p.requires_grad for p in params))


def _row_window(rows: torch.Tensor, h: int, full: bool) -> Tuple[int, int]:
    if full:
        return 0, h
    return int(rows.min()), int(rows.max()) + 1


def _gather(table: torch.Tensor, r0: int, tab_rows: int, w: int, row: torch.Tensor,
            col: torch.Tensor, buffers: Optional[Workspace]) -> torch.Tensor:
    """Rows of table (N * tab_rows * w, D) for codes (row, col) of shape (..., N, q)."""
    n = torch.arange(row.shape[-2], device=row.device).view(-1, 1)
    flat = ((n * tab_rows + (row - r0)) * w + col).reshape(-1)
    out = None if buffers is None else buffers.get('gather', (flat.shape[0], table.shape[1]), table)
    return torch.index_select(table, 0, flat, out=out)


# ---- LIIF ------------------------------------------------------------------------------------

def liif_query(model: nn.Module, coord: torch.Tensor, cell: Optional[torch.Tensor]) -> torch.Tensor:
    """LIIF.query_rgb through the per-code convolution table: (N, Q, out_dim), same values up to rounding."""
    feat = model.feat
    layers = mlp_layers(model.imnet)
    first = layers[0]
    params = [first.weight] + ([first.bias] if first.bias is not None else [])
    n, c, h, w = feat.shape
    k = 3 if model.feat_unfold else 1
    ncode = c * k * k
    hidden = first.weight.shape[0]

    def table_weights(ones_column: bool):
        weight = first.weight[:, :ncode].reshape(hidden, c, k, k)
        bias = first.bias if first.bias is not None else weight.new_zeros(hidden)
        if ones_column:  # one more output channel that is exactly 1 (zero filter, bias 1)
            weight = torch.cat([weight, weight.new_zeros(1, c, k, k)])
            bias = torch.cat([bias, bias.new_ones(1)])
        return weight, bias

    if model.local_ensemble:
        shifts = [(vx * (2 / h / 2) + 1e-6, vy * (2 / w / 2) + 1e-6) for vx in (-1, 1) for vy in (-1, 1)]
    else:
        shifts = [(0.0, 0.0)]
    shift = torch.tensor(shifts, dtype=coord.dtype, device=coord.device).view(-1, 1, 1, 2)
    row_c, col_c = coord_seq(h, device=coord.device), coord_seq(w, device=coord.device)
    hw = torch.tensor([h, w], dtype=coord.dtype, device=coord.device)
    rel_cell = cell * hw if model.cell_decode else None
    w_extra = first.weight[:, ncode:]

    def query(crd: torch.Tensor, rcell: Optional[torch.Tensor], table_for) -> torch.Tensor:
        # the same float32 operations as the reference, so the chosen codes and rel are bit-identical
        crd_ = (crd.unsqueeze(0) + shift).clamp_(-1 + 1e-6, 1 - 1e-6)
        row, col = nearest_index(crd_, h, w)
        table, r0, tab_rows, buffers = table_for(row)
        x = _gather(table, r0, tab_rows, w, row, col, buffers)
        ones = x.shape[1] > hidden  # the inference table's ones column (see run_layers)
        rel = crd.unsqueeze(0) - torch.stack([row_c[row], col_c[col]], dim=-1)
        rel[..., 0] *= h
        rel[..., 1] *= w
        extra = rel if rcell is None else torch.cat([rel, rcell.unsqueeze(0).expand_as(rel)], dim=-1)
        x[:, :hidden].addmm_(extra.reshape(-1, extra.shape[-1]).to(x.dtype), w_extra.t().to(x.dtype))
        if buffers is None and torch.is_grad_enabled():
            pred = run_layers_split(x, layers[1:], rows_per_pass(x.device))
        else:
            pred = run_layers(x, layers[1:], buffers, ones_column=ones)
        pred = pred.float().view(*row.shape, -1)
        areas = torch.abs(rel[..., 0] * rel[..., 1]) + 1e-9
        tot_area = areas.sum(dim=0)
        if model.local_ensemble:
            areas = areas.flip(0)  # weight each prediction by the area towards the opposite code
        ret = pred[0] * (areas[0] / tot_area).unsqueeze(-1)
        for i in range(1, len(pred)):
            ret = ret + pred[i] * (areas[i] / tot_area).unsqueeze(-1)
        return ret

    return _chunked(model, params, table_weights, hidden, len(shifts), coord, rel_cell, query,
                    ones_column=len(layers) > 1)


def _chunked(model: nn.Module, params: Sequence[torch.Tensor], table_weights, channels: int, passes: int,
             coord: torch.Tensor, extra: Optional[torch.Tensor], query, ones_column: bool = False) -> torch.Tensor:
    """Run query(coord chunk, extra chunk, table_for) over coord (N, Q, 2): one pass with autograd, else chunks.

    params: the tensors the table is computed from (its cache key); ones_column: the inference
    table may carry one (for run_layers).
    """
    codes, feat = model._codes, model.feat
    n, _, h, _ = feat.shape
    if _records_grad(feat, list(model.imnet.parameters())):
        def table_in_graph(row):
            table, r0 = codes.rows(feat, table_weights, params, (0, h), cache=False)
            return table, r0, h, None
        return query(coord, extra, table_in_graph)

    full = codes.full_fits(feat, channels)
    # out= buffers do not mix with autocast (it would not cast them); the GPU allocator is cheap anyway
    buffers = None if _autocast_state(feat.device)[0] else codes.workspace

    def cached_table(row):
        lo, hi = _row_window(row, h, full)
        table, r0 = codes.rows(feat, table_weights, params, (lo, hi), cache=True,
                               ones_column=ones_column and buffers is not None)
        return table, r0, codes.r1 - codes.r0, buffers

    q = coord.shape[1]
    step = max(1, rows_per_pass(feat.device) // (passes * n))
    if q <= step:
        return query(coord, extra, cached_table)
    out = None
    for i in range(0, q, step):
        part = query(coord[:, i:i + step], None if extra is None else extra[:, i:i + step], cached_table)
        if out is None:
            out = part.new_empty(n, q, part.shape[-1])
        out[:, i:i + step] = part
    return out


# ---- MetaSR ----------------------------------------------------------------------------------

def metasr_query(model: nn.Module, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
    """MetaSR.query_rgb with the last layer folded into a per-code table: (N, Q, 3)."""
    feat = model.feat
    layers = mlp_layers(model.imnet)
    last = layers[-1]
    params = [last.weight] + ([last.bias] if last.bias is not None else [])
    n, c, h, w = feat.shape
    hid = last.weight.shape[1]
    channels = 3 * hid + 3

    def table_weights(ones_column: bool):
        # weights(view 9C x 3)[i, j] = W[3i + j] . hidden + b[3i + j]; contracted with code i over the
        # 3x3 block this is a conv with out channel j * hid + k (and 3 more for the bias)
        wt = last.weight.view(c, 9, 3, hid).permute(2, 3, 0, 1).reshape(3 * hid, c, 3, 3)
        if last.bias is not None:
            wt = torch.cat([wt, last.bias.view(c, 3, 3, 3).permute(3, 0, 1, 2)], dim=0)
        else:
            wt = torch.cat([wt, wt.new_zeros(3, c, 3, 3)], dim=0)
        return wt, None

    row_c = coord_seq(h, device=coord.device) - (2 / h) / 2
    col_c = coord_seq(w, device=coord.device) - (2 / w) / 2

    def query(crd: torch.Tensor, cll: torch.Tensor, table_for) -> torch.Tensor:
        crd_ = crd.clone()
        crd_[:, :, 0] -= cll[:, :, 0] / 2
        crd_[:, :, 1] -= cll[:, :, 1] / 2
        row, col = nearest_index((crd_ + 1e-6).clamp(-1 + 1e-6, 1 - 1e-6), h, w)
        table, r0, tab_rows, buffers = table_for(row)
        p = _gather(table, r0, tab_rows, w, row, col, buffers)
        rel = crd_ - torch.stack([row_c[row], col_c[col]], dim=-1)
        rel[:, :, 0] *= h / 2
        rel[:, :, 1] *= w / 2
        r_rev = cll[:, :, 0] * (h / 2)
        x = torch.cat([rel, r_rev.unsqueeze(-1)], dim=-1).view(-1, 3)
        hidden = run_layers(x, layers[:-1], buffers).to(p.dtype)
        pred = torch.bmm(p[:, :3 * hid].view(-1, 3, hid), hidden.unsqueeze(-1)).squeeze(-1) + p[:, 3 * hid:]
        return pred.float().view(*row.shape, 3)

    return _chunked(model, params, table_weights, channels, 1, coord, cell, query)
