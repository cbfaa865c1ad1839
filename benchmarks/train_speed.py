"""Seconds per training iteration of EDSR-baseline-LIIF at the paper's shape: authors'-style baseline, reference, fast.

    python benchmarks/train_speed.py                         # CPU, all three
    python benchmarks/train_speed.py --device cuda --amp bf16
    python benchmarks/train_speed.py --data /path/to/hr_images --workers 8   # + data pipeline samples/s

One iteration = forward (encoder + 2304 queries for each of 16 48x48 inputs) + L1 loss + backward
+ Adam step, on synthetic tensors so that the data pipeline is measured separately (--data: the
paper's sr-implicit-downsampled wrapper over an image folder, through a DataLoader). Each path
runs in its own child process, so its peak memory is its own. Ratios are against `baseline`, the
query as the authors' code computes it (benchmarks/baseline.py, fp32), timed in the same run.
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import datasets  # noqa: E402
from benchmarks.baseline import authors_style_query  # noqa: E402
from benchmarks.common import environment, matmul_peak, paper_model, peak_memory, run_child, sync  # noqa: E402
from utils.amp import AMP_DTYPES, autocast  # noqa: E402


def run_case(mode: str, args: argparse.Namespace) -> dict:
    """Median seconds per iteration and peak memory of `mode` in this (child) process."""
    device = args.device
    model = paper_model(device).train()
    baseline = mode == 'baseline'
    model.query_mode = 'reference' if baseline else mode
    model.channels_last = args.channels_last == 'on'
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(1)
    b, q = args.batch, args.queries
    inp = (torch.rand(b, 3, args.inp_size, args.inp_size, generator=g) * 2 - 1).to(device)
    coord = (torch.rand(b, q, 2, generator=g) * 2 - 1).to(device)
    cell = torch.full_like(coord, 2 / (args.inp_size * 2.5))
    gt = (torch.rand(b, q, 3, generator=g) * 2 - 1).to(device)

    def step():
        if baseline:  # the authors' forward: encoder, then one query over all rows, fp32
            pred = authors_style_query(model, model.encoder(inp), coord, cell)
        else:
            with autocast(device, args.amp):
                pred = model(inp, coord, cell)
        loss = torch.nn.functional.l1_loss(pred.float(), gt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.iters):
        sync(device)
        t = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t)
    times.sort()
    return {'s_per_iter': times[len(times) // 2], 'min_s': times[0], **peak_memory(device)}


def data_speed(args: argparse.Namespace) -> float:
    """Training samples per second of the paper's data pipeline over the images in args.data."""
    folder = datasets.make({'name': 'image-folder', 'args': {'root_path': args.data, 'repeat': 20,
                                                            'cache': 'in_memory'}})
    wrapped = datasets.make({'name': 'sr-implicit-downsampled', 'args': {
        'inp_size': args.inp_size, 'scale_min': 1, 'scale_max': 4, 'augment': True,
        'sample_q': args.queries}}, args={'dataset': folder})
    loader = torch.utils.data.DataLoader(wrapped, batch_size=args.batch, shuffle=True,
                                         num_workers=args.workers, persistent_workers=args.workers > 0)
    it = iter(loader)
    next(it)  # worker start-up
    n = 0
    t = time.perf_counter()
    for _ in range(args.data_batches):
        n += next(it)['inp'].shape[0]
    return n / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--amp', choices=sorted(AMP_DTYPES), default=None)
    parser.add_argument('--channels-last', choices=['on', 'off'], default='on')
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--modes', default='baseline,reference,fast',
                        help="baseline: the authors'-style query (benchmarks/baseline.py), the ratios' denominator")
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--inp-size', type=int, default=48)
    parser.add_argument('--queries', type=int, default=2304)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--data', default=None, help='image folder: also measure the data pipeline')
    parser.add_argument('--workers', type=int, default=min(8, os.cpu_count() or 1),
                        help='DataLoader workers for --data (default: the configs\' 8, at most the CPU count)')
    parser.add_argument('--data-batches', type=int, default=50)
    parser.add_argument('--child', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child is not None:
        print(json.dumps(run_case(json.loads(args.child)['mode'], args)))
        return

    print(environment(args.device), f"| amp {args.amp or 'off (fp32)'} | channels_last {args.channels_last}")
    print(f"batch {args.batch}, {args.inp_size}x{args.inp_size} inputs, {args.queries} queries each;"
          f" median of {args.iters} iterations after {args.warmup} warm-up")
    peak = matmul_peak(args.device, torch.float32, args.batch * args.queries)
    rates = (f"(this machine: sgemm {peak['square_gflops']:.0f} GFLOP/s, ({peak['query_rows']} x 256) @ (256 x 256)"
             f" {peak['query_gflops']:.0f} GFLOP/s, fp32)")
    results = {}
    for mode in args.modes.split(','):
        results[mode] = run_child(os.path.abspath(__file__), {'mode': mode}, sys.argv[1:])
    gpu = any('gpu_mb' in r for r in results.values())
    head = f"{'path':>9} {'s/iter':>7} {'min s':>6} {'RSS MB':>7}" + (f" {'GPU MB':>7}" if gpu else '')
    print(head)
    print('-' * len(head))
    for mode, r in results.items():
        print(f"{mode:>9} {r['s_per_iter']:7.3f} {r['min_s']:6.3f} {r['rss_mb']:7.0f}"
              + (f" {r['gpu_mb']:7.0f}" if gpu else ''))
    for mode, r in results.items():
        if mode != 'baseline' and 'baseline' in results:
            print(f"{mode} / baseline = {results['baseline']['s_per_iter'] / r['s_per_iter']:.2f}x {rates}")
    if args.data:
        print(f"data pipeline: {data_speed(args):.1f} samples/s with {args.workers} workers"
              f" (one iteration needs {args.batch})")


if __name__ == '__main__':
    main()
