"""SRNO ('sronet'): the authors' vectors, the released layouts, the band-wise exact evaluation, the chunked one."""
import json
import math
import os

import pytest
import torch

import models
from inference.bounded import batched_predict, iter_upscale_bands, recommended_test_time, upscale
from models.srno import HeadNorm, authors_row_chunked
from tests.conftest import shared_path
from tests.helpers import max_scaled_error, one_thread  # noqa: F401
from utils.coord import make_coord
from utils.errors import UserError
from utils.testtime import TestTime

from evaluation.protocol import liif_predictor, row_chunked_predictor
from tests.helpers import TINY_LIIF
from utils.norm import DataNorm

pytestmark = pytest.mark.usefixtures('one_thread')  # see tests/helpers.py

PARITY = ('reference', 'srno-parity')
TINY_EDSR = {'name': 'edsr-baseline', 'args': {'n_resblocks': 1, 'n_feats': 8, 'no_upsampling': True}}
TINY = {'name': 'sronet', 'args': {'encoder_spec': TINY_EDSR, 'width': 16, 'blocks': 4}}
TOL = 1e-5


@pytest.fixture(scope='module')
def parity():
    """(model, vectors) of srno-edsr-baseline, built through models.make from its stored spec."""
    folder = shared_path(*PARITY)
    ckpt = torch.load(os.path.join(folder, 'srno-edsr-baseline.pth'), map_location='cpu', weights_only=True)
    vectors = torch.load(os.path.join(folder, 'srno-edsr-baseline.vectors.pt'), map_location='cpu',
                         weights_only=True)
    assert set(vectors['cases']) == {'24x24', '30x41', 'x8-cellclip', '40x40-rows16'}
    return models.make(ckpt['model'], load_sd=True).eval(), vectors


def _one_call_cases(vectors):
    return {k: c for k, c in vectors['cases'].items() if 'bsize' not in c}


def _axes(coord):
    """The row and column coordinates (H,), (W,) of a make_coord grid (1, H, W, 2)."""
    return coord[0, :, 0, 0], coord[0, 0, :, 1]


def test_authors_forward_meets_every_case(parity):
    model, vectors = parity
    with torch.no_grad():
        assert max_scaled_error(model.gen_feat(vectors['input']), vectors['feat']) <= TOL
        for key, case in vectors['cases'].items():
            if 'bsize' in case:
                assert case['call'] == 'batched_predict'
                out = authors_row_chunked(model, vectors['input'], case['coord'], case['cell'], case['bsize'])
            else:
                out = model(vectors['input'], case['coord'], case['cell'])
                assert max_scaled_error(model.query_rgb(case['coord'], case['cell']), case['output']) <= TOL
            assert out.shape == case['output'].shape
            assert max_scaled_error(out, case['output']) <= TOL, key


def test_plain_memory_format_encoder(parity):
    """channels_last is the encoder's business only: the plain format meets the vectors too."""
    model, vectors = parity
    case = vectors['cases']['30x41']
    model.channels_last = False
    try:
        with torch.no_grad():
            assert max_scaled_error(model.encode(vectors['input']).feat, vectors['feat']) <= TOL
            assert max_scaled_error(model(vectors['input'], case['coord'], case['cell']), case['output']) <= TOL
    finally:
        model.channels_last = True


@pytest.mark.parametrize('bsize', [None, 24 * 5])
def test_framework_upscale_meets_the_one_call_cases(parity, bsize):
    """inference.bounded.upscale (default bands, and bands of 5 rows of the 24-wide case), with the
    authors' cell enlargement (test_time, cell_max_scale 4) for x8-cellclip and none for the others."""
    model, vectors = parity
    assert recommended_test_time(model) == TestTime(cell_max_scale=4)
    for key, case in _one_call_cases(vectors).items():
        if bsize and key == 'x8-cellclip':  # 96 one-row bands: slow, and the default bands cover it
            continue
        size = tuple(case['output'].shape[-2:])
        test_time = model.test_time() if key == 'x8-cellclip' else TestTime()
        out = upscale(model, vectors['input'], size, bsize=bsize, test_time=test_time)
        assert max_scaled_error(out, case['output']) <= TOL, (key, bsize)
    if bsize:
        return
    # without the enlargement x8 is another output: the option is what makes the case
    plain = upscale(model, vectors['input'], (96, 96))
    assert (plain - vectors['cases']['x8-cellclip']['output']).abs().max() > 1e-4


