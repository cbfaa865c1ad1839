"""Upscale an image to any size with a LIIF model.

    python demo.py --input in.png --model liif.pth --scale 3.5 --output out.png
    python demo.py --input in.png --model liif.pth --resolution 1080,1920 --output out.png
    python demo.py --input in.png --onnx onnx/liif --scale 4 --output out.png   (scripts/export_onnx.py)

The output is written band by band into one preallocated 8-bit (or 16-bit) buffer, then saved
through a temporary file and a rename: a failed run leaves no output file.
"""
import argparse
import dataclasses
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
                            read_image, same_file, save_atomic)
from utils.imresize import RowResizer
from inference.thin import THIN_SIDE, pad_thin_input
from inference.bounded import choose_test_time, iter_upscale_bands
from inference.loading import LoadedModel, load_sr, resolve_model, select_device
from inference.onnx_runner import OnnxSR
from utils.amp import AMP_DTYPES, resolve_precision
from utils.norm import DEMO, DataNorm
from utils import testtime
from utils.testtime import TestTime

log = logging.getLogger('demo')

MAX_SIDE = 1 << 16
MAX_PIXELS = 1 << 30
# ITU-R 601 luma, the weights PIL uses for RGB -> L: grayscale inputs get grayscale outputs
LUMA = (0.299, 0.587, 0.114)


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--input', required=True, help="image to upscale (any format PIL reads)")
    source = p.add_mutually_exclusive_group()
    source.add_argument('--model', default=None, help="LIIF / MetaSR checkpoint (default: the bundled model)")
    source.add_argument('--onnx', default=None, metavar='DIR',
                        help="run a model exported by scripts/export_onnx.py with onnxruntime (CPU) instead")
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument('--resolution', help="output size H,W in pixels (height first, as the original LIIF demo)")
    size.add_argument('--scale', help="scale factor, any positive number (e.g. 2.5; below 1: antialiased downscale)")
    p.add_argument('--output', required=True, help="output image; the format follows the extension")
    p.add_argument('--overwrite', action='store_true', help="allow --output to be the input file itself")
    p.add_argument('--gpu', default=None, help="CUDA device number (stops if CUDA is absent), or cpu "
                                               "(default: cuda:0 when CUDA is present, else the CPU)")
    p.add_argument('--bsize', type=int, default=30000, help="queries per model call (bounds memory)")
    p.add_argument('--precision', default='fp32', metavar='{fp32,bf16,fp16,auto}',
                   help="arithmetic of the model (default fp32); auto: bf16 on CUDA or a CPU with native bf16 "
                        "matmuls, else fp32. bf16 changes about 12% of the 8-bit values by 1-3 levels (README, Speed)")
    testtime.add_arguments(p)
    p.add_argument('--trust-checkpoint', action='store_true',
                   help="load a checkpoint holding arbitrary Python objects (runs code from the file)")
    return p.parse_args(_glue_values(list(sys.argv[1:] if argv is None else argv)))


def _glue_values(argv: List[str]) -> List[str]:
    """'--resolution -5,5' -> '--resolution=-5,5': argparse takes '-5,5' for an option and prints its usage."""
    out: List[str] = []
    for arg in argv:
        if out and out[-1] in ('--resolution', '--scale') and arg.startswith('-') and len(arg) > 1:
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


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
        raise UserError(f"output size {wxh((h, w))} must be at least 1x1 pixel")
    if max(h, w) > MAX_SIDE or h * w > MAX_PIXELS:
        raise UserError(f"output size {wxh((h, w))} is beyond the limits ({MAX_SIDE} px a side, "
                        f"{MAX_PIXELS} px in all)")
    return h, w


def wxh(hw: Sequence[int]) -> str:
    """A (h, w) size written the way image tools write it: 'WxH'."""
    return f"{hw[1]}x{hw[0]}"


def _quantise(x: torch.Tensor, peak: int, dtype) -> np.ndarray:
    """(C, rows, W) float in [0, 1] -> (rows, W, C) integers, rounded to nearest."""
    return x.clamp(0, 1).mul_(peak).round_().permute(1, 2, 0).cpu().numpy().astype(dtype)


@torch.inference_mode()
def upscale_image(model: torch.nn.Module, img: InputImage, size: Tuple[int, int], fmt: str,
                  device: torch.device, bsize: int, norm: DataNorm = DEMO, amp: Optional[str] = None,
                  test_time: TestTime = testtime.NONE) -> np.ndarray:
    """The upscaled image as (H, W, C) integers, filled one band of rows at a time; norm: the model's, amp: autocast."""
    h, w = size
    sixteen = img.bits == 16 and img.gray and fmt in SIXTEEN_BIT_FORMATS  # PIL writes no 16-bit RGB
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
        for r0, band in iter_upscale_bands(model, inp, size, bsize, amp=amp, test_time=test_time):
            rows = band.shape[-2]
            rgb = norm.output(band[0], channel_dim=0)
            colour = (rgb.clamp(0, 1) * luma).sum(dim=0, keepdim=True) if img.gray else rgb
            out[r0:r0 + rows, :, :colours] = _quantise(colour, peak, dtype)
            if alpha_rows is not None:
                out[r0:r0 + rows, :, colours:] = _quantise(alpha_rows(r0, r0 + rows), peak, dtype)
            bar.update(rows)
    return out


