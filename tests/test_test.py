"""test.py as a user runs it: the printed numbers, the generated LR, the errors."""
import os
import types

import pytest
import torch
import yaml

import models
from tests.conftest import shared_path
from tests.helpers import (ENCODER_ONLY, FIRST_VALUE_NORM, PER_CHANNEL_NORM, ROOT, TINY_LIIF,  # noqa: F401
                           error_lines, load_script, manual_upscale, np_psnr, one_thread, run_script, save_model,
                           write_small_pairs)
from utils.errors import UserError
from utils.testtime import TestTime
from utils.image import read_rgb_u8, u8_to_float
from evaluation.protocol import bicubic_predictor, evaluate, liif_predictor, make_test_loader, parse_eval_type
from inference.loading import load_sr_model

CPU = torch.device('cpu')

pytestmark = pytest.mark.usefixtures('one_thread')  # in-process parts: see tests/helpers.py


def _printed(stdout: str) -> dict:
    return {k: float(v) for k, v in (ln.split(': ') for ln in stdout.strip().splitlines())}


def test_set5_x2_end_to_end(tmp_path):
    shared_path('benchmark', 'Set5', 'HR')
    ckpt = save_model(tmp_path / 'tiny.pth', TINY_LIIF)
    cache = tmp_path / 'cache'
    config = os.path.join(ROOT, 'configs', 'test', 'test-set5-2.yaml')
    data_root = os.path.dirname(shared_path('benchmark'))
    proc = run_script('test.py', '--config', config, '--model', ckpt, '--data-root', data_root,
                      '--lr-cache', cache, '--ssim', '--eval-bsize', 5000)
    assert proc.returncode == 0, proc.stderr
    printed = _printed(proc.stdout)
    assert set(printed) == {'psnr', 'ssim'}
    assert 'LR_bicubic/X2 not found' in proc.stderr and '5 generated now' in proc.stderr
    assert 'PSNR on Y, shave 2 px' in proc.stderr
    gen = [os.path.join(r, f) for r, _, fs in os.walk(cache) for f in fs]
    assert len(gen) == 5
    # the same numbers from the library on the published LR files (so the generated LR was exact)
    rcan = shared_path('reference', 'rcan-set5')
    spec = {'dataset': {'name': 'paired-image-folders', 'args': {
        'root_path_1': os.path.join(rcan, 'LR_bicubic', 'x2'), 'root_path_2': os.path.join(rcan, 'HR', 'x2')}},
        'wrapper': {'name': 'sr-implicit-paired', 'args': {}}, 'batch_size': 1}
    protocol = parse_eval_type('benchmark-2')
    model = load_sr_model(ckpt, CPU)
    res = evaluate(liif_predictor(model, yaml.safe_load(open(config))['data_norm'], 30000),
                   make_test_loader(spec, protocol, 'unused'), protocol, CPU, with_ssim=True)
    # printed with 4 decimals: equal up to that rounding
    assert printed['psnr'] == pytest.approx(res['psnr'], abs=5e-5 + 1e-9)
    assert printed['ssim'] == pytest.approx(res['ssim'], abs=5e-5 + 1e-9)
    # a random model is far worse than bicubic: the score is the model's, not the input's
    bic = evaluate(bicubic_predictor(), make_test_loader(spec, protocol, 'unused'), protocol, CPU)
    assert printed['psnr'] < bic['psnr'] - 5


def _small_config(tmp_path, data_norm=None):
    lr_dir, hr_dir = write_small_pairs(shared_path('benchmark', 'Set5', 'HR'), tmp_path)
    cfg = {'test_dataset': {'dataset': {'name': 'paired-image-folders',
                                        'args': {'root_path_1': lr_dir, 'root_path_2': hr_dir}},
                            'wrapper': {'name': 'sr-implicit-paired', 'args': {}}, 'batch_size': 1},
           'eval_type': 'benchmark-2'}
    if data_norm is not None:
        cfg['data_norm'] = data_norm
    (tmp_path / 'cfg.yaml').write_text(yaml.safe_dump(cfg))
    return str(tmp_path / 'cfg.yaml'), lr_dir, hr_dir


