import glob
import json
import logging
import math
import os

import numpy as np
import pytest
import torch

import models
from tests.conftest import shared_path
from tests.helpers import TINY_LIIF, one_thread  # noqa: F401  (fixture)
from utils.coord import make_cell, make_coord
from utils.errors import UserError
from evaluation.protocol import (apply_root_overrides, bicubic_predictor, evaluate, liif_predictor, make_test_loader,
                              parse_eval_type, parse_root_override)
from utils.image import read_rgb_u8, u8_to_float
from utils.imresize import imresize
from utils.metrics import ssim

CPU = torch.device('cpu')
NORM = {'inp': {'sub': [0.5], 'div': [0.5]}, 'gt': {'sub': [0.5], 'div': [0.5]}}


def _paired(lr_root, hr_root, **wrapper_args):
    return {'dataset': {'name': 'paired-image-folders', 'args': {'root_path_1': lr_root, 'root_path_2': hr_root}},
            'wrapper': {'name': 'sr-implicit-paired', 'args': wrapper_args}, 'batch_size': 1}


def _np_psnr(pred: np.ndarray, hr: np.ndarray, shave: int, y: bool) -> float:
    """Textbook PSNR, written independently of utils.metrics."""
    if y:
        w = np.array([65.481, 128.553, 24.966]).reshape(3, 1, 1) / 255
        pred, hr = (pred * w).sum(0), (hr * w).sum(0)
    d = (pred - hr)[..., shave:-shave, shave:-shave]
    return 10 * math.log10(1 / np.mean(d ** 2))


@pytest.mark.parametrize('eval_type,shave,y', [('div2k-4', 10, False), ('benchmark-3', 3, True), (None, 0, False)])
def test_protocols(eval_type, shave, y):
    p = parse_eval_type(eval_type)
    assert (p.shave, p.y_channel) == (shave, y)


@pytest.mark.parametrize('bad', ['div2k', 'benchmark-2.5', 'set5-2', 'div2k-0'])
def test_bad_eval_types(bad):
    with pytest.raises(UserError, match='eval_type'):
        parse_eval_type(bad)


def test_root_overrides():
    assert parse_root_override('/data') == ('./load', '/data')
    assert parse_root_override('./load/benchmark/=/b') == ('./load/benchmark', '/b')
    with pytest.raises(UserError):
        parse_root_override('=/b')
    spec = {'dataset': {'name': 'x', 'args': {'root_path_1': './load/benchmark/Set5/LR_bicubic/X2',
                                              'root_path_2': './load/benchmark/Set5/HR',
                                              'split_file': './loader/split.json', 'scale': './load'}}}
    out = apply_root_overrides(spec, [('./load/benchmark', '/b'), ('./load', '/data')])
    assert out['dataset']['args'] == {'root_path_1': '/b/Set5/LR_bicubic/X2', 'root_path_2': '/b/Set5/HR',
                                      'split_file': './loader/split.json', 'scale': './load'}
    assert spec['dataset']['args']['root_path_2'] == './load/benchmark/Set5/HR'  # input untouched


@pytest.mark.usefixtures('one_thread')
def test_div2k_protocol_with_bicubic_on_published_lr():
    root = shared_path('reference', 'rcan-set5')
    lr_root, hr_root = os.path.join(root, 'LR_bicubic', 'x3'), os.path.join(root, 'HR', 'x3')
    loader = make_test_loader(_paired(lr_root, hr_root), parse_eval_type('div2k-3'), 'unused')
    res = evaluate(bicubic_predictor(), loader, parse_eval_type('div2k-3'), CPU, with_ssim=True)
    expected, expected_ssim = [], []
    for lr_path, hr_path in zip(sorted(glob.glob(lr_root + '/*.png')), sorted(glob.glob(hr_root + '/*.png'))):
        lr, hr = u8_to_float(read_rgb_u8(lr_path)).double(), u8_to_float(read_rgb_u8(hr_path)).double()
        up = imresize(lr, size=hr.shape[-2:]).clamp(0, 1)
        expected.append(_np_psnr(up.numpy(), hr.numpy(), shave=9, y=False))
        expected_ssim.append(ssim(up, hr, shave=9).item())  # on Y, the same shave
    assert res['images'] == 5
    assert res['psnr'] == pytest.approx(np.mean(expected), abs=1e-4)
    assert res['psnr'] == pytest.approx(28.662395, abs=1e-4)
    assert res['ssim'] == pytest.approx(np.mean(expected_ssim), abs=1e-6)
    assert res['ssim'] == pytest.approx(0.8696315, abs=1e-6)


@pytest.mark.usefixtures('one_thread')
def test_liif_protocol_and_generated_lr(tmp_path, caplog):
    rcan = shared_path('reference', 'rcan-set5')
    (tmp_path / 'split.json').write_text(json.dumps({'test': ['butterfly_HR_x2.png']}))
    spec = _paired(str(tmp_path / 'LR_bicubic' / 'X2'), os.path.join(rcan, 'HR', 'x2'))
    spec['dataset']['args'].update(split_file=str(tmp_path / 'split.json'), split_key='test')
    with caplog.at_level(logging.INFO):
        loader = make_test_loader(spec, parse_eval_type(None), str(tmp_path / 'cache'))
    assert 'not found' in caplog.text and '1 generated now' in caplog.text  # scale 2 read from 'X2'
    model = models.make(TINY_LIIF).eval()
    res = evaluate(liif_predictor(model, NORM, 1000), loader, parse_eval_type('benchmark-2'), CPU)
    # the paper's pipeline by hand on the published LR: the whole HR grid through model(),
    # de-normalised, clamped, PSNR on Y with 2 px shaved
    lr = read_rgb_u8(os.path.join(rcan, 'LR_bicubic', 'x2', 'butterfly_LRBI_x2.png'))
    hr = read_rgb_u8(os.path.join(rcan, 'HR', 'x2', 'butterfly_HR_x2.png'))
    coord = make_coord((256, 256)).unsqueeze(0)
    with torch.no_grad():
        pred = model((u8_to_float(lr).unsqueeze(0) - 0.5) / 0.5, coord, make_cell(coord, (256, 256)))
    pred = (pred * 0.5 + 0.5).clamp(0, 1).view(256, 256, 3).permute(2, 0, 1)
    expected = _np_psnr(pred.double().numpy(), u8_to_float(hr).double().numpy(), shave=2, y=True)
    assert res['images'] == 1
    assert res['psnr'] == pytest.approx(expected, abs=1e-4)


def test_subsampling_wrappers_are_refused():
    root = shared_path('reference', 'rcan-set5')
    spec = _paired(os.path.join(root, 'LR_bicubic', 'x4'), os.path.join(root, 'HR', 'x4'), sample_q=100)
    loader = make_test_loader(spec, parse_eval_type('benchmark-4'), 'unused')
    with pytest.raises(UserError, match='every HR pixel'):
        evaluate(bicubic_predictor(), loader, parse_eval_type('benchmark-4'), CPU)


def test_missing_folders_are_user_errors(tmp_path):
    with pytest.raises(UserError, match='not found'):
        make_test_loader(_paired(str(tmp_path / 'LR' / 'X2'), str(tmp_path / 'HR')), parse_eval_type(None), 'x')
    with pytest.raises(UserError, match='test_dataset'):
        make_test_loader(None, parse_eval_type(None), 'x')