def downscale_image(img: InputImage, size: Tuple[int, int], fmt: str) -> np.ndarray:
    """The image made smaller with MATLAB's antialiased bicubic imresize, as (H, W, C) integers.

    LIIF samples its continuous image at the output pixel centres without any low-pass filter, so
    a smaller output aliases (moire); downscaling needs no model.
    """
    h, w = size
    sixteen = img.bits == 16 and img.gray and fmt in SIXTEEN_BIT_FORMATS
    dtype, peak = (np.uint16, 65535) if sixteen else (np.uint8, 255)
    keep_alpha = img.alpha is not None and fmt not in NO_ALPHA_FORMATS
    rgb = RowResizer(img.rgb[:1] if img.gray else img.rgb, size)(0, h)
    planes = [rgb] + ([RowResizer(img.alpha, size)(0, h)] if keep_alpha else [])
    return _quantise(torch.cat(planes), peak, dtype)


def check_paths(args: argparse.Namespace) -> str:
    """The output format, once the output path is known to be usable: before any image or model is loaded."""
    fmt = output_format(args.output)
    if os.path.exists(args.input) and same_file(args.input, args.output) and not args.overwrite:
        raise UserError(f"--output {args.output} is the input file: choose another name, or pass --overwrite "
                        f"to replace it")
    return fmt


def load_model_or_onnx(args: argparse.Namespace, device: torch.device) -> LoadedModel:
    """The --onnx export run by onnxruntime, else the --model (or bundled) checkpoint, with its normalisation."""
    if args.onnx is not None:
        runner = OnnxSR.load(args.onnx)
        log.info("running %s with onnxruntime", args.onnx)
        return LoadedModel(runner, runner.norm, f"manifest.json of {args.onnx}")
    return load_sr(resolve_model(args.model), device, DEMO, "the authors' demo convention",
                   trusted=args.trust_checkpoint)


def main(argv: Optional[List[str]] = None) -> None:
    """Read, check sizes and paths, upscale, write atomically."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    if args.bsize < 1:
        raise UserError(f"--bsize must be positive, not {args.bsize}")
    fmt = check_paths(args)
    img = read_image(args.input)
    for note in img.notes:
        (log.warning if 'frames' in note else log.info)("%s: %s", args.input, note)
    size = target_size(img.size, args.resolution, args.scale)
    if args.onnx is not None and args.gpu not in (None, '', 'cpu'):
        raise UserError("--onnx runs on the CPU (onnxruntime): drop --gpu")
    device = torch.device('cpu') if args.onnx is not None else select_device(args.gpu)
    if args.onnx is not None and args.precision in AMP_DTYPES:
        raise UserError(f"--precision {args.precision} applies to checkpoints: --onnx runs the export's fp32")
    precision = resolve_precision('fp32' if args.onnx is not None else args.precision, device)
    kind = ' gray' if img.gray else ''
    kind += ' +alpha' if img.alpha is not None else ''
    smaller = [name for name, a, b in (('height', size[0], img.size[0]), ('width', size[1], img.size[1])) if a < b]
    if smaller and size[0] <= img.size[0] and size[1] <= img.size[1]:
        log.info("%s: %s%s -> %s (width x height): smaller than the input, so no model is used: antialiased "
                 "bicubic downscale (MATLAB imresize), since LIIF's point sampling would alias", args.input,
                 wxh(img.size), kind, wxh(size))
        out = downscale_image(img, size, fmt)
    else:
        if img.bits == 16 and not img.gray and fmt in SIXTEEN_BIT_FORMATS:
            log.info("16-bit colour is written with 8 bits per channel (PIL writes no 16-bit RGB)")
        if smaller:
            log.warning("the output is smaller than the input in %s: LIIF samples without a low-pass filter, "
                        "so detail finer than the output grid aliases (moire) along it", smaller[0])
        loaded = load_model_or_onnx(args, device)
        model = loaded.model
        log.info("%s: %s%s -> %s (width x height) on %s", args.input, wxh(img.size), kind, wxh(size), device)
        test_time = choose_test_time(model, testtime.flag_values(args))
        log.info("precision %s (%s)", precision.name, precision.reason)
        log.info("test-time options: %s", test_time.describe())
        padded = pad_thin_input(model, img.rgb)
        if padded is not None:
            log.info("%s is thinner than %d px: upscaled within a copy whose edge pixels are replicated %d px "
                     "outward, as the encoder's zero padding would wash out its colours (a deviation from the "
                     "reference, see inference/thin.py)", args.input, THIN_SIDE, max(padded.rows, padded.cols))
            model, img = padded.model, dataclasses.replace(img, rgb=padded.rgb)
        out = upscale_image(model, img, size, fmt, device, args.bsize, loaded.norm, precision.amp, test_time)
    save_atomic(out[:, :, 0] if out.shape[2] == 1 else out, args.output, fmt)
    print(f"wrote {args.output} ({wxh(size)}, width x height)")


if __name__ == '__main__':
    run_cli(lambda: main(sys.argv[1:]))
