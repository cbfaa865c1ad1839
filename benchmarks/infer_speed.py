"""Inference speed and peak memory of EDSR-baseline-LIIF: the authors'-style baseline, reference and fast paths.

    python benchmarks/infer_speed.py                      # CPU, 128x128 input, x2 x4 x12, all three
    python benchmarks/infer_speed.py --device cuda --amp bf16
    python benchmarks/infer_speed.py --modes fast --scales 4 --no-memory

Every ratio is against `baseline`: LIIF's query as the authors' code computes it (benchmarks/
baseline.py: four grid_sample passes, the whole MLP per row, 30000-query chunks; always fp32),
timed in the same run. Each case runs in its own child process, so its peak memory (host VmHWM, and the CUDA allocator's
peak on a GPU) is its own. Output megapixels per second cover the whole demo-style job: encoder,
queries and the uint8 output (inference.bounded.upscale_to_uint8). The query stage's GFLOP/s count
the multiply-adds the path really performs (fast: the per-code table convolution plus the per-row
layers; reference: the whole MLP per row), compared with a large square matmul and with the
query MLP's own shape, (rows x 256) @ (256 x 256) + bias at the row counts the fast path uses
(its best rate), both measured in the same run. Weights are random (speed does not depend on them).
"""
import argparse
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.baseline import authors_style_batched_predict  # noqa: E402
from benchmarks.common import (environment, matmul_peak, paper_model, peak_memory, run_child,  # noqa: E402
                               shape_gflops, sync)
from models.fast_query import block_rows, mlp_layers, rows_per_pass  # noqa: E402
from inference.bounded import DEFAULT_MAX_MEM_MB, upscale, upscale_to_uint8  # noqa: E402
from utils.coord import make_cell, make_coord  # noqa: E402
from utils.amp import AMP_DTYPES  # noqa: E402


def query_flops(model: torch.nn.Module, n: int, h: int, w: int, queries: int, mode: str) -> float:
    """Floating-point operations of the query stage as `mode` (baseline, reference, fast) computes it."""
    linear = [m for m in mlp_layers(model.imnet) if isinstance(m, torch.nn.Linear)]
    rows = queries * (4 if model.local_ensemble else 1)
    rest = sum(2 * m.in_features * m.out_features for m in linear[1:])
    first = linear[0]
    if mode in ('baseline', 'reference'):
        return rows * (2 * first.in_features * first.out_features + rest)
    ncode = model.encoder.out_dim * (9 if model.feat_unfold else 1)
    table = 2 * n * h * w * first.out_features * ncode
    return table + rows * (2 * (first.in_features - ncode) * first.out_features + rest)


@torch.no_grad()
def run_baseline(model: torch.nn.Module, inp: torch.Tensor, out_hw: tuple, device: str) -> tuple:
    """(total s, encoder s) of the authors'-style job: encoder, 30000-query chunks, 8-bit image."""
    coord = make_coord(out_hw, device=inp.device).unsqueeze(0)
    cell = make_cell(coord, out_hw)
    sync(device)
    t = time.perf_counter()
    model.encoder(inp)
    sync(device)
    enc = time.perf_counter() - t
    t = time.perf_counter()
    pred = authors_style_batched_predict(model, inp, coord, cell, bsize=30000)
    pred.mul(0.5).add(0.5).clamp(0, 1).view(*out_hw, 3).mul(255).round().to(torch.uint8).cpu()
    sync(device)
    return time.perf_counter() - t + enc, enc  # the encoder ran twice: counted once


