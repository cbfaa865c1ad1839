"""RCAN: the authors' vectors (inside LIIF), the released layout, the upsampling tail, and no tiling."""
import os

import pytest
import torch

import models
from inference.bounded import encoder_tile, upscale
from models.tiling import receptive_radius
from tests.conftest import shared_path
from tests.helpers import EXTRA_PARITY, check_extra_parity, check_released_layout, one_thread  # noqa: F401
from utils.coord import make_cell, make_coord

pytestmark = pytest.mark.usefixtures('one_thread')  # see tests/helpers.py

TINY_RCAN = {'name': 'rcan', 'args': {'n_resgroups': 2, 'n_resblocks': 2, 'n_feats': 16, 'reduction': 4,
                                      'no_upsampling': True}}


def test_rcan_liif_matches_the_authors_vectors():
    check_extra_parity(os.path.join(shared_path(*EXTRA_PARITY), 'rcan-liif'))


def test_released_layout_and_trainable_mean_shifts():
    """Full default RCAN in LIIF: 1638 keys in order, 15,642,107 parameters, all trainable (unlike EDSR)."""
    check_released_layout('rcan-liif')


@pytest.mark.parametrize('scale, stages', [(1, []), (2, [0]), (3, [0]), (4, [0, 2]), (8, [0, 2, 4])])
def test_upsampling_tail_keys_and_output_size(scale, stages):
    enc = models.make({'name': 'rcan', 'args': {**TINY_RCAN['args'], 'no_upsampling': False, 'scale': scale}})
    width = 9 * 16 if scale == 3 else 4 * 16
    tail = {k: tuple(v.shape) for k, v in enc.state_dict().items() if k.startswith('tail.')}
    want = {f'tail.0.{i}.weight': (width, 16, 3, 3) for i in stages}
    want.update({f'tail.0.{i}.bias': (width,) for i in stages})
    want.update({'tail.1.weight': (3, 16, 3, 3), 'tail.1.bias': (3,)})
    assert tail == want
    assert enc.out_dim == 3 and enc(torch.zeros(1, 3, 5, 7)).shape == (1, 3, 5 * scale, 7 * scale)


def test_feature_mode_ignores_scale_and_unsupported_scale_raises():
    enc = models.make({'name': 'rcan', 'args': {**TINY_RCAN['args'], 'scale': 5}})
    assert enc.out_dim == 16 and enc(torch.zeros(1, 3, 5, 7)).shape == (1, 16, 5, 7)
    assert not any(k.startswith('tail.') for k in enc.state_dict())
    with pytest.raises(ValueError, match='scales 2\\^n and 3, not 5'):  # the upsampler EDSR shares
        models.make({'name': 'rcan', 'args': {**TINY_RCAN['args'], 'no_upsampling': False, 'scale': 5}})


def test_mean_shifts_hold_the_div2k_mean_and_are_not_applied():
    enc = models.make({'name': 'rcan', 'args': {**TINY_RCAN['args'], 'rgb_range': 255}})
    mean = torch.tensor([0.4488, 0.4371, 0.4040])
    assert torch.equal(enc.sub_mean.weight.view(3, 3), torch.eye(3))
    assert torch.allclose(enc.sub_mean.bias, -255 * mean) and torch.allclose(enc.add_mean.bias, 255 * mean)
    torch.manual_seed(0)
    x = torch.rand(1, 3, 6, 6)
    same = models.make({'name': 'rcan', 'args': TINY_RCAN['args']})
    same.load_state_dict({k: v for k, v in enc.state_dict().items()})  # rgb_range only touches unused biases
    with torch.no_grad():
        before = same(x)
        same.sub_mean.bias.fill_(100.0)
        same.add_mean.bias.fill_(-100.0)
        assert torch.equal(same(x), before)


def test_global_pool_forbids_tiling_and_upscale_stays_exact():
    """Channel attention pools the whole image: tiles would change it, so a tiny budget must not tile."""
    torch.manual_seed(3)
    model = models.make({'name': 'liif', 'args': {
        'encoder_spec': TINY_RCAN,
        'imnet_spec': {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': [16]}}}}).eval()
    assert receptive_radius(model.encoder) is None
    inp = torch.rand(1, 3, 40, 40) * 2 - 1
    assert encoder_tile(model, inp, max_mem_mb=0.01) is None
    size = (60, 60)
    coord = make_coord(size).unsqueeze(0)
    with torch.no_grad():
        want = model(inp, coord, make_cell(coord, size)).view(1, *size, 3).permute(0, 3, 1, 2)
    got = upscale(model, inp, size, max_mem_mb=0.01)
    assert (got - want).abs().max().item() <= 1e-6
