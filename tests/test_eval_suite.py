"""scripts/eval_suite.py: one checkpoint (or bicubic) on a suite, markdown table + JSON."""
import json
import os

import pytest
import torch
from PIL import Image

from tests.conftest import shared_path
from tests.helpers import (PER_CHANNEL_NORM, TINY_LIIF, error_lines, load_script, one_thread, run_script,  # noqa: F401
                           save_model)
from evaluation.protocol import bicubic_predictor, evaluate, liif_predictor, make_test_loader, parse_eval_type
from inference.loading import load_sr_model
from utils.errors import UserError
from utils.norm import DEMO
from utils.test_configs import DATA_NORM, paper_test_config

pytestmark = pytest.mark.usefixtures('one_thread')  # in-process parts: see tests/helpers.py


def test_bicubic_benchmark_table(tmp_path):
    data_root = os.path.dirname(os.path.dirname(shared_path('benchmark', 'Set5', 'HR')))
    out = tmp_path / 'out'
    proc = run_script('scripts/eval_suite.py', '--bicubic', '--suite', 'benchmark', '--sets', 'Set5',
                      '--scales', '2,6', '--data-root', f'./load/benchmark={data_root}',
                      '--lr-cache', tmp_path / 'cache', '--out', out)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / 'benchmark.json').read_text())
    table = (out / 'benchmark.md').read_text()
    assert proc.stdout == table
    assert report['scales'] == [2, 6] and report['model'] is None
    cells = {s: report['results']['Set5'][s] for s in ('2', '6')}
    assert cells['2']['images'] == 5 and cells['2']['lr'] == 'matlab' and cells['6']['lr'] == 'pil'
    assert '| Dataset | x2 | x6 |' in table
    assert (f"| Set5 | {cells['2']['psnr']:.2f} / {cells['2']['ssim']:.4f} | "
            f"{cells['6']['psnr']:.2f} / {cells['6']['ssim']:.4f} |") in table
    assert 'LR x2: MATLAB bicubic' in table and 'LR x6: PIL bicubic' in table
    # x6 goes through the paper's config with the PIL downscale
    cfg = paper_test_config('Set5', 6)
    protocol = parse_eval_type(cfg['eval_type'])
    loader = make_test_loader(cfg['test_dataset'], protocol, 'unused', [('./load/benchmark', data_root)])
    ref = evaluate(bicubic_predictor(), loader, protocol, torch.device('cpu'), with_ssim=True)
    assert cells['6']['psnr'] == pytest.approx(ref['psnr'], abs=1e-6)
    assert cells['6']['ssim'] == pytest.approx(ref['ssim'], abs=1e-6)
    # the values recomputed in float64 from the HR images alone (test_shipped_model's bicubic recipe)
    assert cells['2']['psnr'] == pytest.approx(33.684584, abs=1e-4)
    assert cells['2']['ssim'] == pytest.approx(0.9306073, abs=1e-6)
    assert cells['6']['psnr'] == pytest.approx(25.932757, abs=1e-4)
    assert cells['6']['ssim'] == pytest.approx(0.7208697, abs=1e-6)


def test_model_on_div2k_layout(tmp_path):
    hr = tmp_path / 'data' / 'div2k' / 'DIV2K_valid_HR'
    hr.mkdir(parents=True)
    src = shared_path('benchmark', 'Set5', 'HR')
    for name in ('bird.png', 'head.png'):
        Image.open(os.path.join(src, name)).crop((10, 20, 74, 70)).save(hr / name)
    ckpt = save_model(tmp_path / 'tiny.pth', TINY_LIIF)
    proc = run_script('scripts/eval_suite.py', '--model', ckpt, '--suite', 'div2k', '--scales', '3,12',
                      '--data-root', tmp_path / 'data', '--lr-cache', tmp_path / 'cache', '--out', tmp_path / 'out')
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / 'out' / 'div2k.json').read_text())
    assert set(report['results']) == {'DIV2K'} and report['model'] == ckpt
    assert report['results']['DIV2K']['3']['images'] == 2
    assert report['data_norm'] == DATA_NORM  # a released-format file: the test configs' norm
    assert 'PSNR on RGB, shave s + 6 px' in (tmp_path / 'out' / 'div2k.md').read_text()