def run_case(case: dict, args: argparse.Namespace) -> dict:
    """Time one upscale in this (child) process: {'total_s', 'encoder_s', 'query_s', 'flops', memory...}."""
    device, amp = args.device, args.amp
    model = paper_model(device).eval()
    if case['mode'] == 'baseline':
        g = torch.Generator().manual_seed(1)
        inp = (torch.rand(1, 3, case['size'], case['size'], generator=g) * 2 - 1).to(device)
        out_hw = (round(case['size'] * case['scale']),) * 2
        run_baseline(model, inp, (case['size'],) * 2, device)  # warm-up
        total, enc = sorted(run_baseline(model, inp, out_hw, device) for _ in range(args.repeat))[args.repeat // 2]
        return {'total_s': total, 'encoder_s': enc, 'query_s': total - enc, 'out_px': out_hw[0] * out_hw[1],
                'flops': query_flops(model, 1, case['size'], case['size'], out_hw[0] * out_hw[1], 'baseline'),
                **peak_memory(device)}
    model.query_mode = case['mode']
    model.channels_last = args.channels_last == 'on'
    g = torch.Generator().manual_seed(1)
    inp = (torch.rand(1, 3, case['size'], case['size'], generator=g) * 2 - 1).to(device)
    out_hw = (round(case['size'] * case['scale']),) * 2

    enc_times = []
    encode = model.encode

    def timed_encode(x):
        sync(device)
        t = time.perf_counter()
        feat = encode(x)
        sync(device)
        enc_times.append(time.perf_counter() - t)
        return feat

    model.encode = timed_encode
    # warm-up on the same input with a small output: kernel selection / JIT for these shapes
    upscale_to_uint8(model, inp, (case['size'],) * 2, max_mem_mb=args.max_mem_mb, amp=amp)
    if torch.device(device).type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    totals = []
    for _ in range(args.repeat):
        enc_times.clear()
        sync(device)
        t = time.perf_counter()
        upscale_to_uint8(model, inp, out_hw, max_mem_mb=args.max_mem_mb, amp=amp)
        sync(device)
        totals.append((time.perf_counter() - t, sum(enc_times)))
    total, enc = sorted(totals)[len(totals) // 2]
    h, w = inp.shape[-2:]  # the encoder keeps the spatial size
    return {'total_s': total, 'encoder_s': enc, 'query_s': total - enc, 'out_px': out_hw[0] * out_hw[1],
            'flops': query_flops(model, 1, h, w, out_hw[0] * out_hw[1], case['mode']), **peak_memory(device)}


def baseline_memory(args: argparse.Namespace) -> dict:
    """Peak memory of a child that only imports torch and builds the model (the floor of every case)."""
    paper_model(args.device).eval()
    return peak_memory(args.device)


def smooth_image(size: int, device: str) -> torch.Tensor:
    """A deterministic smooth test image (1, 3, size, size) in [-1, 1] (shared data may be absent on a GPU box)."""
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing='ij')
    chans = [torch.sin(6 * x + 2 * y), torch.cos(9 * y - 3 * x * y), torch.sin(20 * x * y) * torch.cos(4 * x)]
    return (torch.stack(chans) * 0.8).unsqueeze(0).to(device)


def amp_accuracy(args: argparse.Namespace) -> str:
    """Max abs error and PSNR of the x4 uint8-space output under args.amp against fp32, both query paths."""
    model = paper_model(args.device).eval()
    model.channels_last = args.channels_last == 'on'
    inp = smooth_image(args.size, args.device)
    size = (args.size * 4,) * 2
    # random weights give nearly flat outputs; scale the last layer to a trained model's contrast
    # (output std ~0.25 in [0, 1]) so that the errors are relative to a realistic signal
    last = model.imnet.layers[-1]
    with torch.no_grad():
        spread = upscale(model, inp, size).mul(0.5).std().item()
        last.weight.mul_(0.25 / spread)
        last.bias.mul_(0.25 / spread)
    parts = []
    for mode in ('reference', 'fast'):
        model.query_mode = mode
        ref = upscale(model, inp, size).mul(0.5).add(0.5).clamp(0, 1)
        low = upscale(model, inp, size, amp=args.amp).mul(0.5).add(0.5).clamp(0, 1)
        err = (low - ref).abs().max().item()
        mse = (low - ref).square().mean().item()
        psnr = 10 * math.log10(1 / mse) if mse > 0 else float('inf')
        parts.append(f"{mode}: max abs {err:.2e}, PSNR {psnr:.1f} dB vs fp32")
    return (f"accuracy of {args.amp} vs fp32 (x4 of a smooth {args.size}px image, [0, 1] pixel scale; random"
            f" weights, last layer scaled to output std {ref.std().item():.2f}): " + '; '.join(parts))


def query_peak(device: str, dtype: torch.dtype, amp: bool) -> dict:
    """matmul_peak with the query shape at the fast path's best row count here (chunk, or CPU block of a chunk)."""
    dev = torch.device(device)
    rows = rows_per_pass(dev)
    peak = matmul_peak(device, dtype, rows)
    if dev.type == 'cpu' and not amp and block_rows() != rows:  # fp32 CPU chunks run in blocks of rows
        rate = shape_gflops(device, dtype, block_rows())
        if rate > peak['query_gflops']:
            peak.update(query_rows=block_rows(), query_gflops=rate)
    return peak


def print_speed(results: list, peak: dict, fp32_peak: dict) -> None:
    """The speed table and each path's ratio against the baseline, beside the machine's matmul rates.

    '% sgemm' and '% shape' are against `peak` (the run's dtype), the always-fp32 baseline's
    against `fp32_peak`; 'shape' is the query MLP's (rows x 256) @ (256 x 256) + bias.
    """
    gpu = any('gpu_mb' in r for _, r in results)
    head = (f"{'scale':>5} {'output':>11} {'path':>9} {'total s':>8} {'Mpx/s':>7} {'enc s':>6} {'query s':>8}"
            f" {'q GFLOP/s':>9} {'% sgemm':>7} {'% shape':>7} {'RSS MB':>7}" + (f" {'GPU MB':>7}" if gpu else ''))
    print(head)
    print('-' * len(head))
    speed, stage = {}, {}
    for case, r in results:
        mpx = r['out_px'] / r['total_s'] / 1e6
        speed[(case['size'], case['scale'], case['mode'])] = mpx
        gflops = r['flops'] / r['query_s'] / 1e9
        rates = fp32_peak if case['mode'] == 'baseline' else peak
        stage[(case['size'], case['scale'], case['mode'])] = gflops
        side = round(r['out_px'] ** 0.5)
        print(f"x{case['scale']:<4} {f'{side}x{side}':>11} {case['mode']:>9} {r['total_s']:8.2f} {mpx:7.3f}"
              f" {r['encoder_s']:6.2f} {r['query_s']:8.2f} {gflops:9.1f}"
              f" {100 * gflops / rates['square_gflops']:6.0f}% {100 * gflops / rates['query_gflops']:6.0f}%"
              f" {r['rss_mb']:7.0f}" + (f" {r['gpu_mb']:7.0f}" if gpu else ''))
    rates = (f"(this machine: sgemm {peak['square_gflops']:.0f} GFLOP/s, ({peak['query_rows']} x 256) @ (256 x 256)"
             f" {peak['query_gflops']:.0f} GFLOP/s)")
    for (size, scale, mode), mpx in speed.items():
        base = speed.get((size, scale, 'baseline'))
        if mode != 'baseline' and base:
            print(f"x{scale}: {mode} / baseline = {mpx / base:.2f}x {rates}" + (' (goal >= 3x)' if mode == 'fast' else ''))
        if mode == 'fast':
            gflops = stage[(size, scale, mode)]
            print(f"x{scale}: fast query stage {gflops:.0f} GFLOP/s = {100 * gflops / peak['query_gflops']:.0f}% of its"
                  f" shape's matmul rate, ({peak['query_rows']} x 256) @ (256 x 256) + bias"
                  f" {peak['query_gflops']:.0f} GFLOP/s in this run (goal >= 80%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--amp', choices=sorted(AMP_DTYPES), default=None, help='autocast dtype (default fp32)')
    parser.add_argument('--channels-last', choices=['on', 'off'], default='on', help='encoder memory format')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch default)')
    parser.add_argument('--size', type=int, default=128, help='input side')
    parser.add_argument('--scales', default='2,4,12')
    parser.add_argument('--modes', default='baseline,reference,fast',
                        help="baseline: the authors'-style query (benchmarks/baseline.py), the ratios' denominator")
    parser.add_argument('--repeat', type=int, default=1, help='timed runs per case (median)')
    parser.add_argument('--max-mem-mb', type=float, default=DEFAULT_MAX_MEM_MB)
    parser.add_argument('--no-memory', action='store_true', help='skip the x12 / x30 peak-memory cases')
    parser.add_argument('--child', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child is not None:
        case = json.loads(args.child)
        print(json.dumps(baseline_memory(args) if case.get('baseline') else run_case(case, args)))
        return

    passthrough = sys.argv[1:]
    print(environment(args.device), f"| amp {args.amp or 'off (fp32)'} | channels_last {args.channels_last}"
          f" | max_mem_mb {args.max_mem_mb:g}")
    dtype = AMP_DTYPES[args.amp] if args.amp else torch.float32
    peak = query_peak(args.device, dtype, bool(args.amp))
    print(f"matmul peak ({dtype}): {peak['square_n']}^3 square {peak['square_gflops']:.0f} GFLOP/s;"
          f" ({peak['query_rows']} x 256) @ (256 x 256) + bias {peak['query_gflops']:.0f} GFLOP/s")
    print("ratios: against the authors'-style baseline (benchmarks/baseline.py, fp32), timed in this run")

    script = os.path.abspath(__file__)
    results = []
    for scale in [float(s) if '.' in s else int(s) for s in args.scales.split(',')]:
        for mode in args.modes.split(','):
            case = {'size': args.size, 'scale': scale, 'mode': mode}
            results.append((case, run_child(script, case, passthrough)))
            print(f"  done x{scale} {mode}: {results[-1][1]['total_s']:.2f} s", flush=True)
    print()
    fp32_peak = peak if dtype == torch.float32 else matmul_peak(args.device, torch.float32, peak['query_rows'])
    print_speed(results, peak, fp32_peak)
    if args.amp:
        print(amp_accuracy(args))

    if not args.no_memory:
        print()
        base = run_child(script, {'baseline': True}, passthrough)
        print(f"peak memory, fast path, uint8 output (floor: torch + model = {base['rss_mb']:.0f} MB RSS):")
        for size, scale in ((128, 12), (256, 30)):
            case = {'size': size, 'scale': scale, 'mode': 'fast'}
            r = run_child(script, case, passthrough + ['--repeat', '1'])
            side = size * scale
            gpu = f", GPU peak {r['gpu_mb']:.0f} MB" if 'gpu_mb' in r else ''
            print(f"  {size}x{size} x{scale} -> {side}x{side}: peak RSS {r['rss_mb']:.0f} MB{gpu},"
                  f" {r['total_s']:.1f} s ({r['out_px'] / r['total_s'] / 1e6:.3f} Mpx/s)")


if __name__ == '__main__':
    main()
