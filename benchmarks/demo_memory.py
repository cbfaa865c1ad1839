"""Peak memory of demo.py in each precision: x12 of a 128x128 input and x30 of a 256x256 input.

    python benchmarks/demo_memory.py                               # bundled model, fp32 and bf16
    python benchmarks/demo_memory.py --cases 128x12 --precisions fp32,bf16,fp16

Each case runs demo.py (its whole path: read, bands of queries, uint8 output, atomic BMP write)
in a fresh interpreter that prints its own peak RSS (ru_maxrss), so no case inherits another's
peak. The input is a crop of Set5's baby (a smooth synthetic image where the shared data is
absent). 'floor' is the same interpreter at x1 (torch, the model, one small upscale). fp16 is
refused by demo.py on the CPU (several times slower than fp32) and reported as such.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BABY = os.path.join(os.path.dirname(ROOT), 'shared', 'data', 'benchmark', 'Set5', 'HR', 'baby.png')
# the child: demo.py as a script, then its own peak RSS in KiB (Linux ru_maxrss) on the last line
CHILD = ("import resource, runpy, sys\nsys.argv = ['demo.py'] + sys.argv[1:]\n"
         "runpy.run_path('demo.py', run_name='__main__')\n"
         "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")


def input_image(side: int, folder: str) -> str:
    """A side x side RGB PNG in folder: the top-left crop of Set5's baby, else a smooth synthetic image."""
    path = os.path.join(folder, f'in{side}.png')
    if os.path.isfile(BABY):
        Image.open(BABY).convert('RGB').crop((0, 0, side, side)).save(path)
    else:
        y, x = np.mgrid[0:side, 0:side] / side
        rgb = np.stack([np.sin(6 * x + 2 * y), np.cos(9 * y - 3 * x * y), np.sin(20 * x * y)], -1)
        Image.fromarray(((rgb * 0.4 + 0.5) * 255).astype(np.uint8)).save(path)
    return path


def run_demo(inp: str, scale: int, precision: str, model: str, out: str, threads: int) -> dict:
    """{'rss_mb', 'seconds'} of one demo.py run in a fresh interpreter, or {'error'} with its message."""
    cmd = [sys.executable, '-c', CHILD, '--input', inp, '--scale', str(scale), '--output', out,
           '--precision', precision] + (['--model', model] if model else [])
    env = {**os.environ, **({'OMP_NUM_THREADS': str(threads)} if threads else {})}
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        errors = [l for l in proc.stderr.splitlines() if l.startswith('error:')]
        return {'error': errors[-1] if errors else proc.stderr[-500:]}
    return {'rss_mb': int(proc.stdout.split()[-1]) / 1024, 'seconds': seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--cases', default='128x12,256x30', help='comma list of SIDExSCALE')
    parser.add_argument('--precisions', default='fp32,bf16')
    parser.add_argument('--model', default=None, help="checkpoint (default: demo.py's bundled model)")
    parser.add_argument('--threads', type=int, default=None, help='OMP_NUM_THREADS of the children')
    args = parser.parse_args()
    print(f"{'case':>16} {'output':>11} {'prec':>5} {'peak RSS MB':>11} {'floor MB':>8} {'seconds':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases.split(','):
            side, scale = (int(v) for v in case.split('x'))
            inp = input_image(side, tmp)
            out = os.path.join(tmp, 'out.bmp')
            for precision in args.precisions.split(','):
                label = f"{side}x{side} x{scale}"
                floor = run_demo(inp, 1, precision, args.model, out, args.threads)
                r = floor if 'error' in floor else run_demo(inp, scale, precision, args.model, out, args.threads)
                if 'error' in r:
                    print(f"{label:>16} {'':>11} {precision:>5} {r['error']}", flush=True)
                    continue
                o = side * scale
                print(f"{label:>16} {f'{o}x{o}':>11} {precision:>5} {r['rss_mb']:11.0f} {floor['rss_mb']:8.0f}"
                      f" {r['seconds']:8.1f}", flush=True)


if __name__ == '__main__':
    main()
