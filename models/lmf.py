"""LMF, latent modulated functions (LMF.md): `lmliif` and `lmlte` with their render MLP `lmmlp`.

A hypernetwork runs once per latent (feature-map) pixel and gives a compressed latent code plus
per-layer scale and shift vectors; each query then only runs a tiny render MLP modulated by the
vectors of the latent pixel it reads, in LIIF's four-corner local ensemble.

Two ways to call a model, both exact (LMF.md):
- forward(inp, coord, cell[, inp_coord, bsize]) is the authors' forward. Their modulations pair
  latent pixel k (row-major) with the QUERY cell cell[:, k], so a call needs Q >= h*w queries, and
  lmlte with a batch of N > 1 needs Q == h*w exactly (both raise ValueError here, as the authors'
  code fails there). In eval mode the queries run in the authors' chunks (bsize, default 4147200);
  in train mode (their training routine) in one piece; the values are the same.
- encode(inp) -> state, then query(state, coord, cell) on any subset or chunking of any number of
  queries: each query's modulations are computed from ITS OWN cell. When every query of an image
  has the same cell (what the framework's inference and training data always give), the
  hypernetwork runs once per latent pixel the call reaches, with that cell; otherwise once per query
  and corner. For equal cells this is exactly the authors' result, with no h*w condition.
The authors' cached centre grid (which breaks a later call of another batch size) is not
reproduced: nothing is kept on the module between calls. CMSR (cmsr_spec) is not implemented.
ImplicitSR's query_mode switch has no effect here (there is one query path).
"""
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from models.fast_query import DEFAULT_TABLE_MB, rows_per_pass
from models.implicit import ImplicitSR
from models.lte import bilinear_skip, fourier_basis, window_of
from models.registry import make, register
from models.sampling import BORDER_EPS, corner_shifts, corner_weights, nearest_index
from utils.coord import coord_seq
from utils.errors import UserError
from utils.testtime import CELL_MAX_SCALE, TestTime

# the authors' eval-mode chunk of queries (int(2160 * 3840 * 0.5)): one 4K frame at x2
AUTHORS_BSIZE = 4147200
# latent pixels per hypernetwork pass of the map path: (4096 x ~1000) fp32 floats stay small
LATENT_ROWS_PER_PASS = 4096


@register('lmmlp')
class LMMLP(nn.Module):
    """The render MLP (LMF.md 'lmmlp'): hidden Linear l, then x * (1 + s_l) + t_l, then ReLU; output Linear unmodulated.

    Layers sit in `layers` (Linear at 2 l, ReLU at 2 l + 1, the output Linear at 2 depth), the
    authors' keys. A modulation row (mod_dim channels) holds all layers' scales first, then all
    shifts. use_conv makes each Linear a 1x1 convolution (the authors' (out, in, 1, 1) weights).
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int, hidden_depth: int, mod_scale: bool = True,
                 mod_shift: bool = True, mod_up_merge: bool = False, use_conv: bool = False):
        super().__init__()
        if mod_up_merge:
            raise UserError("lmmlp: mod_up_merge is not supported (lmliif and lmlte never use it)")
        if hidden_depth < 1:
            raise UserError(f"lmmlp: hidden_depth must be >= 1, got {hidden_depth}")
        linear = (lambda i, o: nn.Conv2d(i, o, 1)) if use_conv else nn.Linear
        modules: List[nn.Module] = []
        for depth in range(hidden_depth):
            modules += [linear(in_dim if depth == 0 else hidden_dim, hidden_dim), nn.ReLU()]
        modules.append(linear(hidden_dim, out_dim))
        self.layers = nn.Sequential(*modules)
        self.in_dim, self.out_dim, self.hidden_dim, self.hidden_depth = in_dim, out_dim, hidden_dim, hidden_depth
        self.mod_scale, self.mod_shift = mod_scale, mod_shift
        self.mod_dim = hidden_dim * hidden_depth * (int(mod_scale) + int(mod_shift))

    def forward(self, x: torch.Tensor, mod: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x (..., in_dim) with modulations mod (..., mod_dim) (None: unmodulated) -> (..., out_dim)."""
        lead = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1])
        if mod is not None:
            mod = mod.reshape(-1, mod.shape[-1])
        # one split instead of a slice per layer: under autograd each slice's backward fills a full-size zero tensor
        pieces = mod.split(self.hidden_dim, dim=-1) if mod is not None else ()
        shifts = self.hidden_depth if self.mod_scale else 0
        for depth in range(self.hidden_depth):
            x = _linear(self.layers[2 * depth], x)
            if mod is not None:
                # the authors' order: 1 added to the scale first, then multiply, then add the shift
                if self.mod_scale:
                    x = x * (pieces[depth] + 1.0)
                if self.mod_shift:
                    x = x + pieces[shifts + depth]
            x = torch.relu(x)
        return _linear(self.layers[-1], x).view(*lead, -1)


