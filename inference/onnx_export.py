"""ONNX graphs of an implicit SR model: its encoder and its reference query, with dynamic sizes.

The query graphs compute models/liif.py's and models/metasr.py's query_reference with the same
float32 arithmetic, except that every number derived from the feature map's size (pixel-centre
coordinates, corner shifts, h and w themselves) is computed from the graph's input shape instead of
being a Python number, which tracing would freeze into a constant of the example size. Numbers the
reference forms in double precision (coord_seq's step, 1 / h, the corner shifts) are formed in
double here too and rounded to float32 once, as the reference's scalars are. The nearest code is
chosen by ONNX GridSample (opset 16+), which rounds as torch's grid_sample does.
"""
import json
import os
import shutil
import tempfile
import warnings
from typing import Any, Dict

import torch
from torch import nn

from inference.onnx_runner import MANIFEST_FILE
from models.liif import LIIF
from models.metasr import MetaSR
from models.sampling import BORDER_EPS, corner_weights, sample_corners, sample_nearest, unfold3x3
from utils.errors import UserError
from utils.norm import DataNorm

OPSET = 17  # GridSample needs 16
ENCODER_FILE = 'encoder.onnx'
QUERY_FILE = 'query.onnx'
FORMAT_VERSION = 1


def _double(v: float) -> torch.Tensor:
    """v as a 1-element float64 tensor. The TorchScript exporter types 0-dim tensors and Python numbers as
    float32 scalars, which made 1 / h of a double h come out in float32; 1-element tensors keep their dtype."""
    return torch.full((1,), v, dtype=torch.float64)


def _coord_seq(feat: torch.Tensor, dim: int) -> torch.Tensor:
    """utils.coord.coord_seq of feat's size along dim, traced: the step in double, then float32 as the
    reference's Python scalars."""
    n = torch._shape_as_tensor(feat)[dim:dim + 1].double()
    r = _double(1) / n  # (1 - (-1)) / (2 n), exactly
    return (r - _double(1)).float() + (r + r).float() * torch.arange(feat.shape[dim]).float()


def map_centres(feat: torch.Tensor) -> torch.Tensor:
    """make_coord((h, w)) of feat's map, channel-first and batched like feat: (N, 2, h, w)."""
    rows, cols = _coord_seq(feat, 2), _coord_seq(feat, 3)
    grid = torch.stack([rows.view(-1, 1) + 0 * cols.view(1, -1), 0 * rows.view(-1, 1) + cols.view(1, -1)])
    return grid.unsqueeze(0).expand(feat.shape[0], -1, -1, -1)


def _hw(feat: torch.Tensor) -> torch.Tensor:
    """(h, w) of feat's map as float32 (coord.new_tensor([h, w]) in the reference)."""
    return torch._shape_as_tensor(feat)[2:].float()


class EncoderGraph(nn.Module):
    """The encoder alone: (N, 3, h, w) normalised image -> (N, C, h, w) feature map."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.encoder = model.encoder

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        """The feature map of inp."""
        return self.encoder(inp)


def map_code_corners(feat: torch.Tensor) -> torch.Tensor:
    """Each code's pixel corner, as MetaSR.query_reference forms it (centre less fp32(1 / h), fp32(1 / w))."""
    return map_centres(feat) - (_double(1) / _hw(feat).double()).float().view(1, 2, 1, 1)


# directions of the local ensemble's four corners, in models.sampling.corner_shifts' order
CORNER_SIGNS = torch.tensor([[-1, -1], [-1, 1], [1, -1], [1, 1]], dtype=torch.float64)


def map_corner_shifts(feat: torch.Tensor, local_ensemble: bool) -> torch.Tensor:
    """models.sampling.corner_shifts for feat's traced map size: (P, 2), formed in double, then float32."""
    if not local_ensemble:
        return feat.new_zeros(1, 2)
    return (CORNER_SIGNS * (_double(1) / _hw(feat).double()) + _double(BORDER_EPS)).float()