def _by_hand(ckpt, lr_dir, hr_dir, data_norm):
    """Mean Y PSNR (shave 2) of the model's whole-grid outputs, normalised by hand."""
    model = load_sr_model(ckpt, CPU)
    out = []
    for name in ('bird.png', 'head.png'):
        lr = read_rgb_u8(os.path.join(lr_dir, name)).permute(1, 2, 0).numpy()
        hr = u8_to_float(read_rgb_u8(os.path.join(hr_dir, name))).numpy()
        out.append(np_psnr(manual_upscale(model, lr, (48, 48), data_norm), hr, shave=2, y=True))
    return sum(out) / len(out)


@pytest.mark.parametrize('stored_in', ['checkpoint', 'config'])
def test_per_channel_data_norm_of_the_checkpoint_or_the_config(tmp_path, stored_in):
    """The checkpoint's own 3-value data_norm beats the config's 0.5; a released file uses the config's."""
    if stored_in == 'checkpoint':
        ckpt = save_model(tmp_path / 'tiny.pth', TINY_LIIF, data_norm=PER_CHANNEL_NORM)
        config, lr_dir, hr_dir = _small_config(tmp_path, {'inp': {'sub': [0.5], 'div': [0.5]},
                                                          'gt': {'sub': [0.5], 'div': [0.5]}})
    else:
        ckpt = save_model(tmp_path / 'tiny.pth', TINY_LIIF)
        config, lr_dir, hr_dir = _small_config(tmp_path, PER_CHANNEL_NORM)
    proc = run_script('test.py', '--config', config, '--model', ckpt)
    assert proc.returncode == 0, proc.stderr
    expected = _by_hand(ckpt, lr_dir, hr_dir, PER_CHANNEL_NORM)
    assert _printed(proc.stdout)['psnr'] == pytest.approx(expected, abs=1e-4)
    assert abs(expected - _by_hand(ckpt, lr_dir, hr_dir, FIRST_VALUE_NORM)) > 0.5  # the old reading is far off
    if stored_in == 'checkpoint':
        assert "using the checkpoint's (data_norm: inp sub 0.45,0.5,0.35" in proc.stderr
    else:
        assert f'tiny.pth stores none, using the data_norm of {config}' in proc.stderr


def test_config_without_data_norm_means_no_normalisation(tmp_path):
    ckpt = save_model(tmp_path / 'tiny.pth', TINY_LIIF)
    config, lr_dir, hr_dir = _small_config(tmp_path)
    proc = run_script('test.py', '--config', config, '--model', ckpt)
    assert proc.returncode == 0, proc.stderr
    identity = {'inp': {'sub': [0], 'div': [1]}, 'gt': {'sub': [0], 'div': [1]}}
    assert _printed(proc.stdout)['psnr'] == pytest.approx(_by_hand(ckpt, lr_dir, hr_dir, identity), abs=1e-4)
    assert "no normalisation (the authors' default" in proc.stderr


@pytest.mark.parametrize('case', ['wrong-model', 'bad-eval-type', 'missing-data'])
def test_errors_are_one_line_and_exit_2(tmp_path, case):
    cfg = yaml.safe_load(open(os.path.join(ROOT, 'configs', 'test', 'test-set5-6.yaml')))
    model = save_model(tmp_path / 'model.pth', ENCODER_ONLY if case == 'wrong-model' else TINY_LIIF)
    if case == 'bad-eval-type':
        cfg['eval_type'] = 'benchmark-x6'
    data_root = tmp_path / 'nowhere' if case == 'missing-data' else os.path.dirname(shared_path('benchmark'))
    (tmp_path / 'cfg.yaml').write_text(yaml.safe_dump(cfg))
    proc = run_script('test.py', '--config', tmp_path / 'cfg.yaml', '--model', model, '--data-root', data_root)
    assert proc.returncode == 2
    errors = error_lines(proc)
    assert len(errors) == 1 and errors[0].startswith('error: '), proc.stderr
    assert {'wrong-model': "holds a 'edsr-baseline' model", 'bad-eval-type': 'eval_type',
            'missing-data': 'dataset folder not found'}[case] in errors[0]
    assert proc.stdout == ''


