"""LTE and LTE+ (Lee and Jin, CVPR 2022): LIIF's local ensemble over a Fourier basis of the offset (LTE.md).

At every feature pixel two 3x3 convs estimate amplitudes (coef) and 2-D frequencies (freq); a query
feeds its MLP coef * [cos(pi g), sin(pi g)] with g = freq . (scaled offset) + phase(scaled cell),
blends the four corners' predictions with LIIF's area weights and adds a bilinear upsampling of
the input. Both convs run once per image in prepare(); a query samples, builds the basis and runs
the MLP. The fast path (query_mode 'fast') does the same with integer gathers from channels-last
maps, in cache-sized chunks; the reference path follows LTE.md step by step.
"""
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from models import fast_query
from models.implicit import ImplicitSR
from models.registry import make, register
from models.sampling import BORDER_EPS, corner_shifts, corner_weights, nearest_index, sample_corners
from utils.coord import coord_seq, make_coord
from utils.testtime import CELL_MAX_SCALE, TestTime

# the authors evaluate SwinIR encoders on inputs mirrored to whole 8 x 8 windows plus one (LTE.md)
SWINIR_WINDOW = 8


@dataclass
class LteState:
    """What a query of one batch of images needs, built once by prepare()."""

    inp: torch.Tensor  # (N, 3, h_in, w_in), the model input, for the bilinear skip
    coef: torch.Tensor  # (N, D, h, w) amplitudes, channels_last
    freq: torch.Tensor  # (N, D, h, w) frequencies, channels_last
    centre_size: Tuple[int, int]  # the grid whose pixel centres the offsets are taken from (LTE.md, SwinIR quirk)


