"""test.py as a user runs it: the printed numbers, the generated LR, the errors."""
import os

import pytest
import torch
import yaml

from tests.conftest import shared_path
from tests.helpers import (ENCODER_ONLY, ROOT, TINY_LIIF, error_lines, one_thread,  # noqa: F401
                           run_script, save_model)
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