class LIIFQueryGraph(nn.Module):
    """LIIF.query_reference with the map size read from feat: (feat, coord, cell) -> (N, Q, 3)."""

    def __init__(self, model: LIIF):
        super().__init__()
        self.imnet = model.imnet
        self.local_ensemble = model.local_ensemble
        self.feat_unfold = model.feat_unfold
        self.cell_decode = model.cell_decode

    def forward(self, feat: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """RGB (N, Q, 3) of feat at coord (N, Q, 2) with cells (N, Q, 2)."""
        if self.imnet is None:
            return sample_nearest(feat, coord)
        codes = unfold3x3(feat) if self.feat_unfold else feat
        hw = _hw(feat)
        chosen = (coord + map_corner_shifts(feat, self.local_ensemble).view(-1, 1, 1, 2)) \
            .clamp(-1 + BORDER_EPS, 1 - BORDER_EPS)
        rel = (coord - sample_corners(map_centres(feat), chosen)) * hw
        parts = [sample_corners(codes, chosen), rel]
        if self.cell_decode:
            parts.append((cell * hw).expand_as(rel))
        preds = self.imnet(torch.cat(parts, dim=-1))
        return (preds * corner_weights(rel, self.local_ensemble).unsqueeze(-1)).sum(dim=0)


class MetaSRQueryGraph(nn.Module):
    """MetaSR.query_reference with the map size read from feat: (feat, coord, cell) -> (N, Q, 3)."""

    def __init__(self, model: MetaSR):
        super().__init__()
        self.imnet = model.imnet

    def forward(self, feat: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """RGB (N, Q, 3) of feat at coord (N, Q, 2) with cells (N, Q, 2)."""
        codes = unfold3x3(feat)
        c9 = codes.shape[1]
        hw = _hw(feat)
        corner = coord - cell / 2
        chosen = (corner + BORDER_EPS).clamp(-1 + BORDER_EPS, 1 - BORDER_EPS)
        rel = (corner - sample_nearest(map_code_corners(feat), chosen)) * (hw / 2)
        scale = cell[..., :1] * (hw[0] / 2)
        weights = self.imnet(torch.cat([rel, scale], dim=-1)).view(-1, c9, 3)
        code = sample_nearest(codes, chosen).reshape(-1, 1, c9)
        return torch.bmm(code, weights).view(coord.shape[0], coord.shape[1], 3)


def query_graph(model: nn.Module) -> nn.Module:
    """The exportable query of a LIIF or MetaSR model; other models are a UserError."""
    if isinstance(model, LIIF):
        return LIIFQueryGraph(model)
    if isinstance(model, MetaSR):
        return MetaSRQueryGraph(model)
    raise UserError(f"ONNX export handles LIIF and MetaSR models, not {type(model).__name__}")


def export_onnx(model: nn.Module, spec: Dict[str, Any], norm: DataNorm, out_dir: str,
                query_bytes: int, opset: int = OPSET) -> Dict[str, Any]:
    """Write encoder.onnx, query.onnx and manifest.json of model into out_dir; returns the manifest.

    Files are written into a temporary folder beside them first, so a failed export replaces nothing.
    """
    if opset < 16:
        raise UserError(f"--opset {opset}: GridSample, which picks the nearest code, needs opset 16 or later")
    query = query_graph(model).eval()
    version = onnx_version()
    os.makedirs(out_dir, exist_ok=True)
    # examples of distinct sizes (no size equals another), so no broadcast is specialised to one of them
    n, h, w, q = 2, 5, 7, 11
    inp = torch.zeros(n, 3, h, w)
    with torch.no_grad():
        feat = model.encoder(inp)
    coord = torch.linspace(-0.9, 0.9, n * q * 2).view(n, q, 2)
    cell = torch.full((n, q, 2), 0.1)
    tmp = tempfile.mkdtemp(prefix='.onnx-export-', dir=out_dir)
    try:
        with warnings.catch_warnings():
            # the TorchScript exporter on purpose: torch.export's needs the onnxscript package besides
            warnings.filterwarnings('ignore', category=DeprecationWarning, module=r'torch\.onnx')
            warnings.filterwarnings('ignore', message='.*legacy TorchScript-based ONNX export')
            torch.onnx.export(EncoderGraph(model).eval(), (inp,), os.path.join(tmp, ENCODER_FILE), dynamo=False,
                              input_names=['inp'], output_names=['feat'], opset_version=opset,
                              dynamic_axes={'inp': {0: 'n', 2: 'h', 3: 'w'}, 'feat': {0: 'n', 2: 'h', 3: 'w'}})
            torch.onnx.export(query, (feat, coord, cell), os.path.join(tmp, QUERY_FILE), dynamo=False,
                              input_names=['feat', 'coord', 'cell'], output_names=['rgb'], opset_version=opset,
                              dynamic_axes={'feat': {0: 'n', 2: 'h', 3: 'w'}, 'coord': {0: 'n', 1: 'q'},
                                            'cell': {0: 'n', 1: 'q'}, 'rgb': {0: 'n', 1: 'q'}})
        manifest = {'format': FORMAT_VERSION, 'model': {'name': spec['name'], 'args': spec['args']},
                    'data_norm': norm.to_mapping(), 'opset': opset, 'query_bytes': query_bytes,
                    'encoder': ENCODER_FILE, 'query': QUERY_FILE,
                    'exported_with': {'torch': torch.__version__, 'onnx': version}}
        with open(os.path.join(tmp, MANIFEST_FILE), 'w') as f:
            json.dump(manifest, f, indent=1)
        # the manifest last: a folder whose manifest is present has all its graphs
        for name in (ENCODER_FILE, QUERY_FILE, MANIFEST_FILE):
            os.replace(os.path.join(tmp, name), os.path.join(out_dir, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def onnx_version() -> str:
    """The installed onnx package's version; its absence is a UserError with the hint (the exporter needs it)."""
    try:
        import onnx  # optional dependency: only exporting needs it
    except ImportError:
        raise UserError("the onnx package is not installed: pip install onnx") from None
    return onnx.__version__
