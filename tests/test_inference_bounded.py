import numpy as np
import pytest
import torch

import models
from models import rdn
from models.fast_query import query_mode
from models.tiling import encode_tiled, receptive_radius
from utils.coord import make_cell, make_coord
from utils.image import float_to_u8
from inference.bounded import (batched_predict, choose_test_time, encode_bounded, encoder_tile,
                               iter_upscale_bands, recommended_test_time, upscale, upscale_to_uint8)
from tests.conftest import shared_path
from tests.helpers import PER_CHANNEL_NORM, manual_upscale
from utils.norm import DataNorm
from utils.testtime import TestTime

TINY_EDSR = {'name': 'edsr-baseline', 'args': {'n_resblocks': 2, 'n_feats': 8, 'no_upsampling': True}}
TINY_RDN = {'name': 'rdn', 'args': {'G0': 4, 'RDNconfig': 'tiny', 'no_upsampling': True}}
MLP = {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': [16, 16, 16]}}


def tiny(encoder=TINY_EDSR, name='liif'):
    args = {'encoder_spec': encoder}
    if name == 'liif':
        args['imnet_spec'] = MLP
    return models.make({'name': name, 'args': args}).eval()


def grid(n, size):
    coord = make_coord(size).expand(n, -1, -1)
    return coord, make_cell(coord, size)


@pytest.mark.parametrize('mode', ['fast', 'reference'])
@pytest.mark.parametrize('name', ['liif', 'metasr'])
def test_batched_predict_equals_one_forward(name, mode):
    model = tiny(name=name)
    model.query_mode = mode
    inp = torch.rand(2, 3, 7, 9) * 2 - 1
    coord, cell = grid(2, (19, 25))
    with torch.no_grad():
        whole = model(inp, coord, cell)
    for kwargs in ({}, {'bsize': 37}, {'max_mem_mb': 0.001}):
        assert (batched_predict(model, inp, coord, cell, **kwargs) - whole).abs().max() <= 1e-6, kwargs


def test_upscale_bands_and_uint8_agree():
    model = tiny()
    inp = torch.rand(1, 3, 6, 5) * 2 - 1
    size = (23, 17)
    coord, cell = grid(1, size)
    flat = batched_predict(model, inp, coord, cell)
    img = upscale(model, inp, size)
    assert img.shape == (1, 3, 23, 17)
    assert torch.equal(img, flat.view(1, 23, 17, 3).permute(0, 3, 1, 2))
    rows = [(r0, band.shape[2]) for r0, band in iter_upscale_bands(model, inp, size, bsize=17 * 4)]
    assert rows == [(r, min(4, 23 - r)) for r in range(0, 23, 4)]
    banded = torch.cat([b for _, b in iter_upscale_bands(model, inp, size, bsize=17 * 4)], dim=2)
    assert (banded - img).abs().max() <= 1e-6
    u8 = upscale_to_uint8(model, inp, size, bsize=50)
    expected = float_to_u8(img[0].permute(1, 2, 0) * 0.5 + 0.5).numpy()
    assert u8.dtype == np.uint8 and u8.shape == (23, 17, 3)
    assert np.abs(u8.astype(int) - expected).max() <= 1  # a value on a .5 boundary may round either way
    buf = np.zeros((23, 17, 3), np.uint8)
    assert upscale_to_uint8(model, inp[0], size, out=buf) is buf and np.array_equal(buf, u8)
    with pytest.raises(ValueError, match='one image'):
        upscale_to_uint8(model, inp.expand(2, -1, -1, -1), size)


def test_receptive_radius_counts_convs_and_is_tight():
    assert receptive_radius(models.make({'name': 'edsr-baseline', 'args': {'no_upsampling': True}})) == 34
    assert receptive_radius(models.make({'name': 'rdn', 'args': {'no_upsampling': True}})) == 131
    assert receptive_radius(models.make({'name': 'edsr-baseline', 'args': {}})) is None  # pixel shuffle
    enc = models.make(TINY_EDSR)
    r = receptive_radius(enc)
    assert r == 2 * 2 + 2
    inp = torch.rand(1, 3, 2 * r + 5, 2 * r + 5, requires_grad=True)
    c = r + 2
    enc(inp)[0, :, c, c].sum().backward()
    reach = inp.grad.abs().sum(dim=(0, 1)).nonzero()
    assert (reach - c).abs().max() == r  # the input pixel at exactly r away still matters


@pytest.mark.parametrize('encoder', [TINY_EDSR, TINY_RDN], ids=['edsr', 'rdn'])
def test_tiled_encoder_equals_untiled(encoder, monkeypatch):
    monkeypatch.setitem(rdn.RDN_CONFIGS, 'tiny', (2, 2, 4))  # 2 blocks of 2 dense layers: radius 7
    model = tiny(encoder)
    inp = torch.rand(2, 3, 45, 38) * 2 - 1
    with torch.no_grad():
        whole = model.gen_feat(inp).clone()
        halo = receptive_radius(model.encoder)
        for tile in (7, 16, 100):
            tiled = encode_tiled(model.gen_feat, inp, tile, halo)
            assert (tiled - whole).abs().max() <= 1e-5, tile
        short = encode_tiled(model.gen_feat, inp, 16, halo // 2)  # too little context is visibly wrong
        assert (short - whole).abs().max() > 1e-3


def test_inference_tiles_the_encoder_under_a_small_budget():
    model = tiny()
    inp = torch.rand(1, 3, 60, 52) * 2 - 1
    budget = 0.5  # MB: the 60 x 52 image needs ~0.6 MB of activations by the estimate (48 channels)
    tile, halo = encoder_tile(model, inp, budget)
    assert halo == 6 and 16 <= tile < 52
    assert encoder_tile(model, inp, 1024) is None
    size = (97, 130)
    with torch.no_grad():
        whole = upscale(model, inp, size)
        tiled = upscale(model, inp, size, max_mem_mb=budget)
        assert (encode_bounded(model, inp, budget) - model.encode(inp)).abs().max() <= 1e-5
    assert (tiled - whole).abs().max() <= 1e-5
    assert model.feat is None  # nothing is stored on the model


def test_autocast_option_runs_and_stays_close():
    model = tiny()
    inp = torch.rand(1, 3, 8, 8) * 2 - 1
    coord, cell = grid(1, (20, 20))
    ref = batched_predict(model, inp, coord, cell)
    low = batched_predict(model, inp, coord, cell, amp='bf16')
    assert low.dtype == torch.float32
    assert 0 < (low - ref).abs().max() <= 0.05 * ref.abs().max()
    with pytest.raises(ValueError, match='amp'):
        batched_predict(model, inp, coord, cell, amp='int8')


def test_tiled_encoding_leaves_fast_and_reference_equal():
    model = tiny()
    inp = torch.rand(1, 3, 30, 30) * 2 - 1
    coord, cell = grid(1, (41, 41))
    outs = []
    for mode in ('reference', 'fast'):
        with query_mode(model, mode):
            outs.append(batched_predict(model, inp, coord, cell, max_mem_mb=0.2))
    assert (outs[0] - outs[1]).abs().max() <= 1e-6


@pytest.mark.parametrize('grad_mode', ['no_grad', 'inference_mode'])
@pytest.mark.parametrize('name', ['edsr-baseline-liif', 'liif-plain', 'metasr-edsr-baseline'])
def test_upscale_and_batched_predict_match_the_authors_vectors_in_each_grad_mode(name, grad_mode):
    ckpt = torch.load(shared_path('reference', 'liif-parity', name + '.pth'), weights_only=True)
    vectors = torch.load(shared_path('reference', 'liif-parity', name + '.vectors.pt'), weights_only=True)
    model = models.make(ckpt['model'], load_sd=True).eval()
    context = torch.no_grad if grad_mode == 'no_grad' else torch.inference_mode
    key, case = next(iter(vectors['cases'].items()))  # 'HxW': the pixel grid of an H x W target
    size = tuple(int(v) for v in key.split('x'))
    want = case['output']
    tol = (1e-5 if name.startswith('metasr') else 1e-6) * max(1.0, want.abs().max().item())
    with context():
        img = upscale(model, vectors['input'], size, bsize=size[1] * 5)  # bands of 5 rows
        flat = batched_predict(model, vectors['input'], case['coord'], case['cell'], bsize=999)
    assert (img.flatten(2).transpose(1, 2) - want).abs().max() <= tol
    assert (flat - want).abs().max() <= tol


def test_upscale_to_uint8_uses_the_models_norm():
    model = tiny()
    lr = (torch.rand(6, 5, 3) * 255).round().to(torch.uint8).numpy()
    norm = DataNorm.from_mapping(PER_CHANNEL_NORM)
    inp = norm.inp(torch.from_numpy(lr).permute(2, 0, 1).float() / 255)
    u8 = upscale_to_uint8(model, inp, (23, 17), bsize=50, norm=norm)
    ref = np.round(manual_upscale(model, lr, (23, 17), PER_CHANNEL_NORM) * 255).transpose(1, 2, 0)
    assert np.abs(u8.astype(int) - ref).max() <= 1
    # de-normalising with 0.5 / 0.5 (the old hard-coded step) is far off
    assert np.abs(upscale_to_uint8(model, inp, (23, 17)).astype(int) - ref).mean() > 10


# test-time options (utils/testtime.py), as the authors' LTE test.py / demo.py apply them

def test_cell_enlargement_beyond_the_limit_is_the_authors_cell_times_the_factor():
    model = tiny()
    inp = torch.rand(1, 3, 6, 5) * 2 - 1
    size = (48, 40)  # x8
    coord, cell = grid(1, size)
    with torch.no_grad():
        want = model(inp, coord, cell * 2).view(1, 48, 40, 3).permute(0, 3, 1, 2)
        plain = model(inp, coord, cell).view(1, 48, 40, 3).permute(0, 3, 1, 2)
    got = upscale(model, inp, size, test_time=TestTime(cell_max_scale=4))
    assert (got - want).abs().max() <= 1e-6
    assert (got - plain).abs().max() > 1e-3  # the option changes the output at all
    # within the training range it changes nothing
    x3 = upscale(model, inp, (18, 15), test_time=TestTime(cell_max_scale=4))
    assert torch.equal(x3, upscale(model, inp, (18, 15)))


@pytest.mark.parametrize('scale', [2, 6])
def test_window_padding_is_the_authors_pad_query_and_top_left_crop(scale):
    model = tiny()
    inp = torch.rand(1, 3, 12, 10) * 2 - 1
    padded = torch.from_numpy(np.pad(inp.numpy(), ((0, 0), (0, 0), (0, 4), (0, 6)), mode='symmetric'))
    big = (scale * 16, scale * 16)
    coord = make_coord(big).unsqueeze(0)
    cell = torch.full_like(coord, 2 / 16 / scale) * max(scale / 4, 1)
    with torch.no_grad():
        want = model(padded, coord, cell).view(1, *big, 3).permute(0, 3, 1, 2)[:, :, :12 * scale, :10 * scale]
    got = upscale(model, inp, (12 * scale, 10 * scale), bsize=500, test_time=TestTime(4, 8))
    assert got.shape == want.shape
    assert (got - want).abs().max() <= 1e-5


def test_models_recommend_their_authors_options_and_overrides_apply_in_order():
    model = tiny()
    assert recommended_test_time(model) == TestTime()
    assert choose_test_time(model, {'cell_max_scale': 4}, {'window': '8'}) == TestTime(4.0, 8)
    assert choose_test_time(model, {'cell_max_scale': 4}, {'cell_max_scale': 'none'}) == TestTime()
    assert choose_test_time(object(), {}) == TestTime()
