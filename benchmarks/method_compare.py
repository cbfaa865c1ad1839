"""LIIF, LTE, SRNO, LMF-LIIF and LMF-LTE with the EDSR-baseline encoder, side by side, in one run.

    python benchmarks/method_compare.py                 # 128x128 -> 512x512 (x4) on the CPU
    python benchmarks/method_compare.py --size 64 --repeat 1

For each method (the authors' full-size configuration, random weights): parameters; multiply-adds
per output pixel at x4, split into the encoder and the decoding (everything after the encoder),
counted by torch.utils.flop_counter on the path inference.bounded.upscale runs (matmuls and
convolutions only: grid sampling, cos/sin and other element-wise work are not counted); output
megapixels per second of the whole upscale (encoder included); the peak host memory of the
upscale beyond what the process held before it. Each method runs in its own child process.
"""
import argparse
import json
import os
import sys
from typing import Any, Dict

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import models  # noqa: E402
from benchmarks.common import EDSR_BASELINE, PAPER_LIIF, PAPER_LMLIIF, PAPER_LTE  # noqa: E402
from benchmarks.common import environment, median_time, peak_rss_mb, run_child  # noqa: E402
from inference.bounded import encode_bounded, upscale  # noqa: E402

METHODS: Dict[str, Dict[str, Any]] = {
    'LIIF': PAPER_LIIF,
    'LTE': PAPER_LTE,
    'SRNO': {'name': 'sronet', 'args': {'encoder_spec': EDSR_BASELINE, 'width': 256, 'blocks': 16}},
    'LMF-LIIF': PAPER_LMLIIF,
    'LMF-LTE': {'name': 'lmlte', 'args': {
        'encoder_spec': EDSR_BASELINE,
        'imnet_spec': {'name': 'lmmlp', 'args': {'out_dim': 3, 'hidden_dim': 16, 'hidden_depth': 8,
                                                 'mod_scale': True, 'mod_shift': True}},
        'hypernet_spec': {'name': 'mlp', 'args': {'out_dim': 288, 'hidden_list': [288]}},
        'hidden_dim': 128, 'local_ensemble': True, 'cell_decode': True, 'mod_input': True}},
}


def count_macs(model: torch.nn.Module, size: int, scale: int) -> Dict[str, float]:
    """Multiply-adds per output pixel of the encoder and of the decoding, for a size x size input at x scale."""
    inp = torch.rand(1, 3, size, size) * 2 - 1
    out_px = (size * scale) ** 2
    with FlopCounterMode(display=False) as enc:
        encode_bounded(model, inp)
    with FlopCounterMode(display=False) as whole:
        upscale(model, inp, (size * scale, size * scale))
    enc_macs = enc.get_total_flops() / 2
    return {'encoder_macs_px': enc_macs / out_px, 'decoder_macs_px': (whole.get_total_flops() / 2 - enc_macs) / out_px}


def child(case: Dict[str, Any]) -> Dict[str, Any]:
    """Measure one method in this process."""
    torch.manual_seed(0)
    model = models.make(METHODS[case['method']]).eval()
    size, scale = case['size'], case['scale']
    res = {'params': sum(p.numel() for p in model.parameters())}
    inp = torch.rand(1, 3, size, size) * 2 - 1
    before = peak_rss_mb()
    t = median_time(lambda: upscale(model, inp, (size * scale, size * scale)), 'cpu', case['repeat'])
    res['peak_mb'] = peak_rss_mb() - before
    res['mpx_s'] = (size * scale) ** 2 / t / 1e6
    res['seconds'] = t
    # counted on a smaller input (per-pixel costs do not depend on the image size), after the peak was read
    res.update(count_macs(model, 32, scale))
    return res


def main() -> None:
    """Run every registered method in a child process and print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--size', type=int, default=128, help="input side (default 128)")
    p.add_argument('--scale', type=int, default=4)
    p.add_argument('--repeat', type=int, default=2)
    p.add_argument('--child', default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    print(f"# {environment('cpu')}; {args.size}x{args.size} -> {args.size * args.scale}x{args.size * args.scale}, fp32")
    print("| method | params | encoder MACs/px | decoding MACs/px | Mpx/s | s | peak memory (MB) |")
    print("|---|---|---|---|---|---|---|")
    for name, spec in METHODS.items():
        if spec['name'] not in models.list_models():
            print(f"| {name} | not registered | | | | | |")
            continue
        r = run_child(os.path.abspath(__file__), {'method': name, 'size': args.size, 'scale': args.scale,
                                                  'repeat': args.repeat}, [])
        print(f"| {name} | {r['params'] / 1e6:.2f} M | {r['encoder_macs_px'] / 1e3:.1f} K | "
              f"{r['decoder_macs_px'] / 1e3:.1f} K | {r['mpx_s']:.3f} | {r['seconds']:.2f} | {r['peak_mb']:.0f} |",
              flush=True)


if __name__ == '__main__':
    main()