class _Stop(Exception):
    pass


@pytest.mark.parametrize('argv,amp', [([], None), (['--precision', 'bf16'], 'bf16')])
def test_precision_is_fp32_unless_asked(tmp_path, monkeypatch, argv, amp):
    script = load_script('test.py')
    seen = []

    def predictor(model, norm, bsize, amp=None, test_time=None):
        seen.append(amp)
        raise _Stop

    monkeypatch.setattr(script, 'make_test_loader', lambda *a, **k: types.SimpleNamespace(dataset=[]))
    monkeypatch.setattr(script, 'liif_predictor', predictor)
    with pytest.raises(_Stop):
        script.main(['--config', os.path.join(ROOT, 'configs', 'test', 'test-set5-2.yaml'),
                     '--model', save_model(tmp_path / 'tiny.pth', TINY_LIIF), '--gpu', 'cpu'] + argv)
    assert seen == [amp]


@pytest.mark.parametrize('cfg_keys,argv,want', [
    ({}, [], TestTime()),  # LIIF: the authors use none
    ({'cell_max_scale': 4, 'window': 8}, [], TestTime(4.0, 8)),
    ({'cell_max_scale': 4}, ['--cell-max-scale', 'none', '--window', '8'], TestTime(None, 8)),
    ({}, ['--cell-max-scale', '6'], TestTime(6.0, None)),
])
def test_test_time_options_come_from_model_config_then_flags(tmp_path, monkeypatch, cfg_keys, argv, want):
    script = load_script('test.py')
    seen = []

    def predictor(model, norm, bsize, amp=None, test_time=None):
        seen.append(test_time)
        raise _Stop

    with open(os.path.join(ROOT, 'configs', 'test', 'test-set5-2.yaml')) as f:
        cfg = yaml.safe_load(f)
    cfg.update(cfg_keys)
    config = tmp_path / 'cfg.yaml'
    config.write_text(yaml.safe_dump(cfg))
    monkeypatch.setattr(script, 'make_test_loader', lambda *a, **k: types.SimpleNamespace(dataset=[]))
    monkeypatch.setattr(script, 'liif_predictor', predictor)
    with pytest.raises(_Stop):
        script.main(['--config', str(config), '--model', save_model(tmp_path / 'tiny.pth', TINY_LIIF),
                     '--gpu', 'cpu'] + argv)
    assert seen == [want]


def test_precision_fp16_on_the_cpu_is_refused(tmp_path):
    script = load_script('test.py')
    with pytest.raises(UserError, match=r'^--precision fp16 is for CUDA: .*; use fp32 or bf16$'):
        script.main(['--config', os.path.join(ROOT, 'configs', 'test', 'test-set5-2.yaml'),
                     '--model', save_model(tmp_path / 'tiny.pth', TINY_LIIF), '--gpu', 'cpu', '--precision', 'fp16'])


def test_liif_predictor_runs_under_the_asked_precision():
    torch.manual_seed(0)
    model = models.make(TINY_LIIF).eval()
    inp = torch.rand(1, 3, 12, 10)
    fp32 = liif_predictor(model, None, None)(inp, (24, 20))
    bf16 = liif_predictor(model, None, None, 'bf16')(inp, (24, 20))
    err = (bf16 - fp32).abs().max().item()
    assert 0 < err < 0.02  # bf16 keeps 8 bits of mantissa: visible but small
