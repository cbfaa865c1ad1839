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
from tests.helpers import (FIRST_VALUE_NORM, PER_CHANNEL_NORM, TINY_LIIF, manual_upscale, np_psnr,  # noqa: F401
                           one_thread, write_small_pairs)
from utils.coord import make_cell, make_coord
from utils.errors import UserError
from evaluation.protocol import (apply_root_overrides, batched_mean, batched_psnr, bicubic_predictor, evaluate,
                                 grid_shape, liif_predictor, make_test_loader, parse_eval_type, parse_root_override,
                                 query_psnr, query_squared_error)
from utils.image import read_rgb_u8, u8_to_float
from utils.imresize import imresize
from utils.norm import DataNorm
from utils.metrics import ssim

CPU = torch.device('cpu')
NORM = {'inp': {'sub': [0.5], 'div': [0.5]}, 'gt': {'sub': [0.5], 'div': [0.5]}}


def _paired(lr_root, hr_root, **wrapper_args):
    return {'dataset': {'name': 'paired-image-folders', 'args': {'root_path_1': lr_root, 'root_path_2': hr_root}},
            'wrapper': {'name': 'sr-implicit-paired', 'args': wrapper_args}, 'batch_size': 1}




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
        expected.append(np_psnr(up.numpy(), hr.numpy(), shave=9, y=False))
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
    expected = np_psnr(pred.double().numpy(), u8_to_float(hr).double().numpy(), shave=2, y=True)
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


@pytest.mark.usefixtures('one_thread')
def test_per_channel_data_norm_is_applied_per_channel(tmp_path):
    """A model of a 3-value data_norm is scored on its own inputs: not on the first value's (the old reading)."""
    lr_dir, hr_dir = write_small_pairs(shared_path('benchmark', 'Set5', 'HR'), tmp_path)
    model = models.make(TINY_LIIF).eval()
    protocol = parse_eval_type('benchmark-2')
    loader = make_test_loader(_paired(lr_dir, hr_dir), protocol, 'unused')
    res = evaluate(liif_predictor(model, DataNorm.from_mapping(PER_CHANNEL_NORM), 500), loader, protocol, CPU)
    expected, first_value = [], []
    for name in ('bird.png', 'head.png'):
        lr, hr = read_rgb_u8(os.path.join(lr_dir, name)), u8_to_float(read_rgb_u8(os.path.join(hr_dir, name)))
        expected.append(np_psnr(manual_upscale(model, lr.permute(1, 2, 0).numpy(), (48, 48), PER_CHANNEL_NORM),
                                hr.numpy(), shave=2, y=True))
        first_value.append(np_psnr(manual_upscale(model, lr.permute(1, 2, 0).numpy(), (48, 48), FIRST_VALUE_NORM),
                                   hr.numpy(), shave=2, y=True))
    assert res['images'] == 2
    assert res['psnr'] == pytest.approx(np.mean(expected), abs=1e-4)
    assert abs(np.mean(expected) - np.mean(first_value)) > 0.5  # the test tells the two readings apart
    # a mapping is read the same way
    again = evaluate(liif_predictor(model, PER_CHANNEL_NORM, 500), loader, protocol, CPU)
    assert again['psnr'] == res['psnr']


def test_query_psnr_shaves_the_border_and_takes_plain_subsets():
    gt = torch.rand(1, 40 * 40, 3)
    coord = make_coord((40, 40)).unsqueeze(0)
    noisy_border = gt.view(1, 40, 40, 3).clone()
    noisy_border[:, :2] += 0.5
    noisy = noisy_border.view(1, -1, 3)
    assert query_psnr(noisy, gt, coord, parse_eval_type('benchmark-4')).tolist() == [float('inf')]
    assert query_psnr(noisy, gt, coord, parse_eval_type('div2k-4')).tolist() == [float('inf')]
    noisy_border[:, 20, 20] += 0.1
    assert torch.isfinite(query_psnr(noisy, gt, coord, parse_eval_type('div2k-4'))).all()
    # no eval_type: RGB over whatever queries a sample has, its own PSNR per sample
    pred, target = torch.rand(2, 64, 3), torch.rand(2, 64, 3)
    got = query_psnr(pred, target, torch.zeros(2, 64, 2), parse_eval_type(None))
    expected = [np_psnr(pred[i].numpy().T, target[i].numpy().T, 0, False) for i in range(2)]
    assert got.tolist() == pytest.approx(expected, abs=1e-9)


