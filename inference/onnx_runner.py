"""An exported model (scripts/export_onnx.py) run by onnxruntime behind the models' encode / query interface.

OnnxSR.encode and OnnxSR.query take and return torch tensors as ImplicitSR's do, so the band loop
of inference/bounded.py drives it unchanged: the output is queried band by band, which bounds the
query memory. The encoder runs on the whole input (no tiling: the graph is opaque to
models/tiling.py), on the CPU through onnxruntime's CPU provider.
"""
import json
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional

import numpy as np
import torch

from utils.errors import UserError
from utils.norm import DataNorm

try:
    import onnxruntime
except ImportError:  # optional: only --onnx needs it
    onnxruntime = None

MANIFEST_FILE = 'manifest.json'
INSTALL_HINT = "onnxruntime is not installed: pip install onnxruntime"


@dataclass(frozen=True)
class OnnxManifest:
    """What manifest.json says about an export: the model, its normalisation, the graph files."""
    model: Dict[str, Any]
    norm: DataNorm
    encoder_path: str
    query_path: str
    query_bytes: int
    opset: int


def read_manifest(folder: str) -> OnnxManifest:
    """The manifest of an export folder; a missing or malformed one is a UserError naming it."""
    path = os.path.join(folder, MANIFEST_FILE)
    if not os.path.isdir(folder):
        raise UserError(f"--onnx {folder}: no such folder (make one with scripts/export_onnx.py)")
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise UserError(f"--onnx {folder}: no {MANIFEST_FILE} (not a folder written by scripts/export_onnx.py)") \
            from None
    except (OSError, ValueError) as e:
        raise UserError(f"--onnx {folder}: unreadable {MANIFEST_FILE} ({e})") from None
    try:
        files = {key: os.path.join(folder, os.path.basename(str(data[key]))) for key in ('encoder', 'query')}
        manifest = OnnxManifest(dict(data['model']), DataNorm.from_mapping(data['data_norm'], 'manifest data_norm'),
                                files['encoder'], files['query'], int(data['query_bytes']), int(data['opset']))
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"--onnx {folder}: malformed {MANIFEST_FILE} (missing or bad {e})") from None
    for p in (manifest.encoder_path, manifest.query_path):
        if not os.path.isfile(p):
            raise UserError(f"--onnx {folder}: {os.path.basename(p)} is missing")
    return manifest


class OnnxSR:
    """encode(inp) -> feat and query(feat, coord, cell) -> RGB of an exported model, through onnxruntime."""

    # what the band loop sizes its query chunks by (the reference query's working memory per point)
    query_bytes: int

    def __init__(self, manifest: OnnxManifest, threads: Optional[int] = None):
        if onnxruntime is None:
            raise UserError(INSTALL_HINT)
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.manifest = manifest
        self.query_bytes = manifest.query_bytes
        try:
            self._encoder = onnxruntime.InferenceSession(manifest.encoder_path, options,
                                                         providers=['CPUExecutionProvider'])
            self._query = onnxruntime.InferenceSession(manifest.query_path, options,
                                                       providers=['CPUExecutionProvider'])
            self._query_inputs = [i.name for i in self._query.get_inputs()]
        except Exception as e:  # onnxruntime raises its own types for every kind of bad file
            raise UserError(f"onnxruntime cannot load the graphs of {os.path.dirname(manifest.query_path)}: "
                            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None

    @classmethod
    def load(cls, folder: str, threads: Optional[int] = None) -> 'OnnxSR':
        """The export in folder (manifest.json, encoder.onnx, query.onnx)."""
        return cls(read_manifest(folder), threads)

    @property
    def norm(self) -> DataNorm:
        """The normalisation the model was exported with."""
        return self.manifest.norm

    def encode(self, inp: torch.Tensor) -> torch.Tensor:
        """The feature map (N, C, h, w) of inp (N, 3, h, w)."""
        (feat,) = self._encoder.run(None, {'inp': _array(inp)})
        return torch.from_numpy(feat)

    def query(self, feat: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor, **_options: Any) -> torch.Tensor:
        """RGB (N, Q, 3) of feat at coord (N, Q, 2) with query cells (N, Q, 2); torch-only options are ignored."""
        given = {'feat': feat, 'coord': coord, 'cell': cell}
        # a graph drops the inputs it does not use (cell, for LIIF without cell decoding)
        (rgb,) = self._query.run(None, {name: _array(given[name]) for name in self._query_inputs})
        return torch.from_numpy(rgb)


def _array(t: torch.Tensor) -> np.ndarray:
    """A contiguous float32 numpy array of t (on the CPU)."""
    return np.ascontiguousarray(t.detach().to('cpu', torch.float32).numpy())