def test_model_with_per_channel_data_norm(tmp_path):
    """The checkpoint's 3-value data_norm is used, not the suite's 0.5 / 0.5."""
    hr = tmp_path / 'data' / 'div2k' / 'DIV2K_valid_HR'
    hr.mkdir(parents=True)
    src = shared_path('benchmark', 'Set5', 'HR')
    for name in ('bird.png', 'head.png'):
        Image.open(os.path.join(src, name)).crop((10, 20, 58, 68)).save(hr / name)
    ckpt = save_model(tmp_path / 'tiny.pth', TINY_LIIF, data_norm=PER_CHANNEL_NORM)
    proc = run_script('scripts/eval_suite.py', '--model', ckpt, '--suite', 'div2k', '--scales', '3',
                      '--data-root', tmp_path / 'data', '--lr-cache', tmp_path / 'cache', '--out', tmp_path / 'out')
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / 'out' / 'div2k.json').read_text())
    assert report['data_norm'] == PER_CHANNEL_NORM
    # the same numbers as the protocol with that norm (which test_evaluation_protocol checks by hand)
    cfg = paper_test_config('div2k', 3)
    protocol = parse_eval_type(cfg['eval_type'])
    loader = make_test_loader(cfg['test_dataset'], protocol, str(tmp_path / 'cache'),
                              [('./load', str(tmp_path / 'data'))])
    model = load_sr_model(ckpt, torch.device('cpu'))
    ref = evaluate(liif_predictor(model, PER_CHANNEL_NORM, None), loader, protocol, torch.device('cpu'), with_ssim=True)
    cell = report['results']['DIV2K']['3']
    assert cell['psnr'] == pytest.approx(ref['psnr'], abs=1e-6) and cell['ssim'] == pytest.approx(ref['ssim'], abs=1e-6)
    demo = evaluate(liif_predictor(model, DEMO, None), loader, protocol, torch.device('cpu'))
    assert abs(demo['psnr'] - cell['psnr']) > 0.5


def test_missing_set_fails_before_evaluating(tmp_path):
    data_root = os.path.dirname(os.path.dirname(shared_path('benchmark', 'Set5', 'HR')))
    proc = run_script('scripts/eval_suite.py', '--bicubic', '--suite', 'benchmark', '--sets', 'Set5,Nope',
                      '--scales', '2', '--data-root', f'./load/benchmark={data_root}',
                      '--lr-cache', tmp_path / 'cache', '--out', tmp_path / 'out')
    assert proc.returncode == 2
    assert error_lines(proc) == [f"error: no HR folder for Nope ({data_root}/Nope/HR); --data-root OLD=NEW "
                                 f"points the configs' ./load elsewhere"]
    assert not os.path.exists(tmp_path / 'out' / 'benchmark.json')
    assert not os.path.exists(tmp_path / 'cache')  # no LR of Set5 made before the check


def _suite_module():
    return load_script('scripts/eval_suite.py')


def test_default_sets_skip_missing_ones_in_the_table(tmp_path, caplog):
    """Without --sets, a set absent from the data (Urban100 here) is skipped with a warning and shown in the table."""
    data_root = os.path.dirname(os.path.dirname(shared_path('benchmark', 'Set5', 'HR')))
    suite = _suite_module()
    overrides = [('./load/benchmark', data_root)]
    names = ['Set5', 'Urban100']
    found = suite.present_sets(names, 'benchmark', overrides, explicit=False)
    assert list(found) == ['Set5']
    assert [r.message for r in caplog.records if r.levelname == 'WARNING'] == [
        f"Urban100 skipped: no HR folder at {data_root}/Urban100/HR (pass --sets to choose the sets)"]
    with pytest.raises(UserError, match=r'^no HR folder for Urban100 '):
        suite.present_sets(names, 'benchmark', overrides, explicit=True)
    with pytest.raises(UserError, match='no HR folder for Set5 .*, Urban100'):
        suite.present_sets(names, 'benchmark', [('./load/benchmark', str(tmp_path))], explicit=False)
    report = {'method': 'm', 'suite': 'benchmark', 'scales': [2], 'resize': 'pil',
              'results': {'Set5': {'2': {'psnr': 30.0, 'ssim': 0.9}}}, 'skipped': {'Urban100': '/x/HR'}}
    table = suite.render_markdown(report)
    assert '| Urban100 | - |' in table and 'Urban100: skipped, no HR folder at /x/HR.' in table


def test_precision_fp16_on_the_cpu_is_refused_before_any_work(tmp_path):
    suite = load_script('scripts/eval_suite.py')
    with pytest.raises(UserError, match=r'^--precision fp16 is for CUDA: '):
        suite.main(['--bicubic', '--suite', 'benchmark', '--sets', 'Set5', '--out', str(tmp_path / 'o'),
                    '--gpu', 'cpu', '--precision', 'fp16'])
    assert os.listdir(tmp_path / 'o') == []
