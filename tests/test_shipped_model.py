"""The bundled model: it loads, it is small, and the README's Set5 numbers are recomputed here.

The bicubic rows are recomputed independently of the evaluation code (only the MATLAB-exact
utils.imresize and utils.metrics, which external vectors pin, and PIL): HR cropped to a multiple
of the scale, LR by MATLAB bicubic (x2-x4, as the LR_bicubic folders) or PIL bicubic (above x4, as
the paper), upscaled by MATLAB bicubic, PSNR and SSIM on Y with `scale` pixels shaved.
"""
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import shared_path
from tests.helpers import ROOT, one_thread  # noqa: F401
from utils.config import load_config
from utils.imresize import imresize
from utils.metrics import psnr, ssim
from evaluation.protocol import evaluate, liif_predictor, make_test_loader, parse_eval_type
from inference.loading import load_sr_model

WEIGHTS = os.path.join(ROOT, 'weights', 'liif-edsr-baseline.pth')
CPU = torch.device('cpu')
OURS = 'LIIF, this repo'


def readme_cells() -> dict:
    """{(dataset, method): {scale: 'PSNR / SSIM' or 'PSNR' as printed}} from the README's benchmark table."""
    text = open(os.path.join(ROOT, 'README.md')).read()
    block = re.search(r'<!-- results:benchmark -->(.*?)<!-- /results:benchmark -->', text, re.S)
    assert block, "README.md lost its <!-- results:benchmark --> table"
    rows = [[c.strip().strip('*') for c in ln.strip().strip('|').split('|')] for ln in block.group(1).strip().splitlines()]
    header = rows[0]
    scales = {i: int(h.lstrip('x')) for i, h in enumerate(header) if re.fullmatch(r'x\d+', h)}
    return {(row[0], row[1]): {s: row[i] for i, s in scales.items() if re.match(r'\d', row[i])} for row in rows[2:]}


def readme_results() -> dict:
    """{(dataset, method): {scale: psnr}} from the README's benchmark table."""
    return {key: {s: float(cell.split('/')[0]) for s, cell in cells.items()} for key, cells in readme_cells().items()}


def printed(psnr_db: float, ssim_value: float) -> str:
    """A table cell as the README prints it."""
    return f'{psnr_db:.2f} / {ssim_value:.4f}'


def test_shipped_weights_are_small_and_self_describing():
    assert os.path.getsize(WEIGHTS) <= 8 * 10 ** 6
    ckpt = torch.load(WEIGHTS, map_location='cpu', weights_only=True)
    assert ckpt['model']['name'] == 'liif'
    assert ckpt['model']['args']['encoder_spec']['name'] == 'edsr-baseline'
    assert os.path.isfile(os.path.join(ROOT, 'weights', 'MODEL_CARD.md'))


def test_readme_table_beats_bicubic_everywhere():
    table = readme_results()
    for ds in ('Set5', 'Set14', 'B100'):
        ours, bic = table[(ds, OURS)], table[(ds, 'Bicubic')]
        assert set(ours) == set(bic) == {2, 3, 4, 6, 8, 12}
        assert all(ours[s] > bic[s] for s in ours), ds
    assert table[('Set5', OURS)][2] - table[('Set5', 'Bicubic')][2] >= 3.0
    assert table[('Set5', OURS)][4] - table[('Set5', 'Bicubic')][4] >= 2.0


def _bicubic_scores(hr_folder: str, scale: int):
    """Mean (PSNR, SSIM) of bicubic upsampling over the folder's images, computed from first principles."""
    psnrs, ssims = [], []
    for name in sorted(os.listdir(hr_folder)):
        hr = torch.from_numpy(np.array(Image.open(os.path.join(hr_folder, name)).convert('RGB'))).permute(2, 0, 1)
        if scale <= 4:  # MATLAB imresize of the uint8 HR, rounded to uint8 like the LR_bicubic PNGs
            h, w = hr.shape[1] // scale, hr.shape[2] // scale
            hr = hr[:, :h * scale, :w * scale]
            lr = imresize(hr, 1 / scale)
        else:  # PIL's bicubic, LR size floor(HR / scale), HR cropped to round(LR * scale)
            h, w = int(hr.shape[1] / scale + 1e-9), int(hr.shape[2] / scale + 1e-9)
            hr = hr[:, :round(h * scale), :round(w * scale)]
            small = Image.fromarray(hr.permute(1, 2, 0).numpy()).resize((w, h), Image.BICUBIC)
            lr = torch.from_numpy(np.array(small)).permute(2, 0, 1)
        assert lr.dtype == torch.uint8 and lr.shape[1:] == (h, w)
        sr = imresize(lr.double() / 255, size=tuple(hr.shape[1:])).clamp(0, 1)
        gt = hr.double() / 255
        psnrs.append(psnr(sr, gt, scale, y_channel=True).item())
        ssims.append(ssim(sr, gt, scale).item())
    return sum(psnrs) / len(psnrs), sum(ssims) / len(ssims)


def test_set5_bicubic_row_is_recomputed(one_thread):
    hr_folder = shared_path('benchmark', 'Set5', 'HR')
    row = readme_cells()[('Set5', 'Bicubic')]
    assert set(row) == {2, 3, 4, 6, 8, 12}
    for scale, cell in row.items():
        assert printed(*_bicubic_scores(hr_folder, scale)) == cell, scale


@pytest.mark.parametrize('scale', [2, 4])
def test_set5_model_row_is_recomputed(tmp_path, one_thread, scale):
    data_root = shared_path('benchmark')
    shared_path('benchmark', 'Set5', 'HR')
    cfg = load_config(os.path.join(ROOT, 'configs', 'test', f'test-set5-{scale}.yaml'))
    protocol = parse_eval_type(cfg['eval_type'])
    loader = make_test_loader(cfg['test_dataset'], protocol, str(tmp_path / 'lr'),
                              overrides=[('./load/benchmark', data_root)])
    model = load_sr_model(WEIGHTS, CPU)
    res = evaluate(liif_predictor(model, cfg['data_norm'], cfg['eval_bsize']), loader, protocol, CPU, with_ssim=True)
    assert res['images'] == 5
    assert printed(res['psnr'], res['ssim']) == readme_cells()[('Set5', OURS)][scale], res
