"""Accuracy and speed of reduced precision (bf16 / fp16 autocast, int8) against fp32, with the bundled model.

    python benchmarks/precision_accuracy.py                     # Set5, x2 x3 x4, bf16 (a few minutes on 2 cores)
    python benchmarks/precision_accuracy.py --sets Set5,Set14 --precisions bf16,fp16
    python benchmarks/precision_accuracy.py --sets B100 --limit 20   # the first 20 images (sorted names)
    python benchmarks/precision_accuracy.py --sets Set5,Set14 --precisions int8   # the viewer's CPU tiles

Per set and scale: the LR is MATLAB bicubic of the HR (cropped to a multiple of the scale), the
model upscales it in fp32 and under autocast; printed are the mean PSNR (Y, shave s, as the
benchmark protocol) in fp32 and its change, the share of 8-bit output values (all pixels and
channels, the demo's rounding) that differ from fp32's, the largest such change in levels, and
the seconds of each precision (query path as the demo runs it: the model's default). int8 is the
viewer's: the whole image as one region of inference.region.RegionRenderer with int8 hidden layers,
against the same fp32 upscale (a fp32 region equals it up to float rounding, so the accuracy columns
compare like with like; the seconds compare the two code paths).
"""
import argparse
import os
import sys
import time

import numpy as np
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from evaluation.protocol import Protocol  # noqa: E402
from inference.bounded import upscale  # noqa: E402
from inference.loading import load_sr  # noqa: E402
from inference.region import Rect, RegionRenderer  # noqa: E402
from utils.amp import AMP_DTYPES, cpu_native_bf16  # noqa: E402
from utils.imresize import imresize  # noqa: E402
from utils.norm import DEMO  # noqa: E402

DATA = os.path.join(os.path.dirname(ROOT), 'shared', 'data', 'benchmark')
MODEL = os.path.join(ROOT, 'weights', 'liif-edsr-baseline.pth')


def load_hr(path: str, scale: int) -> torch.Tensor:
    """HR image (1, 3, H, W) in [0, 1], cropped to a multiple of scale."""
    img = np.asarray(Image.open(path).convert('RGB'), dtype=np.float32) / 255
    h, w = (img.shape[0] // scale) * scale, (img.shape[1] // scale) * scale
    return torch.from_numpy(img[:h, :w]).permute(2, 0, 1).unsqueeze(0).contiguous()


def run(model: torch.nn.Module, lr: torch.Tensor, size, precision) -> tuple:
    """(output (1, 3, H, W) clamped to [0, 1], seconds) of the model on lr in precision (None: fp32)."""
    t = time.perf_counter()
    if precision == 'int8':
        renderer = RegionRenderer(model, DEMO.inp(lr), DEMO, int8=True)
        out = renderer.predict(size, Rect(0, 0, *size)).permute(2, 0, 1).unsqueeze(0)
    else:
        with torch.no_grad():
            out = upscale(model, DEMO.inp(lr), size, amp=precision)
    out = DEMO.output(out.float(), channel_dim=-3).clamp(0, 1)
    return out, time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sets', default='Set5')
    parser.add_argument('--scales', default='2,3,4')
    parser.add_argument('--precisions', default='bf16', help=f"comma list of {sorted(AMP_DTYPES) + ['int8']}")
    parser.add_argument('--data', default=DATA, help='folder holding <set>/HR/*.png')
    parser.add_argument('--model', default=MODEL)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--limit', type=int, default=None, help='only the first N images of each set (sorted names)')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_sr(args.model, torch.device('cpu'), DEMO, 'the demo convention').model
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, native bf16:"
          f" {cpu_native_bf16() or 'no'}, {torch.get_num_threads()} threads, query path {model.query_mode}")
    precisions = args.precisions.split(',')
    head = (f"{'set':>6} {'images':>6} {'scale':>5} {'prec':>5} {'PSNR fp32':>9} {'dPSNR dB':>9} {'8-bit changed':>13}"
            f" {'max lv':>6} {'fp32 s':>7} {'prec s':>7} {'slowdown':>8}")
    print(head)
    print('-' * len(head))
    for name in args.sets.split(','):
        folder = os.path.join(args.data, name, 'HR')
        files = sorted(os.path.join(folder, f) for f in os.listdir(folder))[:args.limit]
        for scale in (int(s) for s in args.scales.split(',')):
            protocol = Protocol('benchmark', scale)
            stats = {p: {'psnr': [], 'changed': 0, 'max': 0, 's': 0.0} for p in ['fp32'] + precisions}
            values = 0
            for path in files:
                hr = load_hr(path, scale)
                lr = imresize(hr, scale=1 / scale).clamp(0, 1)
                size = tuple(hr.shape[-2:])
                ref, secs = run(model, lr, size, None)
                stats['fp32']['psnr'].append(protocol.psnr(ref, hr).item())
                stats['fp32']['s'] += secs
                ref8 = ref.mul(255).round()
                values += ref8.numel()
                for p in precisions:
                    out, secs = run(model, lr, size, p)
                    diff = (out.mul(255).round() - ref8).abs()
                    stats[p]['psnr'].append(protocol.psnr(out, hr).item())
                    stats[p]['changed'] += int((diff > 0).sum())
                    stats[p]['max'] = max(stats[p]['max'], int(diff.max()))
                    stats[p]['s'] += secs
            base = float(np.mean(stats['fp32']['psnr']))
            for p in precisions:
                s = stats[p]
                print(f"{name:>6} {len(files):6d} x{scale:<4} {p:>5} {base:9.4f} {float(np.mean(s['psnr'])) - base:+9.4f}"
                      f" {100 * s['changed'] / values:12.3f}% {s['max']:6d} {stats['fp32']['s']:7.2f}"
                      f" {s['s']:7.2f} {s['s'] / stats['fp32']['s']:7.2f}x", flush=True)


if __name__ == '__main__':
    main()
