"""RDN: outputs of the authors' code (the 'upsample' baseline) and the released layouts."""
import os

import pytest
import torch

import models
from tests.conftest import shared_path
from tests.helpers import EXTRA_PARITY, check_extra_parity, check_released_layout, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures('one_thread')  # see tests/helpers.py


def test_upsample_baseline_matches_the_authors_vectors():
    check_extra_parity(os.path.join(shared_path(*EXTRA_PARITY), 'rdn-x2-upsample'))


@pytest.mark.parametrize('name', ['rdn-x2', 'rdn-x3', 'rdn-x4'])
def test_released_upsample_layouts(name):
    check_released_layout(name)


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_upsampling_tail_output_size(scale):
    enc = models.make({'name': 'rdn', 'args': {'G0': 8, 'RDNconfig': 'A', 'scale': scale}})
    assert enc.out_dim == 3 and enc(torch.zeros(1, 3, 5, 7)).shape == (1, 3, 5 * scale, 7 * scale)


def test_feature_mode_and_bad_arguments():
    enc = models.make({'name': 'rdn', 'args': {'G0': 8, 'RDNconfig': 'A', 'no_upsampling': True}})
    assert enc.out_dim == 8 and enc(torch.zeros(1, 3, 5, 7)).shape == (1, 8, 5, 7)
    with pytest.raises(ValueError, match='scales 2, 3, 4, not 8'):
        models.make({'name': 'rdn', 'args': {'G0': 8, 'RDNconfig': 'A', 'scale': 8}})
    with pytest.raises(ValueError, match="RDNconfig must be one of \\['A', 'B'\\], not 'C'"):
        models.make({'name': 'rdn', 'args': {'RDNconfig': 'C'}})
