import numpy as np
import pytest
import torch

from utils.errors import UserError
from utils.testtime import TestTime, merge, mirror_pad, window_pad_amount


@pytest.mark.parametrize('n, pad', [(12, 4), (10, 6), (16, 8), (8, 8), (1, 7), (17, 7)])
def test_window_pad_is_up_to_the_next_multiple_plus_a_whole_window(n, pad):
    assert window_pad_amount(n, 8) == pad


def test_mirror_pad_repeats_the_edge_as_the_authors_flip_and_concatenate():
    x = torch.arange(2 * 3 * 12 * 10, dtype=torch.float32).view(2, 3, 12, 10)
    got = mirror_pad(x, 8)
    assert got.shape == (2, 3, 16, 16)
    # numpy's 'symmetric' mode repeats the edge sample: row 12 is row 11, row 13 row 10, ...
    want = np.pad(x.numpy(), ((0, 0), (0, 0), (0, 4), (0, 6)), mode='symmetric')
    np.testing.assert_array_equal(got.numpy(), want)
    assert torch.equal(got[..., 12, :10], x[..., 11, :])


def test_mirror_pad_refuses_a_window_larger_than_the_image():
    with pytest.raises(UserError, match='at least 8 x 8'):
        mirror_pad(torch.zeros(1, 3, 3, 20), 8)


@pytest.mark.parametrize('scale, factor', [(2, 1.0), (4, 1.0), (6, 1.5), (8, 2.0), (12.8, 3.2)])
def test_cell_factor_is_max_of_scale_over_the_limit_and_one(scale, factor):
    assert TestTime(cell_max_scale=4).cell_factor(scale) == pytest.approx(factor, abs=1e-12)
    assert TestTime().cell_factor(scale) == 1.0


def test_merge_reads_numbers_text_and_none():
    base = TestTime(4.0, 8)
    assert merge(base) == base
    assert merge(base, '6', None) == TestTime(6.0, 8)
    assert merge(base, 'none', 'off') == TestTime()
    assert merge(TestTime(), 4, 8) == TestTime(4.0, 8)
    with pytest.raises(UserError, match='cell_max_scale'):
        merge(base, 'four')
    with pytest.raises(UserError, match='window'):
        merge(base, None, '-3')
    with pytest.raises(UserError, match='positive'):
        TestTime(cell_max_scale=-1)
