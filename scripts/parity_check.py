"""Every model against the authors' vectors on one device: what the CPU tests check, on a GPU too.

    python scripts/parity_check.py                        # CUDA if present, else the CPU; every *-parity folder
    python scripts/parity_check.py --device cpu --only lte-parity,srno-parity

For each vectors file of ../shared/data/reference/*-parity/ (or $LIIF_SHARED/data/...), the model
is built from the checkpoint beside it (its stored spec), moved to the device, and run as the
folder's README says the case was made: the authors' forward (their row-chunked evaluation for a
case with a `bsize`), then encode + query for point-layout models. Printed per case: the max error
relative to max(1, |output|) in fp32 (TF32 off on CUDA, as test.py runs) and, for comparison,
under bf16 autocast. Exit code 2 with one line if any fp32 case exceeds --tol.
"""
import argparse
import glob
import os
import sys
import time
from typing import List, Optional

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import models  # noqa: E402
from models.srno import authors_row_chunked  # noqa: E402
from utils.cli import run_cli  # noqa: E402
from utils.errors import UserError  # noqa: E402
from utils.metrics import max_scaled_error  # noqa: E402

SHARED = os.environ.get('LIIF_SHARED', os.path.join(ROOT, '..', 'shared'))


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--reference', default=os.path.join(SHARED, 'data', 'reference'),
                   help="folder holding the *-parity folders")
    p.add_argument('--only', default=None, help="comma list of parity folders (default: all)")
    p.add_argument('--tol', type=float, default=1e-5, help="largest fp32 error allowed (the tests' tolerance)")
    p.add_argument('--no-bf16', action='store_true', help="skip the bf16 column (slow on CPUs without native bf16)")
    return p.parse_args(argv)


def scaled_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max_scaled_error of a device (or bf16) output against the fp32 CPU reference."""
    return max_scaled_error(got.float().cpu(), want)


def check_file(path: str, device: torch.device, bf16: bool) -> float:
    """Print every case of one vectors file; its worst fp32 error."""
    name = os.path.basename(path)[:-len('.vectors.pt')]
    vectors = torch.load(path, map_location='cpu', weights_only=True)
    ckpt = torch.load(path.replace('.vectors.pt', '.pth'), map_location='cpu', weights_only=True)
    model = models.make(ckpt['model'], load_sd=True).eval().to(device)
    points = getattr(model, 'pointwise', True) and getattr(model, 'query_layout', 'points') == 'points'
    worst = 0.0
    for key, case in vectors['cases'].items():
        inp = case.get('input', vectors['input']).to(device)
        coord, cell = case['coord'].to(device), case['cell'].to(device)
        start = time.perf_counter()
        with torch.no_grad():
            if 'bsize' in case:
                out = authors_row_chunked(model, inp, coord, cell, case['bsize'])
            else:
                out = model(inp, coord, cell)
            errors = [scaled_error(out, case['output'])]
            line = f"fp32 {errors[0]:.1e}"
            if points and 'bsize' not in case and 'input' not in case:
                errors.append(scaled_error(model.query(model.encode(inp), coord, cell), case['output']))
                line += f", encode + query {errors[1]:.1e}"
            if bf16 and 'bsize' not in case:
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    line += f", bf16 autocast {scaled_error(model(inp, coord, cell), case['output']):.1e}"
        worst = max(worst, *errors)
        print(f"{name:28s} {key:16s} {line}  ({time.perf_counter() - start:.2f} s)", flush=True)
    return worst


def main(argv: Optional[List[str]] = None) -> None:
    """Check every selected vectors file; UserError if one case misses --tol."""
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise UserError("--device cuda: CUDA is not available here")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    folders = args.only.split(',') if args.only else None
    files = sorted(f for f in glob.glob(os.path.join(args.reference, '*-parity', '*.vectors.pt'))
                   if folders is None or os.path.basename(os.path.dirname(f)) in folders)
    if not files:
        raise UserError(f"no vectors found under {args.reference}" + (f" for --only {args.only}" if folders else ''))
    label = torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'
    print(f"{len(files)} vectors files on {label}, torch {torch.__version__}")
    worst = {f: check_file(f, device, not args.no_bf16) for f in files}
    name, error = max(worst.items(), key=lambda kv: kv[1])
    print(f"worst fp32 error {error:.1e} ({os.path.basename(name)}), tolerance {args.tol:g}")
    if error > args.tol:
        raise UserError(f"{os.path.basename(name)} misses the vectors on {label}: {error:.1e} > {args.tol:g}")


if __name__ == '__main__':
    run_cli(lambda: main(sys.argv[1:]))