def _linear(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A Linear or 1x1 Conv2d applied to rows x (M, in)."""
    return F.linear(x, layer.weight.flatten(1), layer.bias)


@dataclass
class LMFState:
    """What query needs of a batch of images, built once by prepare (cell-independent).

    maps: lmliif the encoder's features (N, E, h, w), zero-padded by one pixel when unfolded;
    lmlte coef then freq on the channels (N, 2 hidden_dim, h, w). size: the latent (h, w).
    inp: the model input, for lmlte's bilinear skip (None for lmliif).
    """
    maps: torch.Tensor
    size: Tuple[int, int]
    inp: Optional[torch.Tensor] = None


class LatentModulated(ImplicitSR):
    """What lmliif and lmlte share: the latent stage (hypernetwork per latent pixel) and the render stage.

    Subclasses give the per-latent-pixel hypernetwork input (_rows_at), the hypernetwork's use of it
    (_latent_vectors: one row per latent pixel = modulations, then the render code) and the render
    MLP's input per corner (_render_input); see the module docstring for the two call paths.
    """

    # lmlte's authors' forward fails for a batch > 1 unless Q == h*w
    batch_needs_exact_hw = False

    def __init__(self, encoder_spec: Dict[str, Any], imnet_spec: Optional[Dict[str, Any]],
                 hypernet_spec: Optional[Dict[str, Any]], cmsr_spec: Optional[Dict[str, Any]]):
        super().__init__()
        name = type(self).__name__.lower()
        if imnet_spec is None or hypernet_spec is None:
            raise UserError(f"{name} needs both imnet_spec and hypernet_spec")
        if imnet_spec.get('name') != 'lmmlp':
            raise UserError(f"{name}: imnet_spec must be an 'lmmlp', not {imnet_spec.get('name')!r}")
        if cmsr_spec is not None:
            raise UserError(f"{name}: CMSR (cmsr_spec) is not supported")
        self.encoder_name = encoder_spec.get('name')
        self.encoder = make(encoder_spec)

    # ---- the framework's interface --------------------------------------------------------------

    def prepare(self, feat: torch.Tensor, inp: torch.Tensor) -> LMFState:
        """The cell-independent query state of feat (the modulations need the cell: query makes them)."""
        raise NotImplementedError

    def test_time(self) -> TestTime:
        """The authors' evaluation: cell enlarged beyond x4; window padding 8 for a SwinIR encoder."""
        return TestTime(cell_max_scale=CELL_MAX_SCALE, window=window_of(self.encoder_name))

    def query(self, state: LMFState, coord: torch.Tensor, cell: Optional[torch.Tensor] = None,
              table_mb: float = DEFAULT_TABLE_MB) -> torch.Tensor:
        """RGB (N, Q, 3) at coord (N, Q, 2) with cells (N, Q, 2), each query modulated from its own cell.

        table_mb bounds the modulation map of the latent pixels a call reaches; a call that would
        exceed it is split into halves of its queries (each reaching fewer pixels when the queries
        come in raster order).
        """
        if self.cell_decode and cell is None:
            raise ValueError(f"{type(self).__name__.lower()} with cell_decode needs the query cells")
        if coord.shape[1] == 0:
            return coord.new_empty(coord.shape[0], 0, self.imnet.out_dim)
        uniform = not self.cell_decode or bool((cell == cell[:, :1]).all())
        if not uniform:
            return self._render(state, None, None, coord, cell)
        return self._query_uniform(state, coord, cell, table_mb)

    # ---- the authors' forward ------------------------------------------------------------------

    def forward(self, inp: torch.Tensor, coord: Optional[torch.Tensor] = None, cell: Optional[torch.Tensor] = None,
                inp_coord: Optional[torch.Tensor] = None, bsize: Optional[int] = None) -> Optional[torch.Tensor]:
        """The authors' forward (LMF.md): latent pixel k modulated with cell[:, k]; (N, Q, 3).

        Needs Q >= h*w (lmlte with N > 1: Q == h*w). inp_coord (N, h, w, 2) replaces the latent
        centres. With coord and cell both None only the encoder runs (None is returned). Eval mode
        runs the queries in chunks of ceil(Q / ceil(Q / bsize)); train mode (the authors' training
        routine) all at once; the values are the same.
        """
        feat = self.features(inp)
        if coord is None and cell is None:
            return None
        state = self.prepare(feat, inp)
        n, q = coord.shape[:2]
        h, w = state.size
        rc = None
        if self.cell_decode:
            if q < h * w:
                raise ValueError(f"the authors' forward pairs the first h*w = {h * w} query cells with the "
                                 f"latent pixels: it needs at least that many queries, got {q} (use encode + query)")
            if self.batch_needs_exact_hw and n > 1 and q != h * w:
                raise ValueError(f"the authors' {type(self).__name__.lower()} forward takes a batch of {n} only "
                                 f"with exactly h*w = {h * w} queries, got {q} (use encode + query)")
            rc = cell[:, :h * w] * coord.new_tensor([h, w])
        latent = self._latent_map(state, (0, h, 0, w), rc)
        centres = None if inp_coord is None else inp_coord.reshape(n, h * w, 2)
        chunk = q if self.training else math.ceil(q / math.ceil(q / (bsize or AUTHORS_BSIZE)))
        return torch.cat([self._render(state, latent, (0, h, 0, w), coord[:, i:i + chunk],
                                       None if cell is None else cell[:, i:i + chunk], centres)
                          for i in range(0, q, chunk)], dim=1)

    # ---- subclass parts ---------------------------------------------------------------------------

    def _rows_at(self, state: LMFState, row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        """The hypernetwork's cell-independent input (N, R, C) at latent pixels (row, col), each (N, R)."""
        raise NotImplementedError

    def _window_rows(self, state: LMFState, window: Tuple[int, int, int, int]) -> torch.Tensor:
        """_rows_at every latent pixel of window (r0, r1, c0, c1), row-major: (N, R, C)."""
        r0, r1, c0, c1 = window
        n, device = state.maps.shape[0], state.maps.device
        row = torch.arange(r0, r1, device=device).repeat_interleave(c1 - c0).expand(n, -1)
        col = torch.arange(c0, c1, device=device).repeat(r1 - r0).expand(n, -1)
        return self._rows_at(state, row, col)

    def _latent_vectors(self, rows: torch.Tensor, rc: Optional[torch.Tensor]) -> torch.Tensor:
        """Per latent pixel (N, R, mod_dim + code): modulations then render code, from rows and scaled cells rc."""
        raise NotImplementedError

    def _render_input(self, code: torch.Tensor, rel: torch.Tensor, rc: Optional[torch.Tensor]) -> torch.Tensor:
        """The render MLP's input (N, q, in) from a corner's code, offset rel and scaled cell rc."""
        raise NotImplementedError

    def _skip(self, state: LMFState, coord: torch.Tensor) -> Optional[torch.Tensor]:
        """A term added to the blended prediction (lmlte's bilinear skip), or None."""
        return None

    # ---- the shared stages -------------------------------------------------------------------------

    def _latent_map(self, state: LMFState, window: Tuple[int, int, int, int],
                    rc: Optional[torch.Tensor]) -> torch.Tensor:
        """_latent_vectors of the window's latent pixels, row-major (N, R, D); rc (N, R or 1, 2) or None."""
        r0, r1, c0, c1 = window
        wc = c1 - c0
        step = max(1, LATENT_ROWS_PER_PASS // wc)
        parts = []
        for a in range(r0, r1, step):
            b = min(r1, a + step)
            part_rc = rc if rc is None or rc.shape[1] == 1 else rc[:, (a - r0) * wc:(b - r0) * wc]
            parts.append(self._latent_vectors(self._window_rows(state, (a, b, c0, c1)), part_rc))
        return torch.cat(parts, dim=1)

    def _query_uniform(self, state: LMFState, coord: torch.Tensor, cell: Optional[torch.Tensor],
                       table_mb: float) -> torch.Tensor:
        """query when each image's queries share one cell: one modulation map over the reached window."""
        h, w = state.size
        window = _reach(coord, h, w, self.local_ensemble)
        pixels = (window[1] - window[0]) * (window[3] - window[2]) * coord.shape[0]
        q = coord.shape[1]
        if pixels * self.latent_dim * 4 > table_mb * 2 ** 20 and q > rows_per_pass(coord.device):
            half = q // 2
            return torch.cat([self._query_uniform(state, coord[:, :half], _part(cell, 0, half), table_mb),
                              self._query_uniform(state, coord[:, half:], _part(cell, half, q), table_mb)], dim=1)
        rc = None if cell is None else cell[:, :1] * coord.new_tensor([h, w])
        return self._render(state, self._latent_map(state, window, rc), window, coord, cell)

    def _render(self, state: LMFState, latent: Optional[torch.Tensor], window: Optional[Tuple[int, int, int, int]],
                coord: torch.Tensor, cell: Optional[torch.Tensor],
                centres: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The render stage (LMF.md step 6) in passes of queries: (N, Q, 3).

        latent (N, R, D) holds the latent vectors of window (r0, r1, c0, c1); latent None computes
        them per query and corner from the query's own cell. centres (N, h*w, 2) replaces the
        latent pixel centres (the authors' inp_coord).
        """
        h, w = state.size
        device = coord.device
        hw = coord.new_tensor([h, w])
        rows, cols = coord_seq(h, device=device), coord_seq(w, device=device)
        shifts = corner_shifts(h, w, self.local_ensemble, coord)
        # half the fast path's MLP rows per pass: with 4 corners each pass runs 2x the rows (measured best)
        step = max(1, rows_per_pass(device) // 2)
        outs = []
        for i in range(0, coord.shape[1], step):
            xy = coord[:, i:i + step]
            rc = None if cell is None or not self.cell_decode else cell[:, i:i + step] * hw
            preds, rels = [], []
            for shift in shifts:
                row, col = nearest_index((xy + shift).clamp(-1 + BORDER_EPS, 1 - BORDER_EPS), h, w)
                if latent is None:
                    vec = self._latent_vectors(self._rows_at(state, row, col), rc)
                else:
                    r0, _, c0, c1 = window
                    vec = _gather_rows(latent, (row - r0) * (c1 - c0) + (col - c0))
                if centres is None:
                    centre = torch.stack([rows[row], cols[col]], dim=-1)
                else:
                    centre = _gather_rows(centres, row * w + col)
                rel = (xy - centre) * hw
                mod_dim = self.imnet.mod_dim
                preds.append(self.imnet(self._render_input(vec[..., mod_dim:], rel, rc), vec[..., :mod_dim]))
                rels.append(rel)
            weights = corner_weights(torch.stack(rels), self.local_ensemble)
            out = (torch.stack(preds) * weights.unsqueeze(-1)).sum(dim=0)
            skip = self._skip(state, xy)
            outs.append(out if skip is None else out + skip)
        return torch.cat(outs, dim=1)


def _part(cell: Optional[torch.Tensor], a: int, b: int) -> Optional[torch.Tensor]:
    return None if cell is None else cell[:, a:b]


def _gather_rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """table (N, R, C) at index (N, q): (N, q, C)."""
    n, r, c = table.shape
    # whole rows by index_select: ~5x faster than torch.gather's per-element index
    flat = index + torch.arange(0, n * r, r, device=index.device).unsqueeze(1) if n > 1 else index
    return table.reshape(n * r, c).index_select(0, flat.reshape(-1)).view(n, -1, c)


def _reach(coord: torch.Tensor, h: int, w: int, local_ensemble: bool) -> Tuple[int, int, int, int]:
    """(r0, r1, c0, c1): latent pixels that the corners of queries at coord can pick, with a margin.

    Conservative by one pixel on each side, so float rounding never leaves a picked pixel outside.
    """
    lo, hi = coord.reshape(-1, 2).amin(dim=0).tolist(), coord.reshape(-1, 2).amax(dim=0).tolist()
    bounds = []
    for axis, size in ((0, h), (1, w)):
        reach = 1 / size + BORDER_EPS if local_ensemble else 0.0
        s_lo, s_hi = max(lo[axis] - reach, -1.0), min(hi[axis] + reach, 1.0)
        first = math.floor(((s_lo + 1) * size - 1) / 2) - 1
        last = math.ceil(((s_hi + 1) * size - 1) / 2) + 1
        bounds += [min(max(first, 0), size - 1), min(max(last, 0), size - 1) + 1]
    return bounds[0], bounds[1], bounds[2], bounds[3]


@register('lmliif')
class LMLIIF(LatentModulated):
    """Latent-modulated LIIF (LMF.md 'lmliif').

    The hypernetwork sees [3x3-unfolded feature (9E), cell * (h, w)] per latent pixel and gives
    the modulations and (mod_input) a 16-channel latent code; the render MLP sees [code, offset *
    (h, w), cell * (h, w)]. No skip.
    """

    def __init__(self, encoder_spec: Dict[str, Any], imnet_spec: Optional[Dict[str, Any]] = None,
                 hypernet_spec: Optional[Dict[str, Any]] = None, local_ensemble: bool = True,
                 feat_unfold: bool = True, cell_decode: bool = True, mod_input: bool = False,
                 cmsr_spec: Optional[Dict[str, Any]] = None):
        super().__init__(encoder_spec, imnet_spec, hypernet_spec, cmsr_spec)
        self.local_ensemble, self.feat_unfold, self.cell_decode, self.mod_input = (
            local_ensemble, feat_unfold, cell_decode, mod_input)
        e = self.encoder.out_dim
        hd = imnet_spec['args']['hidden_dim']
        cells = 2 if cell_decode else 0
        render_in = (hd if mod_input else e) + 2 + cells
        imnet = make(imnet_spec, args={'in_dim': render_in, 'mod_up_merge': False})
        self.code_dim = hd if mod_input else 0
        self.hypernet = make(hypernet_spec, args={'in_dim': e * (9 if feat_unfold else 1) + cells,
                                                  'out_dim': imnet.mod_dim + self.code_dim})
        self.imnet = imnet
        self.latent_dim = imnet.mod_dim + (hd if mod_input else e)

    def prepare(self, feat: torch.Tensor, inp: torch.Tensor) -> LMFState:
        """The features, zero-padded by one pixel when unfolded (so every 3x3 neighbourhood is a gather)."""
        maps = F.pad(feat, (1, 1, 1, 1)) if self.feat_unfold else feat
        return LMFState(maps, (feat.shape[-2], feat.shape[-1]))

    def _rows_at(self, state: LMFState, row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        """The (unfolded) features at (row, col): (N, R, 9E), channel c*9 + k as LIIF's unfolding."""
        maps = state.maps
        n, e = maps.shape[:2]
        flat = maps.flatten(2)
        if not self.feat_unfold:
            return torch.gather(flat, 2, (row * maps.shape[-1] + col).unsqueeze(1).expand(n, e, -1)).transpose(1, 2)
        wp = maps.shape[-1]
        # padded pixel (row + dy, col + dx) is the unpadded neighbour (row + dy - 1, col + dx - 1)
        taps = [torch.gather(flat, 2, ((row + dy) * wp + col + dx).unsqueeze(1).expand(n, e, -1))
                for dy in range(3) for dx in range(3)]
        return torch.stack(taps, dim=-1).permute(0, 2, 1, 3).reshape(n, row.shape[1], e * 9)

    def _window_rows(self, state: LMFState, window: Tuple[int, int, int, int]) -> torch.Tensor:
        """The window's (unfolded) features by one unfold (a gather per tap is ~10x slower under autograd)."""
        r0, r1, c0, c1 = window
        if not self.feat_unfold:
            return state.maps[:, :, r0:r1, c0:c1].flatten(2).transpose(1, 2)
        return F.unfold(state.maps[:, :, r0:r1 + 2, c0:c1 + 2], 3).transpose(1, 2)

    def _latent_vectors(self, rows: torch.Tensor, rc: Optional[torch.Tensor]) -> torch.Tensor:
        """hypernet([rows, rc]); without mod_input the raw feature (the unfolding's centre tap) appended."""
        x = rows if rc is None else torch.cat([rows, rc.expand(-1, rows.shape[1], -1)], dim=-1)
        mod = self.hypernet(x)
        if self.mod_input:
            return mod
        return torch.cat([mod, rows[..., 4::9] if self.feat_unfold else rows], dim=-1)

    def _render_input(self, code: torch.Tensor, rel: torch.Tensor, rc: Optional[torch.Tensor]) -> torch.Tensor:
        """[code, rel, rc]."""
        return torch.cat([code, rel] + ([] if rc is None else [rc]), dim=-1)


@register('lmlte')
class LMLTE(LatentModulated):
    """Latent-modulated LTE (LMF.md 'lmlte').

    coef/freq 3x3 convs (E -> hidden_dim) and `phase` (2 -> hidden_dim/2) make the hypernetwork
    input coef * [cos(pi g), sin(pi g)], g = freq pair SUMS + phase(cell * (h, w)); with mod_input
    the hypernetwork also gives a 16-channel coef and freq for rendering, where `imphase`
    (2 -> 8) takes phase's place and the freq pairs multiply the offset. Plus the bilinear skip.
    """

    batch_needs_exact_hw = True

    def __init__(self, encoder_spec: Dict[str, Any], imnet_spec: Optional[Dict[str, Any]] = None,
                 hypernet_spec: Optional[Dict[str, Any]] = None, hidden_dim: int = 128,
                 local_ensemble: bool = True, cell_decode: bool = True, mod_input: bool = False,
                 cmsr_spec: Optional[Dict[str, Any]] = None):
        super().__init__(encoder_spec, imnet_spec, hypernet_spec, cmsr_spec)
        if hidden_dim % 2:
            raise UserError(f"lmlte: hidden_dim must be even, got {hidden_dim}")
        self.local_ensemble, self.cell_decode, self.mod_input = local_ensemble, cell_decode, mod_input
        self.hidden_dim = hidden_dim
        e = self.encoder.out_dim
        hd = imnet_spec['args']['hidden_dim']
        if hd % 2:
            raise UserError(f"lmlte: the lmmlp's hidden_dim must be even, got {hd}")
        # module order = the authors' state-dict order: coef, freq, phase, hypernet, imphase, imnet
        self.coef = nn.Conv2d(e, hidden_dim, 3, padding=1)
        self.freq = nn.Conv2d(e, hidden_dim, 3, padding=1)
        self.phase = nn.Linear(2, hidden_dim // 2, bias=False)
        imnet = make(imnet_spec, args={'in_dim': hd if mod_input else hidden_dim, 'mod_up_merge': False})
        self.code_dim = 2 * hd if mod_input else 0
        self.hypernet = make(hypernet_spec, args={'in_dim': hidden_dim, 'out_dim': imnet.mod_dim + self.code_dim})
        if mod_input:
            self.imphase = nn.Linear(2, hd // 2, bias=False)
        self.imnet = imnet
        self.latent_dim = imnet.mod_dim + (2 * hd if mod_input else 2 * hidden_dim)

    def prepare(self, feat: torch.Tensor, inp: torch.Tensor) -> LMFState:
        """coef and freq of feat, and the input for the skip."""
        return LMFState(torch.cat([self.coef(feat), self.freq(feat)], dim=1), (feat.shape[-2], feat.shape[-1]), inp)

    def _window_rows(self, state: LMFState, window: Tuple[int, int, int, int]) -> torch.Tensor:
        """[coef, freq] of the window's latent pixels by slicing."""
        r0, r1, c0, c1 = window
        return state.maps[:, :, r0:r1, c0:c1].flatten(2).transpose(1, 2)

    def _rows_at(self, state: LMFState, row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        """[coef, freq] at (row, col): (N, R, 2 hidden_dim)."""
        maps = state.maps
        index = (row * maps.shape[-1] + col).unsqueeze(1).expand(maps.shape[0], maps.shape[1], -1)
        return torch.gather(maps.flatten(2), 2, index).transpose(1, 2)

    def _latent_vectors(self, rows: torch.Tensor, rc: Optional[torch.Tensor]) -> torch.Tensor:
        """hypernet(coef * basis(freq pair sums + phase(rc))); without mod_input coef and freq appended."""
        k = self.hidden_dim
        coef, freq = rows[..., :k], rows[..., k:]
        g = freq.unflatten(-1, (k // 2, 2)).sum(dim=-1)
        if rc is not None:
            g = g + self.phase(rc)
        mod = self.hypernet(fourier_basis(coef, g))
        return mod if self.mod_input else torch.cat([mod, rows], dim=-1)

    def _render_input(self, code: torch.Tensor, rel: torch.Tensor, rc: Optional[torch.Tensor]) -> torch.Tensor:
        """coef * basis(freq pairs . rel + phase(rc)), from the hypernetwork's (or the convs') coef and freq."""
        half = code.shape[-1] // 2
        coef, freq = code[..., :half], code[..., half:]
        g = (freq.unflatten(-1, (half // 2, 2)) * rel.unsqueeze(-2)).sum(dim=-1)
        if rc is not None:
            g = g + (self.imphase if self.mod_input else self.phase)(rc)
        return fourier_basis(coef, g)

    def _skip(self, state: LMFState, coord: torch.Tensor) -> torch.Tensor:
        """Bilinear (border, align_corners False) sample of the input at coord: (N, q, 3)."""
        return bilinear_skip(state.inp, coord)
