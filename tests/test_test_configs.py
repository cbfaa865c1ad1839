import os

import pytest
import yaml

from tests.helpers import ROOT
from utils.errors import UserError
from utils.test_configs import paper_configs, paper_test_config

CONFIG_DIR = os.path.join(ROOT, 'configs', 'test')
EXPECTED = {f'test-div2k-{s}.yaml' for s in (2, 3, 4, 6, 12, 18, 24, 30)} | {
    f'test-{n}-{s}.yaml' for n in ('set5', 'set14', 'b100', 'urban100') for s in (2, 3, 4, 6, 8)}
# written by hand, not by the generator (tests/test_configs.py checks them)
CELEBAHQ = {'test-celebAHQ-32-256.yaml', 'test-celebAHQ-64-128.yaml'}


def test_every_test_of_the_paper_is_there_and_matches_the_generator():
    assert set(paper_configs()) == EXPECTED
    assert {f for f in os.listdir(CONFIG_DIR) if f.endswith('.yaml')} == EXPECTED | CELEBAHQ
    for name, cfg in paper_configs().items():
        with open(os.path.join(CONFIG_DIR, name)) as f:
            assert yaml.safe_load(f) == cfg, f"{name} is stale: run scripts/make_test_configs.py"


@pytest.mark.parametrize('name,scale,hr,lr', [
    ('div2k', 2, './load/div2k/DIV2K_valid_HR', './load/div2k/DIV2K_valid_LR_bicubic/X2'),
    ('Set5', 4, './load/benchmark/Set5/HR', './load/benchmark/Set5/LR_bicubic/X4'),
    ('Urban100', 3, './load/benchmark/Urban100/HR', './load/benchmark/Urban100/LR_bicubic/X3')])
def test_x2_to_x4_read_the_published_matlab_lr(name, scale, hr, lr):
    cfg = paper_test_config(name, scale)
    ds = cfg['test_dataset']
    assert ds['dataset'] == {'name': 'paired-image-folders', 'args': {'root_path_1': lr, 'root_path_2': hr}}
    assert ds['wrapper']['name'] == 'sr-implicit-paired' and ds['batch_size'] == 1
    assert cfg['eval_type'] == f"{'div2k' if name == 'div2k' else 'benchmark'}-{scale}"
    assert cfg['data_norm'] == {'inp': {'sub': [0.5], 'div': [0.5]}, 'gt': {'sub': [0.5], 'div': [0.5]}}


@pytest.mark.parametrize('name,scale', [('div2k', 30), ('B100', 6), ('Set14', 8)])
def test_above_x4_downscale_hr_with_pil_unless_asked(name, scale):
    ds = paper_test_config(name, scale)['test_dataset']
    assert ds['dataset']['name'] == 'image-folder'
    assert ds['wrapper'] == {'name': 'sr-implicit-downsampled', 'args': {'scale_min': scale, 'resize': 'pil'}}
    assert paper_test_config(name, scale, 'matlab')['test_dataset']['wrapper']['args']['resize'] == 'matlab'


def test_bad_arguments():
    with pytest.raises(UserError, match='resize'):
        paper_test_config('Set5', 6, 'torch')
    with pytest.raises(UserError, match='positive integer'):
        paper_test_config('Set5', 0)
