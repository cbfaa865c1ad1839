"""Query speed of EDSR-baseline-LTE (the released config, random weights): fast path against reference path.

    python benchmarks/lte_speed.py                       # x4 of a 64x64 input on the CPU
    python benchmarks/lte_speed.py --size 96 --scale 3 --repeat 5 --model lte-fast --threads 1

Times model.query over the whole output grid, in chunks of --bsize queries (as batched_predict
calls it), on the state of one model.encode (not timed); prints the median seconds of both
paths (alternating runs after one warm-up each), their ratio and the largest difference between their outputs.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import EDSR_BASELINE, PAPER_LTE, median_time  # noqa: E402
import models  # noqa: E402
from models.fast_query import query_mode  # noqa: E402
from utils.coord import make_cell, make_coord  # noqa: E402

SPECS = {
    'lte': PAPER_LTE,
    'lte-fast': {'name': 'lte-fast', 'args': {'encoder_spec': EDSR_BASELINE, 'num_layer': 3, 'hidden_dim': 256,
                                              'out_dim': 3}},
}


def main() -> None:
    """Print both paths' median query time, the ratio and the outputs' max abs difference."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--model', choices=sorted(SPECS), default='lte')
    p.add_argument('--size', type=int, default=64)
    p.add_argument('--scale', type=int, default=4)
    p.add_argument('--bsize', type=int, default=30000)
    p.add_argument('--repeat', type=int, default=3)
    p.add_argument('--device', default='cpu')
    p.add_argument('--threads', type=int, default=0, help="intra-op threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = models.make(SPECS[args.model]).to(args.device).eval()
    inp = torch.rand(1, 3, args.size, args.size, device=args.device) * 2 - 1
    out_hw = (args.size * args.scale,) * 2
    coord = make_coord(out_hw, device=args.device).unsqueeze(0)
    cell = make_cell(coord, out_hw)
    with torch.no_grad():
        state = model.encode(inp)

        def run() -> torch.Tensor:
            return torch.cat([model.query(state, coord[:, i:i + args.bsize], cell[:, i:i + args.bsize])
                              for i in range(0, coord.shape[1], args.bsize)], dim=1)

        # the two paths alternate, so that load from other processes hits both alike
        samples, outs = {'reference': [], 'fast': []}, {}
        for mode in samples:
            with query_mode(model, mode):
                run()
        for _ in range(args.repeat):
            for mode in samples:
                with query_mode(model, mode):
                    samples[mode].append(median_time(run, args.device, 1, warmup=0))
        for mode in samples:
            with query_mode(model, mode):
                outs[mode] = run()
        times = {mode: sorted(t)[len(t) // 2] for mode, t in samples.items()}
    diff = (outs['fast'] - outs['reference']).abs().max().item()
    print(f"{args.model} x{args.scale} of {args.size}x{args.size} ({coord.shape[1]} queries, "
          f"{torch.get_num_threads()} threads, {args.device}): reference {times['reference']:.3f} s, "
          f"fast {times['fast']:.3f} s, ratio {times['reference'] / times['fast']:.2f}x, max |diff| {diff:.2e}")


if __name__ == '__main__':
    main()
