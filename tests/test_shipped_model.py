"""The bundled model: it loads, it is small, and its Set5 numbers are the ones the README prints."""
import os
import re

import pytest
import torch

from tests.conftest import shared_path
from tests.helpers import ROOT
from utils.config import load_config
from evaluation.protocol import evaluate, liif_predictor, make_test_loader, parse_eval_type
from inference.loading import load_sr_model

WEIGHTS = os.path.join(ROOT, 'weights', 'liif-edsr-baseline.pth')
CPU = torch.device('cpu')


def readme_results() -> dict:
    """{(dataset, method): {scale: psnr}} from the README's benchmark table of the shipped model."""
    text = open(os.path.join(ROOT, 'README.md')).read()
    block = re.search(r'<!-- results:benchmark -->(.*?)<!-- /results:benchmark -->', text, re.S)
    assert block, "README.md lost its <!-- results:benchmark --> table"
    rows = [[c.strip().strip('*') for c in ln.strip().strip('|').split('|')] for ln in block.group(1).strip().splitlines()]
    header = rows[0]
    scales = {i: int(h.lstrip('x')) for i, h in enumerate(header) if re.fullmatch(r'x\d+', h)}
    table = {}
    for row in rows[2:]:
        table[(row[0], row[1])] = {s: float(row[i].split('/')[0]) for i, s in scales.items()
                                              if re.match(r'\d', row[i])}
    return table


def test_shipped_weights_are_small_and_self_describing():
    assert os.path.getsize(WEIGHTS) <= 8 * 10 ** 6
    ckpt = torch.load(WEIGHTS, map_location='cpu', weights_only=True)
    assert ckpt['model']['name'] == 'liif'
    assert ckpt['model']['args']['encoder_spec']['name'] == 'edsr-baseline'
    assert os.path.isfile(os.path.join(ROOT, 'weights', 'MODEL_CARD.md'))


def test_readme_table_beats_bicubic_everywhere():
    table = readme_results()
    for ds in ('Set5', 'Set14', 'B100'):
        ours, bic = table[(ds, 'LIIF, this repo')], table[(ds, 'Bicubic')]
        assert set(ours) == set(bic) == {2, 3, 4, 6, 8, 12}
        assert all(ours[s] > bic[s] for s in ours), ds
    assert table[('Set5', 'LIIF, this repo')][2] - table[('Set5', 'Bicubic')][2] >= 3.0
    assert table[('Set5', 'LIIF, this repo')][4] - table[('Set5', 'Bicubic')][4] >= 2.0


@pytest.mark.parametrize('scale', [2, 4])
def test_set5_psnr_matches_readme(tmp_path, scale):
    shared_path('benchmark', 'Set5', 'HR')
    data_root = shared_path('benchmark')
    cfg = load_config(os.path.join(ROOT, 'configs', 'test', f'test-set5-{scale}.yaml'))
    protocol = parse_eval_type(cfg['eval_type'])
    loader = make_test_loader(cfg['test_dataset'], protocol, str(tmp_path / 'lr'),
                              overrides=[('./load/benchmark', data_root)])
    model = load_sr_model(WEIGHTS, CPU)
    res = evaluate(liif_predictor(model, cfg['data_norm'], cfg['eval_bsize']), loader, protocol, CPU)
    assert res['images'] == 5
    assert res['psnr'] == pytest.approx(readme_results()[('Set5', 'LIIF, this repo')][scale], abs=0.01)