def test_framework_bands_and_point_lists(parity):
    """iter_upscale_bands yields bands of bsize // W rows top to bottom; batched_predict on points is refused."""
    model, vectors = parity
    bands = [(r0, b.shape) for r0, b in iter_upscale_bands(model, vectors['input'], (30, 41), bsize=41 * 8)]
    assert bands == [(r, (1, 3, min(8, 30 - r), 41)) for r in range(0, 30, 8)]
    coord = make_coord((4, 4)).unsqueeze(0)
    with pytest.raises(UserError, match='depend on the whole output grid'):
        batched_predict(model, vectors['input'], coord, torch.ones_like(coord))


def test_row_chunks_are_separate_calls(parity):
    """40x40-rows16 is NOT the one-call output (SRNO.md: up to 5.1e-3 apart): chunking must be explicit."""
    model, vectors = parity
    case = vectors['cases']['40x40-rows16']
    with torch.no_grad():
        whole = model(vectors['input'], case['coord'], case['cell'])
    assert (whole - case['output']).abs().max() > 1e-3
    with pytest.raises(ValueError, match='bsize must be positive'):
        authors_row_chunked(model, vectors['input'], case['coord'], case['cell'], 0)


@pytest.mark.parametrize('band_rows', [1, 7, 10 ** 6])
def test_bands_reproduce_the_one_call_cases(parity, band_rows):
    """The multi-pass band evaluation meets the authors' one-call outputs, bands of 1 row, 7 (not dividing), all."""
    model, vectors = parity
    state = model.encode(vectors['input'])
    with torch.no_grad():
        for key, case in _one_call_cases(vectors).items():
            if band_rows != 7 and key == 'x8-cellclip':  # the largest case once (96 rows, 7 does not divide)
                continue
            h = case['coord'].shape[1]
            got = list(model.query_grid_bands(state, *_axes(case['coord']), case['cell'], band_rows))
            assert [(r0, b.shape[2]) for r0, b in got] == [(r, min(band_rows, h - r)) for r in range(0, h, band_rows)]
            out = torch.cat([b for _, b in got], dim=2)
            assert max_scaled_error(out, case['output']) <= TOL, key


def test_bands_keep_images_apart_and_only_one_band_alive():
    """A batch of two images: each band output equals that image's one-call forward; no call sees more rows."""
    torch.manual_seed(1)
    model = models.make(TINY).eval()
    inp = torch.rand(2, 3, 5, 6) * 2 - 1
    h, w = 13, 11
    coord = make_coord((h, w), flatten=False).expand(2, h, w, 2)
    cell = torch.tensor([[2 / h, 2 / w], [3 / h, 1 / w]])
    seen = []
    lift = model.lift
    model.lift = lambda state, c, cl: seen.append(c.shape[1]) or lift(state, c, cl)
    with torch.no_grad():
        whole = torch.cat([model(inp[i:i + 1], coord[:1], cell[i:i + 1]) for i in range(2)])
        seen.clear()
        bands = list(model.query_grid_bands(model.encode(inp), *_axes(coord), cell, 4))
    assert max(seen) == 4 and len(seen) == 3 * 4  # three passes over four bands
    assert (torch.cat([b for _, b in bands], dim=2) - whole).abs().max() <= 1e-6


def test_one_call_depends_on_every_query(parity):
    """Why SRNO needs query_grid_bands: the first rows alone differ from the same rows of the whole grid."""
    model, vectors = parity
    case = vectors['cases']['24x24']
    with torch.no_grad():
        top = model(vectors['input'], case['coord'][:, :12], case['cell'])
    assert (top - case['output'][:, :, :12]).abs().max() > 1e-3


def test_released_layouts():
    """Both entries of state_dict_keys.json: keys in order, shapes, parameter counts."""
    released = json.load(open(shared_path(*PARITY, 'state_dict_keys.json')))
    assert set(released) == {'edsr-baseline-sronet', 'rdn-sronet'}
    for name, entry in released.items():
        model = models.make(entry['spec'])
        assert [[k, list(v.shape)] for k, v in model.state_dict().items()] == entry['state_dict'], name
        assert sum(p.numel() for p in model.parameters()) == entry['num_params_all'], name
        assert sum(p.numel() for p in model.parameters() if p.requires_grad) == entry['num_params_trainable'], name


def test_norms_start_as_identity_affine():
    model = models.make(TINY)
    for norm in (model.conv0.kln, model.conv0.vln, model.conv1.kln, model.conv1.vln):
        assert torch.equal(norm.weight, torch.ones(4, 1, 4)) and torch.equal(norm.bias, torch.zeros(4, 1, 4))


