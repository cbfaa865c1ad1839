import glob
import math
import os

import pytest
import torch

from tests.conftest import shared_path
from tests.helpers import one_thread  # noqa: F401  (fixture)
from utils.image import read_rgb_u8
from utils.metrics import gaussian_1d, psnr, rgb_to_y, squared_error, ssim

# one intra-op thread: on the small shared test machines two threads thrash
pytestmark = pytest.mark.usefixtures('one_thread')

# RCAN (Zhang et al., ECCV 2018), Table: Set5, BI degradation
RCAN_SET5 = {2: (38.27, 0.9614), 3: (34.74, 0.9299), 4: (32.63, 0.9002)}


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_reproduces_rcan_set5(scale):
    root = shared_path('reference', 'rcan-set5')
    psnrs, ssims = [], []
    for hr_path in sorted(glob.glob(os.path.join(root, 'HR', f'x{scale}', '*.png'))):
        sr_path = os.path.join(root, 'RCAN', f'x{scale}', os.path.basename(hr_path).replace('_HR_', '_RCAN_'))
        hr, sr = read_rgb_u8(hr_path), read_rgb_u8(sr_path)
        psnrs.append(float(psnr(sr, hr, shave=scale, y_channel=True)))
        ssims.append(float(ssim(sr, hr, shave=scale)))
    assert len(psnrs) == 5
    assert round(sum(psnrs) / 5, 2) == RCAN_SET5[scale][0]
    assert round(sum(ssims) / 5, 4) == RCAN_SET5[scale][1]


def test_psnr_of_a_known_error():
    hr = torch.rand(2, 3, 16, 16, dtype=torch.float64) * 0.9
    sr = hr + 1 / 255
    torch.testing.assert_close(psnr(sr, hr), torch.full((2,), 20 * math.log10(255), dtype=torch.float64))
    # on Y the error is scaled by the luminance weights' sum, 219 / 255
    expected_y = 20 * math.log10(255 * 255 / 219)
    assert float(psnr(sr[0], hr[0], y_channel=True)) == pytest.approx(expected_y, abs=1e-9)


def test_squared_error_of_a_known_error():
    hr = torch.rand(2, 3, 16, 16, dtype=torch.float64) * 0.9
    sr = hr.clone()
    sr[1] += 0.01
    sse, count = squared_error(sr, hr, shave=2)
    assert count == 3 * 12 * 12
    assert sse.tolist() == pytest.approx([0.0, count * 1e-4], rel=1e-9)
    # on Y the error is scaled by the luminance weights' sum, 219 / 255
    sse, count = squared_error(sr, hr, y_channel=True)
    assert count == 16 * 16
    assert sse.tolist() == pytest.approx([0.0, count * (0.01 * 219 / 255) ** 2], rel=1e-9)


def test_shave_and_rounding():
    hr = torch.rand(3, 20, 20)
    sr = hr.clone()
    sr[:, :3, :] = 0  # errors only in the top 3 rows
    assert math.isfinite(float(psnr(sr, hr, shave=2)))
    assert float(psnr(sr, hr, shave=3)) == math.inf
    hr8 = torch.randint(0, 255, (3, 20, 20)).double() / 255
    near = hr8 + 0.4 / 255  # rounds back to the same 8-bit levels
    assert float(psnr(near, hr8, round_u8=True)) == math.inf
    assert float(psnr(near, hr8)) == pytest.approx(20 * math.log10(255 / 0.4), abs=1e-9)


def test_uint8_and_float_inputs_agree():
    hr = torch.randint(0, 256, (3, 24, 24), dtype=torch.uint8)
    sr = torch.randint(0, 256, (3, 24, 24), dtype=torch.uint8)
    assert float(psnr(sr, hr)) == pytest.approx(float(psnr(sr.double() / 255, hr.double() / 255)))
    assert float(ssim(sr, hr)) == pytest.approx(float(ssim(sr.double() / 255, hr.double() / 255)))


def test_y_range():
    assert rgb_to_y(torch.ones(3, 1, 1)).item() == pytest.approx(235 / 255)
    assert rgb_to_y(torch.zeros(3, 1, 1)).item() == pytest.approx(16 / 255)


def test_ssim_properties():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 32, 32, generator=g)
    b = (a + 0.1 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    assert torch.allclose(ssim(a, a), torch.ones(2, dtype=torch.float64))
    batch = ssim(b, a)
    assert batch.shape == (2,) and bool((batch < 0.99).all())
    assert float(batch[1]) == pytest.approx(float(ssim(b[1], a[1])))
    assert float(ssim(a[0], b[0])) == pytest.approx(float(ssim(b[0], a[0])))
    # the window is MATLAB's fspecial('gaussian', 11, 1.5)
    g1 = gaussian_1d()
    assert g1.sum().item() == pytest.approx(1) and g1.argmax().item() == 5
    assert (g1[5] * g1[5]).item() == pytest.approx(0.0707622, abs=1e-7)
    assert (g1[0] * g1[0]).item() == pytest.approx(1.0576e-06, abs=1e-10)


def test_bad_shapes():
    with pytest.raises(ValueError, match='differ in shape'):
        psnr(torch.zeros(3, 8, 8), torch.zeros(3, 8, 9))
    with pytest.raises(ValueError, match='too small'):
        psnr(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8), shave=4)
    with pytest.raises(ValueError, match='SSIM window'):
        ssim(torch.zeros(3, 10, 10), torch.zeros(3, 10, 10))
