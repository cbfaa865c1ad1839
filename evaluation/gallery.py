"""An HTML gallery of an evaluation: per image, the window where the model gains most over bicubic.

Fed by `evaluate(..., on_image=writer.add)`: for each image the gallery upsamples the LR with the
protocol's MATLAB bicubic, finds the crop where |bicubic error| - |model error| summed over the
window is largest (errors on Y for Y-scored protocols, else summed over RGB; the shaved border
does not count), and writes that crop of bicubic, model and HR, plus the HR downsized with the
crop outlined. PSNR / SSIM are those of the whole image under the protocol (the model's as
`evaluate` scored it). Files are staged in a hidden folder and moved into place by `commit`, which
writes index.html last; an error discards the staging folder, so nothing half-written is left.
"""
import html
import os
import re
import shutil
import tempfile
import urllib.parse
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from datasets.image_folder import ImageFolder, PairedImageFolders
from evaluation.protocol import ImageScore, Protocol, bicubic_predictor
from utils.atomic import atomic_open
from utils.errors import UserError
from utils.image import float_to_u8
from utils.metrics import rgb_to_y, ssim

CROP = 64           # HR pixels on a side of the compared window
THUMB = 256         # longest side of the downsized full image
ZOOM = 3            # the crops are shown enlarged this much (nearest neighbour, in the browser)
PANELS = ('bicubic', 'model', 'hr')


@dataclass(frozen=True)
class Window:
    """A square window of an image: top-left corner and side, in pixels."""
    top: int
    left: int
    size: int


@dataclass(frozen=True)
class GalleryRow:
    """One image of the gallery: its name, files relative to the gallery folder, window and whole-image scores."""
    name: str
    full: str
    crops: Dict[str, str]
    window: Window
    psnr: Dict[str, float]
    ssim: Dict[str, float]


@dataclass
class _Section:
    title: str
    note: str
    folder: str
    protocol: Protocol
    names: Optional[List[str]]
    rows: List[GalleryRow]


def error_map(pred: torch.Tensor, gt: torch.Tensor, y_channel: bool) -> torch.Tensor:
    """Per-pixel absolute error (H, W), float64, of [0, 1] images (3, H, W): on Y, or summed over RGB."""
    a, b = pred.double(), gt.double()
    if y_channel:
        a, b = rgb_to_y(a), rgb_to_y(b)
    return (a - b).abs().sum(dim=0)


def gain_map(pred_bicubic: torch.Tensor, pred_model: torch.Tensor, gt: torch.Tensor, protocol: Protocol
             ) -> torch.Tensor:
    """|bicubic error| - |model error| per pixel (H, W), zero on the border the protocol shaves."""
    gain = error_map(pred_bicubic, gt, protocol.y_channel) - error_map(pred_model, gt, protocol.y_channel)
    s = protocol.shave
    if s > 0:
        inner = torch.zeros_like(gain)
        inner[s:-s, s:-s] = gain[s:-s, s:-s]
        gain = inner
    return gain


