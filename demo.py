"""Upscale an image to any size with a LIIF model.

    python demo.py --input in.png --model liif.pth --scale 3.5 --output out.png
    python demo.py --input in.png --model liif.pth --resolution 1080,1920 --output out.png

The output is written band by band into one preallocated 8-bit (or 16-bit) buffer, then saved
through a temporary file and a rename: a failed run leaves no output file.
"""
import argparse
import logging
import math
import os
import sys
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from utils.cli import run_cli
from utils.errors import UserError
from utils.image_io import (NO_ALPHA_FORMATS, SIXTEEN_BIT_FORMATS, InputImage, output_format,
                            read_image, save_atomic)
from utils.imresize import RowResizer
from inference.bounded import iter_upscale_bands
from inference.loading import load_sr, select_device
from utils.norm import DEMO, DataNorm

log = logging.getLogger('demo')

BUNDLED_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'weights', 'liif-edsr-baseline.pth')
MAX_SIDE = 1 << 16
MAX_PIXELS = 1 << 30
# ITU-R 601 luma, the weights PIL uses for RGB -> L: grayscale inputs get grayscale outputs
LUMA = (0.299, 0.587, 0.114)


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--input', required=True, help="image to upscale (any format PIL reads)")
    p.add_argument('--model', default=None, help="LIIF / MetaSR checkpoint (default: the bundled model)")
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument('--resolution', help="output size H,W in pixels")
    size.add_argument('--scale', help="scale factor, any positive number (e.g. 2.5)")
    p.add_argument('--output', required=True, help="output image; the format follows the extension")
    p.add_argument('--gpu', default=None, help="CUDA device number, or cpu (default: cuda:0 when CUDA is present, else the CPU)")
    p.add_argument('--bsize', type=int, default=30000, help="queries per model call (bounds memory)")
    return p.parse_args(argv)


def target_size(in_hw: Sequence[int], resolution: Optional[str], scale: Optional[str]) -> Tuple[int, int]:
    """Output (H, W) from --resolution H,W or --scale S; zero, negative and absurd sizes are UserErrors."""
    if resolution is not None:
        parts = resolution.replace('x', ',').split(',')
        try:
            h, w = (int(v) for v in parts)
        except ValueError:
            raise UserError(f"--resolution takes H,W in pixels, not {resolution!r}") from None
    else:
        try:
            s = float(scale)
        except ValueError:
            raise UserError(f"--scale takes a number, not {scale!r}") from None
        if not (math.isfinite(s) and s > 0):
            raise UserError(f"--scale must be a positive number, not {scale}")
        if max(in_hw) * s > 4 * MAX_SIDE:  # keeps round() away from huge floats
            raise UserError(f"--scale {scale} gives an output wider than the {MAX_SIDE} px limit")
        h, w = round(in_hw[0] * s), round(in_hw[1] * s)
    if h < 1 or w < 1:
        raise UserError(f"output size {h}x{w} must be at least 1x1 pixel")
    if max(h, w) > MAX_SIDE or h * w > MAX_PIXELS:
        raise UserError(f"output size {h}x{w} is beyond the limits ({MAX_SIDE} px a side, "
                        f"{MAX_PIXELS} px in all)")
    return h, w


def resolve_model(path: Optional[str]) -> str:
    """The checkpoint to use: --model, else the bundled one if it exists."""
    if path is not None:
        return path
    if not os.path.isfile(BUNDLED_MODEL):
        raise UserError(f"no bundled model at {os.path.relpath(BUNDLED_MODEL)}: pass --model CKPT")
    return BUNDLED_MODEL


def _quantise(x: torch.Tensor, peak: int, dtype) -> np.ndarray:
    """(C, rows, W) float in [0, 1] -> (rows, W, C) integers, rounded to nearest."""
    return x.clamp(0, 1).mul_(peak).round_().permute(1, 2, 0).cpu().numpy().astype(dtype)


@torch.no_grad()
def upscale_image(model: torch.nn.Module, img: InputImage, size: Tuple[int, int], fmt: str,
                  device: torch.device, bsize: int, norm: DataNorm = DEMO) -> np.ndarray:
    """The upscaled image as (H, W, C) integers, filled one band of rows at a time; norm: the model's."""
    h, w = size
    sixteen = img.bits == 16 and fmt in SIXTEEN_BIT_FORMATS
    dtype, peak = (np.uint16, 65535) if sixteen else (np.uint8, 255)
    keep_alpha = img.alpha is not None and fmt not in NO_ALPHA_FORMATS
    if img.alpha is not None and not keep_alpha:
        log.warning("%s has no alpha channel: transparency is dropped", fmt)
    colours = 1 if img.gray else 3
    out = np.empty((h, w, colours + int(keep_alpha)), dtype)
    alpha_rows = RowResizer(img.alpha, size) if keep_alpha else None
    luma = torch.tensor(LUMA, device=device).view(3, 1, 1)
    inp = norm.inp(img.rgb.unsqueeze(0).to(device))
    with tqdm(total=h, unit='row', leave=False, disable=None) as bar:
        for r0, band in iter_upscale_bands(model, inp, size, bsize):
            rows = band.shape[-2]
            rgb = norm.output(band[0], channel_dim=0)
            colour = (rgb.clamp(0, 1) * luma).sum(dim=0, keepdim=True) if img.gray else rgb
            out[r0:r0 + rows, :, :colours] = _quantise(colour, peak, dtype)
            if alpha_rows is not None:
                out[r0:r0 + rows, :, colours:] = _quantise(alpha_rows(r0, r0 + rows), peak, dtype)
            bar.update(rows)
    return out


def main(argv: Optional[List[str]] = None) -> None:
    """Read, check sizes and paths, upscale, write atomically."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    if args.bsize < 1:
        raise UserError(f"--bsize must be positive, not {args.bsize}")
    fmt = output_format(args.output)
    img = read_image(args.input)
    size = target_size(img.size, args.resolution, args.scale)
    device = select_device(args.gpu)
    loaded = load_sr(resolve_model(args.model), device, DEMO, "the authors' demo convention")
    log.info("%s: %dx%d%s%s -> %dx%d on %s", args.input, img.size[0], img.size[1],
             ' gray' if img.gray else '', ' +alpha' if img.alpha is not None else '', size[0], size[1], device)
    out = upscale_image(loaded.model, img, size, fmt, device, args.bsize, loaded.norm)
    save_atomic(out[:, :, 0] if out.shape[2] == 1 else out, args.output, fmt)
    print(f"wrote {args.output} ({size[0]}x{size[1]})")


if __name__ == '__main__':
    run_cli(lambda: main(sys.argv[1:]))
