"""Decoding cost of LMLIIF against LIIF (EDSR-baseline encoder, random weights): multiply-adds and CPU time.

    python benchmarks/lmf_cost.py                  # x4 of a 64 x 64 input, 3 repeats
    python benchmarks/lmf_cost.py --size 64 --scale 4 --repeats 5 --threads 2

Multiply-adds per output pixel count the Linear layers of the decoder only (the encoder is the
same for both): LIIF runs its 580 -> 256 x4 -> 3 MLP for each of the 4 corners of every query (the
authors' computation; this repository's fast path folds the first layer into a per-code table, also
printed); LMLIIF runs its hypernetwork once per latent pixel (shared by scale^2 output pixels) and
its 16-wide render MLP per corner (plus 2 elementwise operations per hidden unit for the
modulation, listed apart). Times are the median of --repeats whole-image runs through
inference.bounded.upscale (encode + query, the framework path), encoder and decoder apart.
"""
import argparse
import os
import statistics
import sys
from typing import Callable

import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import models  # noqa: E402
from benchmarks.common import PAPER_LIIF, PAPER_LMLIIF, run_times  # noqa: E402
from inference.bounded import upscale  # noqa: E402
from utils.coord import make_cell, make_coord  # noqa: E402

def linear_macs(module: nn.Module) -> int:
    """Multiply-adds of one row through every Linear of module."""
    return sum(m.in_features * m.out_features for m in module.modules() if isinstance(m, nn.Linear))


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of fn() over repeats runs (one warm-up first; the mean of the middle two if even)."""
    return statistics.median(run_times(fn, 'cpu', repeats))


def main(argv=None) -> int:
    """Print the per-pixel multiply-adds and the CPU times."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size', type=int, default=64, help='input side in pixels')
    parser.add_argument('--scale', type=int, default=4, help='integer upscaling factor')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--threads', type=int, default=1,
                        help='intra-op threads (default 1: on a small shared CPU more threads make small ops wait)')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    liif, lmliif = models.make(PAPER_LIIF).eval(), models.make(PAPER_LMLIIF).eval()
    corners = 4
    per_latent = linear_macs(lmliif.hypernet)
    render = linear_macs(lmliif.imnet)
    modulation = 2 * lmliif.imnet.hidden_dim * lmliif.imnet.hidden_depth
    liif_ref = corners * linear_macs(liif.imnet)
    first = liif.imnet.layers[0]
    code_part = (first.in_features - 4) * first.out_features  # the per-code table of the fast path
    liif_fast = code_part / args.scale ** 2 + corners * (liif_ref // corners - code_part)
    lm = per_latent / args.scale ** 2 + corners * render
    print(f"multiply-adds per output pixel at x{args.scale} (decoder Linear layers):")
    print(f"  liif   authors' computation: {liif_ref:,}  (4 corners x {liif_ref // corners:,})")
    print(f"  liif   fast path (per-code first layer): {liif_fast:,.0f}")
    print(f"  lmliif hypernet {per_latent:,} per latent pixel / {args.scale ** 2} + 4 corners x {render:,} render "
          f"= {lm:,.0f}  (+ {corners * modulation} modulation multiplies/adds)")
    print(f"  ratio liif (authors') / lmliif: {liif_ref / lm:.1f}x; liif fast path / lmliif: {liif_fast / lm:.1f}x")

    inp = torch.rand(1, 3, args.size, args.size) * 2 - 1
    size = (args.size * args.scale, args.size * args.scale)
    print(f"\nCPU seconds, {args.size}x{args.size} -> {size[0]}x{size[1]}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}:")
    with torch.inference_mode():
        enc = median_seconds(lambda: liif.encode(inp), args.repeats)
        print(f"  encoder (edsr-baseline, shared)            {enc:.3f}")
        for label, model, mode in (('liif   fast path', liif, 'fast'), ('liif   reference path', liif, 'reference'),
                                   ('lmliif encode + query', lmliif, None)):
            if mode:
                model.query_mode = mode
            total = median_seconds(lambda: upscale(model, inp, size), args.repeats)
            print(f"  {label:<24} total {total:.3f}  decoder {total - enc:.3f}")
        coord = make_coord(size).unsqueeze(0)
        cell = make_cell(coord, size)
        total = median_seconds(lambda: lmliif(inp, coord, cell), args.repeats)
        print(f"  {'lmliif authors forward':<24} total {total:.3f}  decoder {total - enc:.3f}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
