"""benchmarks/baseline.py: the authors'-style query that every speed ratio is measured against."""
import itertools

import pytest
import torch

import models
from benchmarks import baseline
from benchmarks.baseline import authors_style_batched_predict, authors_style_query
from tests.conftest import shared_path
from tests.test_fast_query import queries, tiny
from utils.coord import make_coord

PARITY = ('reference', 'liif-parity')


def _rel_err(out: torch.Tensor, want: torch.Tensor) -> float:
    return ((out - want).abs() / want.abs().clamp(min=1)).max().item()


@pytest.mark.parametrize('name', ['edsr-baseline-liif', 'liif-plain'])
def test_baseline_reproduces_the_authors_parity_vectors(name):
    ckpt = torch.load(shared_path(*PARITY, name + '.pth'), weights_only=True)
    vectors = torch.load(shared_path(*PARITY, name + '.vectors.pt'), weights_only=True)
    model = models.make(ckpt['model'], load_sd=True).eval()
    for key, case in vectors['cases'].items():
        # bsize smaller than Q: the chunk seams are exercised too
        out = authors_style_batched_predict(model, vectors['input'], case['coord'], case['cell'], bsize=1000)
        assert out.shape == case['output'].shape
        assert _rel_err(out, case['output']) <= 1e-6, (name, key)


@pytest.mark.parametrize('flags', [dict(zip(('local_ensemble', 'feat_unfold', 'cell_decode'), v))
                                   for v in itertools.product([True, False], repeat=3)])
def test_baseline_equals_the_reference_path(flags):
    torch.manual_seed(0)
    model = tiny(**flags).eval()
    inp = torch.rand(2, 3, 7, 9) * 2 - 1
    coord, cell = queries(2, 7, 9, (17, 20))
    # queries on the code centres: their shifted points lie on code borders, where the 1e-6 nudge decides
    centres = make_coord((7, 9)).expand(2, -1, -1)
    coord = torch.cat([coord, centres], dim=1)
    cell = torch.cat([cell, torch.full_like(centres, 0.1)], dim=1)
    with torch.no_grad():
        feat = model.encoder(inp)
        want = model.query_reference(feat, coord, cell)
        got = authors_style_query(model, feat, coord, cell)
    assert _rel_err(got, want) <= 1e-6


def test_parity_check_catches_a_missing_shift_or_an_unflipped_area(monkeypatch):
    """The checks above are sharp: a baseline with three shifts, or areas not swapped, fails them."""
    ckpt = torch.load(shared_path(*PARITY, 'edsr-baseline-liif.pth'), weights_only=True)
    vectors = torch.load(shared_path(*PARITY, 'edsr-baseline-liif.vectors.pt'), weights_only=True)
    model = models.make(ckpt['model'], load_sd=True).eval()
    case = vectors['cases']['64x64']
    feat = vectors['feat']

    def err():
        with torch.no_grad():
            return _rel_err(authors_style_query(model, feat, case['coord'], case['cell']), case['output'])

    assert err() <= 1e-6
    with monkeypatch.context() as m:  # weights not flipped to the opposite corner
        m.setattr(baseline, '_opposite', lambda areas: areas)
        assert err() > 1e-3
    with monkeypatch.context() as m:  # one shift pass missing
        m.setattr(baseline, 'SHIFTS', baseline.SHIFTS[:3])
        assert err() > 1e-3
