"""Export a LIIF / MetaSR checkpoint as ONNX graphs for onnxruntime: encoder.onnx, query.onnx, manifest.json.

    python scripts/export_onnx.py --model weights/liif-edsr-baseline.pth --out onnx/liif-edsr-baseline
    python demo.py --onnx onnx/liif-edsr-baseline --input in.png --scale 4 --output out.png

encoder.onnx maps a normalised image (N, 3, h, w) to its feature map; query.onnx maps (feat,
coord (N, Q, 2), cell (N, Q, 2)) to normalised RGB (N, Q, 3); N, h, w and Q are all dynamic. The
query is the reference computation (LIIF.md), not the fast path; the nearest code is chosen by
GridSample (opset 16 or later). manifest.json records the model, its data_norm and the versions.
"""
import argparse
import os
import sys
from typing import List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from inference.bounded import bytes_per_query  # noqa: E402
from inference.loading import load_sr  # noqa: E402
from inference.onnx_export import OPSET, export_onnx  # noqa: E402
from utils.checkpoint import load_checkpoint  # noqa: E402
from utils.cli import run_cli  # noqa: E402
from utils.errors import UserError  # noqa: E402
from utils.norm import DEMO  # noqa: E402


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', required=True, help="LIIF / MetaSR checkpoint")
    p.add_argument('--out', required=True, help="folder to write encoder.onnx, query.onnx and manifest.json into")
    p.add_argument('--opset', type=int, default=OPSET, help=f"ONNX opset (default {OPSET}; at least 16)")
    p.add_argument('--trust-checkpoint', action='store_true',
                   help="load a checkpoint holding arbitrary Python objects (runs code from the file)")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    """Load the checkpoint, export both graphs and the manifest."""
    args = parse_args(argv)
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UserError(f"--out {args.out} is a file, not a folder")
    loaded = load_sr(args.model, torch.device('cpu'), DEMO, "the authors' demo convention",
                     trusted=args.trust_checkpoint)
    spec = load_checkpoint(args.model, map_location='cpu', trusted=args.trust_checkpoint)['model']
    model = loaded.model
    model.query_mode = 'reference'  # what the query graph computes: size the runner's bands for it
    export_onnx(model, spec, loaded.norm, args.out, bytes_per_query(model), args.opset)
    print(f"wrote {args.out}/encoder.onnx, query.onnx, manifest.json ({spec['name']}, opset {args.opset}, "
          f"data_norm {loaded.norm.describe()})")


if __name__ == '__main__':
    run_cli(lambda: main(sys.argv[1:]))
