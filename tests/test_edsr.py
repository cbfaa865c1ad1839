"""EDSR and EDSR-baseline: outputs of the authors' code (the 'upsample' baselines) and the released layouts."""
import os

import pytest
import torch

import models
from tests.conftest import shared_path
from tests.helpers import EXTRA_PARITY, check_extra_parity, check_released_layout, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures('one_thread')  # see tests/helpers.py


@pytest.mark.parametrize('name', ['edsr-baseline-x2-upsample', 'edsr-baseline-x8-upsample'])
def test_upsample_baseline_matches_the_authors_vectors(name):
    check_extra_parity(os.path.join(shared_path(*EXTRA_PARITY), name))


@pytest.mark.parametrize('name', ['edsr-baseline-x2', 'edsr-baseline-x3', 'edsr-baseline-x4',
                                  'celebAHQ-32-256-upsample'])
def test_released_upsample_layouts(name):
    check_released_layout(name)


@pytest.mark.parametrize('scale', [2, 3, 4, 8])
def test_upsampling_tail_output_size(scale):
    enc = models.make({'name': 'edsr-baseline', 'args': {'n_resblocks': 1, 'n_feats': 8, 'scale': scale}})
    assert enc.out_dim == 3 and enc(torch.zeros(1, 3, 5, 7)).shape == (1, 3, 5 * scale, 7 * scale)


def test_feature_mode_and_unsupported_scale():
    enc = models.make({'name': 'edsr', 'args': {'n_resblocks': 1, 'n_feats': 16, 'no_upsampling': True}})
    assert enc.out_dim == 16 and enc(torch.zeros(1, 3, 5, 7)).shape == (1, 16, 5, 7)
    with pytest.raises(ValueError, match='scales 2\\^n and 3, not 5'):
        models.make({'name': 'edsr-baseline', 'args': {'n_resblocks': 1, 'scale': 5}})


def test_edsr_residual_scaling_follows_the_paper():
    """Full EDSR (res_scale 0.1, which the baseline vectors do not reach): written out from Lim et al. 2017."""
    enc = models.make({'name': 'edsr', 'args': {'n_resblocks': 2, 'n_feats': 8, 'no_upsampling': True}}).eval()
    sd = enc.state_dict()

    def conv(x, key):
        return torch.nn.functional.conv2d(x, sd[key + '.weight'], sd[key + '.bias'], padding=1)

    x = torch.randn(1, 3, 9, 11)
    head = conv(x, 'head.0')
    h = head
    for b in range(2):  # x + 0.1 * conv(relu(conv(x)))
        h = h + 0.1 * conv(torch.relu(conv(h, f'body.{b}.body.0')), f'body.{b}.body.2')
    want = conv(h, 'body.2') + head  # body tail conv, then the long skip from the head
    with torch.no_grad():
        torch.testing.assert_close(enc(x), want, rtol=0, atol=1e-6)