def test_backward_reaches_every_parameter():
    model = models.make(TINY)
    inp = torch.rand(2, 3, 5, 4) * 2 - 1
    coord = make_coord((9, 7), flatten=False).expand(2, 9, 7, 2)
    out = model(inp, coord, torch.tensor([[2 / 9, 2 / 7]] * 2))
    assert out.shape == (2, 3, 9, 7)
    out.square().mean().backward()
    for name, p in model.named_parameters():
        if name.startswith('encoder.') and not p.requires_grad:  # EDSR's fixed mean shifts
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_bad_call_layouts_are_refused():
    model = models.make(TINY)
    inp = torch.rand(1, 3, 5, 4)
    with pytest.raises(ValueError, match=r'coord must be \(N, H, W, 2\), not \(1, 12, 2\)'):
        model(inp, torch.zeros(1, 12, 2), torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r'cell must be \(1, 2\), not \(1, 3, 4, 2\)'):
        model(inp, torch.zeros(1, 3, 4, 2), torch.zeros(1, 3, 4, 2))
    with pytest.raises(RuntimeError, match='call gen_feat'):
        model.query_rgb(torch.zeros(1, 3, 4, 2), torch.zeros(1, 2))


def test_head_norm_is_the_authors_not_torchs():
    """Unbiased std, eps added to the std, one (gamma, beta) per head: hand-computed numbers.

    The vectors cannot see eps (1e-6 instead of 1e-5 moves them by < 1e-5): values of std 5e-5 can.
    Head 0 holds (0, 0, 0, 1e-4): mean 2.5e-5, unbiased std 5e-5, so (x - mean) / 6e-5 is
    -5/12 and 5/4; gamma 2, beta 1 give 1/6 and 3.5. Head 1 is all zeros: beta alone (-3).
    """
    norm = HeadNorm(2, 4)
    with torch.no_grad():
        norm.weight[0].fill_(2)
        norm.bias[0].fill_(1)
        norm.bias[1].fill_(-3)
    x = torch.zeros(1, 2, 1, 4, dtype=torch.float64)
    x[0, 0, 0, 3] = 1e-4
    with torch.no_grad():
        out = norm.double()(x)
    want = torch.tensor([[[[1 / 6, 1 / 6, 1 / 6, 3.5]], [[-3, -3, -3, -3]]]], dtype=torch.float64)
    assert (out - want).abs().max() <= 1e-9


def test_gelu_is_the_erf_form_in_the_blocks_and_the_head():
    """gelu(1) = Phi(1) = 0.8413447 (the tanh form gives 0.8411920): through o_proj1 and through fc1.

    With qkv_proj zero, q = 0 and o = 0, so a block returns o_proj2(gelu(o_proj1(x))) + x; with
    o_proj1, o_proj2 identities and x = 1 that is 1.8413447. The head with fc1 / fc2 picking
    channel 0 returns gelu(1) + the bilinear skip of a constant 0.25 input.
    """
    model = models.make(TINY).eval()
    gelu1 = 0.5 * (1 + math.erf(1 / math.sqrt(2)))
    with torch.no_grad():
        block = model.conv0
        for conv in (block.qkv_proj, block.o_proj1, block.o_proj2, model.fc1, model.fc2):
            conv.weight.zero_()
            conv.bias.zero_()
        block.o_proj1.weight[:, :, 0, 0] = torch.eye(16)
        block.o_proj2.weight[:, :, 0, 0] = torch.eye(16)
        x = torch.ones(1, 16, 3, 5)
        assert (block(x) - (1 + gelu1)).abs().max() <= 1e-6
        model.fc1.weight[0, 0] = 1
        model.fc2.weight[:, 0] = 1
        inp = torch.full((1, 3, 4, 4), 0.25)
        coord = make_coord((3, 5), flatten=False).unsqueeze(0)
        state = model.encode(inp)
        assert (model.emit(state, x, coord) - (gelu1 + 0.25)).abs().max() <= 1e-6


def test_test_py_row_chunk_option_reproduces_the_authors_chunked_numbers(parity):
    """evaluation's row_chunked_predictor (test.py --authors-row-chunks) meets 40x40-rows16; the default
    predictor gives the exact whole-grid output instead."""
    model, vectors = parity
    case = vectors['cases']['40x40-rows16']
    norm = DataNorm.from_mapping({'inp': {'sub': [0.5], 'div': [0.5]}, 'gt': {'sub': [0.5], 'div': [0.5]}})
    lr = vectors['input'] * 0.5 + 0.5
    with torch.no_grad():
        chunked = row_chunked_predictor(model, norm, 16)(lr, (40, 40))
        exact = liif_predictor(model, norm, None)(lr, (40, 40))
        whole = model(vectors['input'], case['coord'], case['cell'])
    want = (case['output'] * 0.5 + 0.5).clamp(0, 1)
    assert (chunked - want).abs().max() <= TOL
    assert (exact - (whole * 0.5 + 0.5).clamp(0, 1)).abs().max() <= TOL
    assert (exact - want).abs().max() > 1e-4
    with pytest.raises(UserError, match="SRNO's"):
        row_chunked_predictor(models.make(TINY_LIIF), norm, 16)