class _LteBase(ImplicitSR):
    """What lte and lte-fast share: encoder, coef / freq convs, phase, and the query on points."""

    # which freq channels of basis k multiply the row and column offsets: (2k, 2k + 1) if interleaved (lte),
    # else (k, K + k) (lte-fast)
    interleaved: bool

    def __init__(self, encoder_spec: Dict[str, Any], hidden_dim: int):
        super().__init__()
        if hidden_dim % 2:
            raise ValueError(f"hidden_dim must be even (cos and sin halves), got {hidden_dim}")
        self.encoder_name = encoder_spec['name']
        self.encoder = make(encoder_spec)
        e = self.encoder.out_dim
        self.coef = nn.Conv2d(e, hidden_dim, 3, padding=1)
        self.freq = nn.Conv2d(e, hidden_dim, 3, padding=1)
        self.phase = nn.Linear(2, hidden_dim // 2, bias=False)

    # ---- the interface ----

    def prepare(self, feat: torch.Tensor, inp: torch.Tensor) -> LteState:
        """The coef / freq maps of feat and the input for the skip: once per image."""
        cl = torch.channels_last
        return LteState(inp=inp, coef=self.coef(feat).contiguous(memory_format=cl),
                        freq=self.freq(feat).contiguous(memory_format=cl),
                        centre_size=self.centre_size(feat, inp))

    def test_time(self) -> TestTime:
        """The authors' evaluation: cell clip at x4; window 8 padding when the encoder is SwinIR."""
        return TestTime(cell_max_scale=CELL_MAX_SCALE, window=window_of(self.encoder_name))

    @property
    def query_bytes(self) -> int:
        """Rough peak bytes per query inside query (inference.bounded sizes its calls with it).

        The fast path works in fixed-size chunks; the reference path holds, for the four corners at
        once, the sampled coef and freq, the pair products, phases, basis, MLP input and activations.
        """
        if fast_query.check_query_mode(self.query_mode) == 'fast':
            return 128
        d = self.coef.out_channels
        widest = max(m.out_features for m in self.mlp() if not isinstance(m, nn.ReLU))
        return 4 * 4 * (6 * d + 3 * (d // 2) + 2 * widest + 16)

    def centre_size(self, feat: torch.Tensor, inp: torch.Tensor) -> Tuple[int, int]:
        """(rows, cols) of the grid whose pixel centres the offsets are measured from."""
        raise NotImplementedError

    def mlp(self) -> List[nn.Module]:
        """The MLP as Linear / ReLU modules (lte-fast's 1x1 convs viewed as Linear weights)."""
        raise NotImplementedError

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """The MLP on basis rows x (M, D): (M, out_dim)."""
        return fast_query.run_layers(x, self.mlp())

    def has_fast_path(self) -> bool:
        """Always: the basis and the MLP are built here."""
        return True

    def query_fast(self, state: LteState, coord: torch.Tensor, cell: torch.Tensor,
                   table_mb: float = fast_query.DEFAULT_TABLE_MB) -> torch.Tensor:
        """query with integer gathers from the channels-last maps, in chunks without autograd: (N, Q, 3).

        table_mb is not used: LTE has no per-code table (its per-code part, coef and freq, is the state).
        """
        plan = _FastPlan.of(self, state, coord)
        n, q = coord.shape[:2]
        if q == 0 or n == 0:
            return coord.new_zeros(n, q, plan.out_dim)
        if torch.is_grad_enabled():
            out = plan.predict(coord, cell, None)
        else:
            # in-place buffers would escape autocast's casts
            scratch = None if fast_query.autocast_enabled(coord.device) else fast_query.Scratch()
            step = max(1, fast_query.rows_per_pass(coord.device) // (4 * n))
            out = coord.new_empty(n, q, plan.out_dim)
            for i in range(0, q, step):
                out[:, i:i + step] = plan.predict(coord[:, i:i + step], cell[:, i:i + step], scratch)
        return out + bilinear_skip(state.inp, coord)

    def query_reference(self, state: LteState, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """LTE.md's query, step by step: (N, Q, 3)."""
        h, w = state.coef.shape[-2:]
        n = coord.shape[0]
        hw = coord.new_tensor([h, w])
        # the four corners stacked first: (4, N, Q, .)
        chosen = (coord + corner_shifts(h, w, True, coord).view(-1, 1, 1, 2)).clamp(-1 + BORDER_EPS, 1 - BORDER_EPS)
        centres = make_coord(state.centre_size, flatten=False, device=coord.device).permute(2, 0, 1)
        centres = centres.unsqueeze(0).expand(n, -1, -1, -1)
        rel = (coord - sample_corners(centres, chosen)) * hw
        amp = sample_corners(state.coef, chosen)
        freq = sample_corners(state.freq, chosen)
        k = freq.shape[-1] // 2
        pairs = freq.view(*freq.shape[:-1], k, 2) if self.interleaved \
            else freq.view(*freq.shape[:-1], 2, k).transpose(-1, -2)
        g = (pairs * rel.unsqueeze(-2)).sum(dim=-1) + F.linear(cell * hw, self.phase.weight)
        preds = self.decode(fourier_basis(amp, g).reshape(-1, 2 * k)).view(*rel.shape[:-1], -1)
        out = (preds * corner_weights(rel, True).unsqueeze(-1)).sum(dim=0)
        return out + bilinear_skip(state.inp, coord)


def window_of(encoder_name: str) -> Optional[int]:
    """The window padding the authors evaluate an encoder with (registry name): 8 for SwinIR, else none."""
    return SWINIR_WINDOW if encoder_name == 'swinir' else None


def fourier_basis(amp: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """amp * [cos(pi g), sin(pi g)] (cosines first) of g = phase, pi multiplied in g's dtype (LTE.md steps 6-7)."""
    # the reference basis of both LTE and LMF: one product pi * g (a Python scalar, so float32 for float32 g)
    # feeds both cos and sin, exactly the values the two separate products pi * g gave
    g = math.pi * phase
    return amp * torch.cat([torch.cos(g), torch.sin(g)], dim=-1)


def bilinear_skip(inp: torch.Tensor, coord: torch.Tensor) -> torch.Tensor:
    """inp (N, C, h, w) bilinearly sampled at coord (N, Q, 2), border padding: (N, Q, C)."""
    out = F.grid_sample(inp, coord.flip(-1).unsqueeze(1), mode='bilinear', padding_mode='border',
                        align_corners=False)
    return out[:, :, 0].permute(0, 2, 1)


@dataclass
class _FastPlan:
    """One fast query call: the flattened maps, the MLP and the constants of the feature grid."""

    coef: torch.Tensor  # (N h w, D)
    freq: torch.Tensor  # (N h w, D), channels permuted so that the row frequencies come first
    phase: torch.Tensor  # (K, 2)
    layers: fast_query.Layers
    shifts: torch.Tensor  # (4, 1, 1, 2)
    size: Tuple[int, int]  # feature (h, w)
    centre_size: Tuple[int, int]
    row_centres: torch.Tensor
    col_centres: torch.Tensor
    hw: torch.Tensor
    out_dim: int

    @classmethod
    def of(cls, model: _LteBase, state: LteState, coord: torch.Tensor) -> '_FastPlan':
        """The plan of model's query of state."""
        n, d, h, w = state.coef.shape
        coef = state.coef.permute(0, 2, 3, 1).reshape(-1, d)
        freq = state.freq.permute(0, 2, 3, 1).reshape(-1, d)
        if model.interleaved:  # pairs (2k, 2k + 1) -> halves (k, K + k): one strided copy per call
            freq = freq.view(-1, d // 2, 2).transpose(1, 2).reshape(-1, d)
        layers = model.mlp()
        hc, wc = state.centre_size
        return cls(coef=coef, freq=freq, phase=model.phase.weight, layers=fast_query.Layers(layers),
                   shifts=corner_shifts(h, w, True, coord).view(-1, 1, 1, 2), size=(h, w),
                   centre_size=(hc, wc), row_centres=coord_seq(hc, device=coord.device),
                   col_centres=coord_seq(wc, device=coord.device), hw=coord.new_tensor([h, w]),
                   out_dim=layers[-1].out_features)

    def predict(self, coord: torch.Tensor, cell: torch.Tensor,
                scratch: Optional[fast_query.Scratch]) -> torch.Tensor:
        """The corner blend (without the skip) of a chunk of queries coord (N, q, 2): (N, q, out_dim).

        With scratch (no autograd, no autocast) every wide tensor is a reused buffer written in place.
        """
        h, w = self.size
        n, q = coord.shape[:2]
        chosen = (coord.unsqueeze(0) + self.shifts).clamp_(-1 + BORDER_EPS, 1 - BORDER_EPS)
        row, col = nearest_index(chosen, h, w)
        if self.centre_size == self.size:
            crow, ccol = row, col
        else:
            crow, ccol = nearest_index(chosen, *self.centre_size)
        rel = (coord.unsqueeze(0) - torch.stack([self.row_centres[crow], self.col_centres[ccol]], -1)) * self.hw
        images = torch.arange(n, device=coord.device).view(1, n, 1)
        flat = ((images * h + row) * w + col).view(-1)
        d = self.coef.shape[1]
        k = d // 2
        rows = flat.shape[0]
        rel_row, rel_col = rel.reshape(-1, 2).split(1, dim=1)
        phase = F.linear(cell * self.hw, self.phase).reshape(1, n * q, k)  # the same for the four corners
        if scratch is None:
            amp = self.coef.index_select(0, flat)
            freq = self.freq.index_select(0, flat)
            g = torch.addcmul(freq[:, :k] * rel_row, freq[:, k:], rel_col)
            g = ((g.view(4, n * q, k) + phase) * math.pi).view(rows, k)
            x = torch.cat([torch.cos(g), torch.sin(g)], dim=1) * amp
        else:
            amp = torch.index_select(self.coef, 0, flat, out=scratch.get('amp', (rows, d), self.coef))
            freq = torch.index_select(self.freq, 0, flat, out=scratch.get('freq', (rows, d), self.freq))
            g = freq[:, :k].mul_(rel_row).addcmul_(freq[:, k:], rel_col)
            g.view(4, n * q, k).add_(phase)
            g.mul_(math.pi)
            x = fast_query.ones_buffer(scratch, 'basis', rows, d, amp)
            torch.cos(g, out=x[:, :k])
            torch.sin(g, out=x[:, k:d])
            x[:, :d].mul_(amp)
        pred = self.layers.run(x, scratch).view(4, n, q, -1)
        return (pred * corner_weights(rel, True).unsqueeze(-1)).sum(dim=0)


@register('lte')
class LTE(_LteBase):
    """LTE with an MLP decoder (LTE.md, 'lte'): frequencies paired (2k, 2k + 1), offsets from the INPUT grid."""

    interleaved = True

    def __init__(self, encoder_spec: Dict[str, Any], imnet_spec: Optional[Dict[str, Any]] = None,
                 hidden_dim: int = 256):
        super().__init__(encoder_spec, hidden_dim)
        if imnet_spec is None:
            raise ValueError("lte needs an imnet_spec (its MLP decoder)")
        self.imnet = make(imnet_spec, args={'in_dim': hidden_dim})
        if fast_query.mlp_layers(self.imnet) is None:
            raise ValueError("lte's imnet must be a Linear / ReLU stack ('mlp')")

    def centre_size(self, feat: torch.Tensor, inp: torch.Tensor) -> Tuple[int, int]:
        """The input's size: for a padding encoder (SwinIR) it differs from the feature map's (LTE.md)."""
        return tuple(inp.shape[-2:])

    def mlp(self) -> List[nn.Module]:
        """imnet's Linear / ReLU modules."""
        return fast_query.mlp_layers(self.imnet)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """imnet on basis rows x (M, D)."""
        return self.imnet(x)


@dataclass
class _Conv1x1Linear:
    """A 1x1 convolution (LTE+'s checkpoints hold (out, in, 1, 1) weights) seen as the Linear layer it is."""

    conv: nn.Conv2d

    @property
    def weight(self) -> torch.Tensor:
        """(out, in)."""
        return self.conv.weight.flatten(1)

    @property
    def bias(self) -> Optional[torch.Tensor]:
        """(out,)."""
        return self.conv.bias

    @property
    def out_features(self) -> int:
        """Output width."""
        return self.conv.out_channels


@register('lte-fast')
class LTEFast(_LteBase):
    """LTE+ (LTE.md, 'lte-fast'): 1x1-conv MLP, frequencies in halves, offsets from the feature grid.

    The authors' forward takes a grid of queries with one cell per image; every output depends
    only on its own query, so query() on points gives the same values.
    """

    interleaved = False
    query_layout = 'grid'

    def __init__(self, encoder_spec: Dict[str, Any], num_layer: int = 3, hidden_dim: int = 256, out_dim: int = 3):
        super().__init__(encoder_spec, hidden_dim)
        modules: List[nn.Module] = []
        for _ in range(num_layer):
            modules += [nn.Conv2d(hidden_dim, hidden_dim, 1), nn.ReLU()]
        modules.append(nn.Conv2d(hidden_dim, out_dim, 1))
        self.layers = nn.Sequential(*modules)

    def centre_size(self, feat: torch.Tensor, inp: torch.Tensor) -> Tuple[int, int]:
        """The feature map's size."""
        return tuple(feat.shape[-2:])

    def mlp(self) -> List[nn.Module]:
        """The 1x1 convs as Linear-like modules (views of the same weights), ReLUs as they are."""
        return [_Conv1x1Linear(m) if isinstance(m, nn.Conv2d) else m for m in self.layers]

    def query_rgb(self, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """The authors' layout: coord (N, H, W, 2), cell (N, 2) -> (N, out_dim, H, W), of the last gen_feat."""
        if self.feat is None:
            raise RuntimeError("query_rgb needs a feature map: call gen_feat(inp) first")
        return self.query_grid(self.feat, coord, cell)

    def query_grid(self, state: LteState, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """query in the authors' layout: coord (N, H, W, 2), one cell (N, 2) per image -> (N, out_dim, H, W)."""
        n, hq, wq = coord.shape[:3]
        points = coord.reshape(n, hq * wq, 2)
        out = self.query(state, points, cell.unsqueeze(1).expand_as(points))
        return out.view(n, hq, wq, -1).permute(0, 3, 1, 2)

    def forward(self, inp: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """The authors' forward: coord (N, H, W, 2), cell (N, 2) -> (N, out_dim, H, W); stores nothing."""
        return self.query_grid(self.encode(inp), coord, cell)
