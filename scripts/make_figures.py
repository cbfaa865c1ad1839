"""Draws the README's figures from a benchmark image and the bundled model (about a minute on two CPU cores).

    python scripts/make_figures.py                      # assets/figure_x4.png, assets/figure_scales.png
    python scripts/make_figures.py --image ../shared/data/benchmark/Set14/HR/comic.png --box 40,100,128 --out /tmp

figure_x4.png: a crop of the HR image at x4: nearest LR | bicubic | LIIF | HR, each with its PSNR
(Y channel, shave 4: the benchmark protocol). The crop is downscaled on its own (MATLAB bicubic, as
the benchmark LR), so its PSNRs are those of the crop, not of the whole image.
figure_scales.png: the LR centre of that crop rendered by LIIF at non-integer scales up to x30,
all shown at the same size (nearest neighbour), so finer scales show a smoother, sharper signal.
"""
import argparse
import os
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from evaluation.protocol import Predictor, Protocol, bicubic_predictor, liif_predictor  # noqa: E402
from inference.loading import load_sr  # noqa: E402
from utils.atomic import atomic_open  # noqa: E402
from utils.cli import run_cli  # noqa: E402
from utils.errors import UserError  # noqa: E402
from utils.image import float_to_u8, read_rgb_u8, u8_to_float  # noqa: E402
from utils.imresize import imresize  # noqa: E402
from utils.norm import DEMO  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_IMAGE = os.path.join(ROOT, '..', 'shared', 'data', 'benchmark', 'Set14', 'HR', 'monarch.png')
DEFAULT_BOX = (243, 357, 160)             # top, left, side of the HR crop: where LIIF gains most over bicubic
DEFAULT_SCALES = (1.5, 2.7, 4.3, 8, 17, 30)
SCALE = 4
LABEL_H = 16                              # pixels of text under each panel
CONTEXT = 8                               # LR px around the shown centre that figure_scales.png renders


@dataclass(frozen=True)
class Panel:
    """One image of a figure and the line of text under it."""
    image: np.ndarray                     # uint8 (H, W, 3)
    label: str


@dataclass(frozen=True)
class X4Result:
    """The x4 comparison: its panels, and the PSNRs (dB) printed under them."""
    panels: List[Panel]
    psnr: Dict[str, float]


def _u8(img: torch.Tensor) -> np.ndarray:
    """[0, 1] image (3, H, W) -> uint8 (H, W, 3)."""
    return float_to_u8(img).permute(1, 2, 0).numpy()


def x4_panels(hr_crop: torch.Tensor, model_predict: Predictor) -> X4Result:
    """Nearest LR | bicubic | LIIF | HR of a uint8 HR crop (3, H, W), H and W multiples of 4, PSNR under each."""
    h, w = hr_crop.shape[-2:]
    if h % SCALE or w % SCALE:
        raise UserError(f"the crop must be a multiple of {SCALE} px on each side, not {h}x{w}")
    lr = u8_to_float(imresize(hr_crop, scale=1 / SCALE)).unsqueeze(0)
    gt = u8_to_float(hr_crop).unsqueeze(0)
    protocol = Protocol('benchmark', SCALE)
    outputs = {'Nearest LR': F.interpolate(lr, size=(h, w), mode='nearest'),
               'Bicubic': bicubic_predictor()(lr, (h, w)),
               'LIIF': model_predict(lr, (h, w))}
    psnr = {k: float(protocol.psnr(v, gt)[0]) for k, v in outputs.items()}
    panels = [Panel(_u8(v[0]), f"{k} {psnr[k]:.2f} dB") for k, v in outputs.items()]
    panels.append(Panel(_u8(gt[0]), 'HR (PSNR on Y)'))
    return X4Result(panels, psnr)


def scale_panels(lr: torch.Tensor, model_predict: Predictor, scales: Sequence[float], view: int, tile: int
                 ) -> List[Panel]:
    """The central `view` LR px of lr (1, 3, h, w) rendered at each scale, shown at tile x tile px (nearest)."""
    h, w = lr.shape[-2:]
    panels = []
    for s in scales:
        out_h, out_w = round(h * s), round(w * s)
        out = model_predict(lr, (out_h, out_w))[0]
        side = max(1, round(view * s))
        top, left = (out_h - side) // 2, (out_w - side) // 2
        crop = out[:, top:top + side, left:left + side].unsqueeze(0)
        shown = F.interpolate(crop, size=(tile, tile), mode='nearest')[0]
        panels.append(Panel(_u8(shown), f"x{s:g} ({side} px)"))
    return panels