def best_window(gain: torch.Tensor, size: int) -> Window:
    """The size x size window (clipped to the image) of largest summed gain (H, W); the first in row order on ties."""
    size = max(1, min(size, *gain.shape))
    # summed-area table: every window sum in four lookups
    sat = F.pad(gain.double().cumsum(0).cumsum(1), (1, 0, 1, 0))
    sums = sat[size:, size:] - sat[:-size, size:] - sat[size:, :-size] + sat[:-size, :-size]
    k = int(torch.argmax(sums))  # the first maximum in row-major order
    return Window(k // sums.shape[1], k % sums.shape[1], size)


def dataset_names(dataset: Dataset) -> Optional[List[str]]:
    """File names of a (wrapped) image-folder dataset's HR images in loader order; None where unknown."""
    d = dataset
    for _ in range(8):  # wrappers nest a few levels deep at most
        if isinstance(d, PairedImageFolders):
            d = d.dataset_2
        elif isinstance(d, ImageFolder):
            if d.cache != 'none':
                return None
            return [os.path.basename(p) for p in d.items] * d.repeat
        else:
            d = getattr(d, 'dataset', None)
            if d is None:
                return None
    return None


def _slug(text: str) -> str:
    """A file-name-safe version of text: letters, digits, '.', '_', '-'."""
    return re.sub(r'[^A-Za-z0-9._-]+', '_', text).strip('._') or 'image'


def _u8(img: torch.Tensor) -> np.ndarray:
    """[0, 1] image (3, H, W) -> uint8 array (H, W, 3)."""
    return float_to_u8(img.detach().cpu()).permute(1, 2, 0).numpy()


def _save_png(arr: np.ndarray, path: str) -> None:
    Image.fromarray(arr).save(path, optimize=True)


def _thumbnail(gt: torch.Tensor, window: Window, longest: int) -> np.ndarray:
    """The HR image downsized to `longest` px on its longer side (never enlarged), the window outlined in red."""
    img = Image.fromarray(_u8(gt))
    f = min(1.0, longest / max(img.size))
    if f < 1:
        img = img.resize((max(1, round(img.width * f)), max(1, round(img.height * f))), Image.BICUBIC)
    box = [window.left * f, window.top * f, (window.left + window.size) * f - 1, (window.top + window.size) * f - 1]
    ImageDraw.Draw(img).rectangle(box, outline=(255, 0, 0), width=2)
    return np.asarray(img)


class GalleryWriter:
    """Collects evaluated images into a staging folder under `folder`; commit() publishes them and index.html.

    Use: writer.section(title, protocol, names); evaluate(..., on_image=writer.add); ...; writer.commit().
    As a context manager it commits on success and discards everything on an exception.
    """

    def __init__(self, folder: str, title: str = 'Evaluation gallery', crop: int = CROP, thumb: int = THUMB):
        try:
            os.makedirs(folder, exist_ok=True)
            self._stage = tempfile.mkdtemp(prefix='.gallery-', dir=folder)
        except OSError as e:
            raise UserError(f"cannot write the gallery folder {folder}: {e.strerror}") from None
        self.folder, self.title, self.crop, self.thumb = folder, title, crop, thumb
        self.sections: List[_Section] = []

    def __enter__(self) -> 'GalleryWriter':
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()

    def section(self, title: str, protocol: Protocol, names: Optional[Sequence[str]] = None, note: str = '') -> None:
        """Start a table (one dataset at one scale): the images added next belong to it."""
        folder = f"{len(self.sections) + 1:02d}_{_slug(title)}"
        os.makedirs(os.path.join(self._stage, folder))
        self.sections.append(_Section(title, note, folder, protocol, list(names) if names else None, []))

    def add(self, score: ImageScore) -> None:
        """Compare one evaluated image with bicubic and write its crops (the `on_image` of evaluate)."""
        if not self.sections:
            raise RuntimeError("GalleryWriter.add before section()")
        sec = self.sections[-1]
        # on the CPU: the files are written from there, and the evaluation's device memory stays free
        inp, pred, gt = (t.detach().float().cpu() for t in (score.inp, score.pred, score.gt))
        bic = bicubic_predictor()(inp.unsqueeze(0), tuple(gt.shape[-2:]))[0]
        window = best_window(gain_map(bic, pred, gt, sec.protocol), self.crop)
        name = sec.names[score.index] if sec.names and score.index < len(sec.names) else f"image {score.index + 1}"
        stem = f"{score.index + 1:04d}_{_slug(os.path.splitext(name)[0])}"
        rows, cols = slice(window.top, window.top + window.size), slice(window.left, window.left + window.size)
        crops = {}
        for key, img in zip(PANELS, (bic, pred, gt)):
            crops[key] = f"{sec.folder}/{stem}_{key}.png"
            _save_png(_u8(img[:, rows, cols]), os.path.join(self._stage, crops[key]))
        full = f"{sec.folder}/{stem}_full.png"
        _save_png(_thumbnail(gt, window, self.thumb), os.path.join(self._stage, full))
        model_ssim = score.ssim if score.ssim is not None else float(ssim(pred, gt, sec.protocol.shave))
        sec.rows.append(GalleryRow(
            name, full, crops, window,
            psnr={'bicubic': float(sec.protocol.psnr(bic.unsqueeze(0), gt.unsqueeze(0))[0]), 'model': score.psnr},
            ssim={'bicubic': float(ssim(bic, gt, sec.protocol.shave)), 'model': model_ssim}))

    def render(self) -> str:
        """index.html: one table per section, rows in evaluation order, relative links."""
        e = html.escape
        out = ['<!DOCTYPE html>', '<html><head><meta charset="utf-8">', f'<title>{e(self.title)}</title>',
               '<style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}'
               'td,th{border:1px solid #ccc;padding:4px;text-align:center;vertical-align:top}'
               f'img.crop{{width:{ZOOM * self.crop}px;image-rendering:pixelated}}</style>',
               '</head><body>', f'<h1>{e(self.title)}</h1>',
               f'<p>Per image: the {self.crop} px window where |bicubic error| &minus; |model error| '
               f'summed over the window is largest (shown {ZOOM}x, nearest neighbour), and the HR image '
               'downsized with that window outlined. PSNR (dB) / SSIM of the whole image.</p>']
        for sec in self.sections:
            note = e(sec.protocol.describe()) + (f"; {e(sec.note)}" if sec.note else '')
            out += [f'<h2>{e(sec.title)}</h2>', f'<p>{note}</p>',
                    '<table>', '<tr><th>#</th><th>image</th><th>HR, downsized</th><th>Bicubic</th><th>Model</th>'
                    '<th>HR</th></tr>']
            for i, row in enumerate(sec.rows, 1):
                full = e(urllib.parse.quote(row.full))
                cells = [f'<td>{i}</td>', f'<td>{e(row.name)}</td>',
                         f'<td><a href="{full}"><img src="{full}" alt="{e(row.name)}"></a></td>']
                for key in PANELS:
                    src = e(urllib.parse.quote(row.crops[key]))
                    score = ''
                    if key in row.psnr:
                        score = (f'<br><span class="score" data-psnr="{row.psnr[key]!r}" data-ssim="{row.ssim[key]!r}">'
                                 f'{row.psnr[key]:.2f} dB / {row.ssim[key]:.4f}</span>')
                    cells.append(f'<td class="{key}"><a href="{src}"><img class="crop" src="{src}" alt="{key}"></a>'
                                 f'{score}</td>')
                out.append('<tr>' + ''.join(cells) + '</tr>')
            out.append('</table>')
        out.append('</body></html>')
        return '\n'.join(out) + '\n'

    def commit(self) -> str:
        """Move the staged images into the gallery folder, then write index.html (last); returns its path."""
        page = self.render()
        for sec in self.sections:
            os.makedirs(os.path.join(self.folder, sec.folder), exist_ok=True)
            for row in sec.rows:
                for rel in (row.full, *row.crops.values()):
                    os.replace(os.path.join(self._stage, rel), os.path.join(self.folder, rel))
        index = os.path.join(self.folder, 'index.html')
        with atomic_open(index, 'w') as f:
            f.write(page)
        self.discard()
        return index

    def discard(self) -> None:
        """Remove the staging folder and whatever it still holds."""
        shutil.rmtree(self._stage, ignore_errors=True)