def test_query_squared_error_sums_what_query_psnr_scores():
    pred, gt = torch.rand(2, 20 * 20, 3), torch.rand(2, 20 * 20, 3)
    coord = make_coord((20, 20)).unsqueeze(0).expand(2, -1, -1)
    sse, count = query_squared_error(pred, gt, coord, parse_eval_type('div2k-2'))
    assert count == 3 * 4 * 4  # RGB, 20 px shaved by 2 + 6 on each side
    d = (pred - gt).double().view(2, 20, 20, 3)[:, 8:12, 8:12]
    assert sse.tolist() == pytest.approx(d.pow(2).flatten(1).sum(1).tolist(), rel=1e-12)
    sse, count = query_squared_error(pred, gt, coord, parse_eval_type('benchmark-3'))
    assert count == 14 * 14  # Y, shave 3
    y = (d.new_tensor([65.481, 128.553, 24.966]) / 255 * (pred - gt).double().view(2, 20, 20, 3)).sum(-1)
    assert sse.tolist() == pytest.approx(y[:, 3:17, 3:17].pow(2).flatten(1).sum(1).tolist(), rel=1e-9)
    assert query_psnr(pred, gt, coord, parse_eval_type('benchmark-3')).tolist() == pytest.approx(
        (-10 * torch.log10(sse / count)).tolist(), abs=1e-9)


def test_batched_psnr_pools_each_single_process_batch():
    # 5 samples, batches of 2: {0, 1}, {2, 3}, {4}; sample 3 holds twice the values of sample 2
    sse = {0: 4.0, 1: 1.0, 2: 0.5, 3: 3.0, 4: 0.02}
    count = {0: 100, 1: 100, 2: 50, 3: 100, 4: 100}
    by_hand = -10 * (2 * math.log10(5.0 / 200) + 2 * math.log10(3.5 / 150) + math.log10(0.02 / 100)) / 5
    def in_order(order):
        return batched_psnr([sse[i] for i in order], [count[i] for i in order], order, 2)
    assert in_order([0, 1, 2, 3, 4]) == pytest.approx(by_hand, abs=1e-12)
    # what two ranks deliver (rank 0: 0, 2, 4; rank 1: 1, 3) gives the same figure
    assert in_order([0, 2, 4, 1, 3]) == pytest.approx(by_hand, abs=1e-12)
    per_sample = sum(-10 * math.log10(sse[i] / count[i]) for i in sse) / 5
    assert abs(by_hand - per_sample) > 0.5  # the per-sample mean is another figure
    # one batch holding every sample: the PSNR of the pooled MSE; an error-free batch scores inf
    assert batched_psnr([1.0, 3.0], [10, 30], [1, 0], 8) == pytest.approx(-10 * math.log10(4 / 40), abs=1e-12)
    assert batched_psnr([0.0, 0.0], [10, 10], [0, 1], 1) == math.inf
    # batched_mean: the same regrouping, pooled means instead of PSNRs
    assert batched_mean([6.0, 1.0, 2.0], [3, 1, 2], [2, 0, 1], 2) == pytest.approx((2 * 3 / 3 + 6 / 3) / 3, abs=1e-12)


@pytest.mark.parametrize('indices', [[0, 2], [0, 0], [1, 2]])
def test_batched_psnr_needs_each_index_once(indices):
    with pytest.raises(ValueError, match='each once'):
        batched_psnr([1.0, 1.0], [4, 4], indices, 2)


def test_grid_shape_needs_a_whole_grid():
    assert grid_shape(make_coord((5, 7))) == (5, 7)
    with pytest.raises(UserError, match='every HR pixel'):
        grid_shape(make_coord((5, 7))[torch.randperm(35)[:20]])
