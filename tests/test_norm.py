"""utils/norm.py: a data_norm of 1 or 3 values per entry, applied per channel everywhere."""
import numpy as np
import pytest
import torch

from utils.errors import UserError
from utils.norm import DEMO, IDENTITY, DataNorm

# three different values per entry: a model trained with this must be run with exactly this
PER_CHANNEL = {'inp': {'sub': [0.45, 0.5, 0.35], 'div': [0.2, 0.3, 0.25]},
               'gt': {'sub': [0.4, 0.55, 0.6], 'div': [0.3, 0.2, 0.5]}}


def test_per_channel_values_apply_to_their_channels():
    norm = DataNorm.from_mapping(PER_CHANNEL)
    img = torch.rand(2, 3, 5, 4)
    sub, div = np.array(PER_CHANNEL['inp']['sub']), np.array(PER_CHANNEL['inp']['div'])
    expected = (img.numpy() - sub.reshape(1, 3, 1, 1)) / div.reshape(1, 3, 1, 1)
    assert np.abs(norm.inp(img).numpy() - expected).max() < 1e-6
    assert np.abs(norm.inp(img[0]).numpy() - expected[0]).max() < 1e-6  # (3, h, w) too
    colours = torch.rand(2, 7, 3)  # (N, Q, 3): channels last
    gsub, gdiv = np.array(PER_CHANNEL['gt']['sub']), np.array(PER_CHANNEL['gt']['div'])
    assert np.abs(norm.gt(colours).numpy() - (colours.numpy() - gsub) / gdiv).max() < 1e-6
    assert np.abs(norm.output(colours).numpy() - (colours.numpy() * gdiv + gsub)).max() < 1e-6
    bands = torch.rand(1, 3, 2, 6)  # upscale's (N, 3, H, W)
    got = norm.output(bands, channel_dim=-3).numpy()
    assert np.abs(got - (bands.numpy() * gdiv.reshape(1, 3, 1, 1) + gsub.reshape(1, 3, 1, 1))).max() < 1e-6
    assert torch.allclose(norm.output(norm.gt(colours)), colours, atol=1e-6)


def test_single_values_and_the_named_conventions():
    one = DataNorm.from_mapping({'inp': {'sub': [0.5], 'div': [0.5]}, 'gt': {'sub': [0.5], 'div': [0.5]}})
    assert one == DEMO and one != IDENTITY
    x = torch.rand(1, 3, 4, 4)
    assert torch.equal(DEMO.inp(x), (x - 0.5) / 0.5)
    assert torch.equal(IDENTITY.inp(x), x)
    assert DataNorm.from_mapping(PER_CHANNEL).to_mapping() == PER_CHANNEL
    assert 'inp sub 0.45,0.5,0.35 div 0.2,0.3,0.25' in DataNorm.from_mapping(PER_CHANNEL).describe()


def test_values_are_float32_as_the_authors_tensors():
    # the authors build torch.FloatTensor(sub): a float64 input is shifted by the float32 value
    norm = DataNorm.from_mapping({'inp': {'sub': [0.1], 'div': [1]}, 'gt': {'sub': [0], 'div': [1]}})
    x = torch.zeros(1, 3, 1, 1, dtype=torch.float64)
    assert norm.inp(x).dtype == torch.float64
    assert norm.inp(x)[0, 0, 0, 0].item() == -float(np.float32(0.1))


@pytest.mark.parametrize('bad, match', [
    (None, 'mapping'), ({'inp': PER_CHANNEL['inp']}, r'data_norm\.gt'),
    ({'inp': {'sub': [0.5, 0.5], 'div': [1]}, 'gt': PER_CHANNEL['gt']}, r'data_norm\.inp\.sub .* 1 or 3'),
    ({'inp': {'sub': [0.5], 'div': [0, 1, 1]}, 'gt': PER_CHANNEL['gt']}, r'data_norm\.inp\.div must not contain 0'),
    ({'inp': {'sub': ['a'], 'div': [1]}, 'gt': PER_CHANNEL['gt']}, '1 or 3 numbers'),
    ({'inp': {'sub': [True], 'div': [1]}, 'gt': PER_CHANNEL['gt']}, '1 or 3 numbers')])
def test_malformed_data_norm_is_a_user_error(bad, match):
    with pytest.raises(UserError, match=match):
        DataNorm.from_mapping(bad)