def compose(panels: Sequence[Panel], gap: int = 4) -> Image.Image:
    """The panels in one row on white, gap px apart, each label centred below its panel."""
    height = max(p.image.shape[0] for p in panels) + LABEL_H
    width = sum(p.image.shape[1] for p in panels) + gap * (len(panels) - 1)
    canvas = Image.new('RGB', (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    x = 0
    for p in panels:
        canvas.paste(Image.fromarray(p.image), (x, 0))
        text_w = draw.textlength(p.label, font=font)
        draw.text((x + (p.image.shape[1] - text_w) / 2, p.image.shape[0] + 2), p.label, fill=(0, 0, 0), font=font)
        x += p.image.shape[1] + gap
    return canvas


def _box(text: str) -> Tuple[int, int, int]:
    try:
        top, left, side = (int(v) for v in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected TOP,LEFT,SIDE (integers), not {text!r}") from None
    return top, left, side


def _scales(text: str) -> Tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, not {text!r}") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive scales, not {text!r}")
    return values


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--image', default=DEFAULT_IMAGE, help="HR image (default Set14's monarch.png)")
    p.add_argument('--box', type=_box, default=DEFAULT_BOX, metavar='TOP,LEFT,SIDE',
                   help=f"HR crop; SIDE a multiple of {SCALE} (default {','.join(map(str, DEFAULT_BOX))})")
    p.add_argument('--model', default=os.path.join(ROOT, 'weights', 'liif-edsr-baseline.pth'))
    p.add_argument('--scales', type=_scales, default=DEFAULT_SCALES, help="scales of figure_scales.png")
    p.add_argument('--view', type=int, default=8,
                   help="LR px across the centre shown by figure_scales.png (the largest scale is shown 1:1)")
    p.add_argument('--out', default=os.path.join(ROOT, 'assets'), help="folder for the two PNGs")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> List[str]:
    """Draw both figures; returns the paths written."""
    args = parse_args(argv)
    top, left, side = args.box
    hr = read_rgb_u8(args.image)
    if top < 0 or left < 0 or top + side > hr.shape[1] or left + side > hr.shape[2]:
        raise UserError(f"--box {top},{left},{side} lies outside {args.image} ({hr.shape[1]}x{hr.shape[2]} px)")
    torch.manual_seed(0)
    loaded = load_sr(args.model, torch.device('cpu'), DEMO, "the authors' demo convention")
    predict = liif_predictor(loaded.model, loaded.norm, None)
    crop = hr[:, top:top + side, left:left + side].contiguous()
    x4 = x4_panels(crop, predict)
    lr = u8_to_float(imresize(crop, scale=1 / SCALE)).unsqueeze(0)
    if not 1 <= args.view <= side // SCALE:
        raise UserError(f"--view must be 1 to {side // SCALE} LR px for a {side} px crop, not {args.view}")
    # only the centre and some context is rendered: x30 of the whole LR crop would take minutes on a CPU
    half = args.view // 2 + CONTEXT
    cy, cx = lr.shape[-2] // 2, lr.shape[-1] // 2
    centre = lr[..., max(0, cy - half):cy + half, max(0, cx - half):cx + half]
    scales = scale_panels(centre, predict, args.scales, args.view, tile=round(args.view * max(args.scales)))
    os.makedirs(args.out, exist_ok=True)
    written = []
    for name, panels in (('figure_x4.png', x4.panels), ('figure_scales.png', scales)):
        path = os.path.join(args.out, name)
        with atomic_open(path, 'wb') as f:
            compose(panels).save(f, format='PNG', optimize=True)
        written.append(path)
        print(f"{path}: {os.path.getsize(path) // 1024} KB")
    return written


if __name__ == '__main__':
    run_cli(lambda: main(sys.argv[1:]))
