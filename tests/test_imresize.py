import glob
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import shared_path
from tests.helpers import one_thread  # noqa: F401  (fixture)
from utils.image import read_rgb_u8
from utils.imresize import imresize, iter_imresize_bands

# one intra-op thread: on the small shared test machines two threads thrash
pytestmark = pytest.mark.usefixtures('one_thread')


def _rcan_pairs(scale):
    root = shared_path('reference', 'rcan-set5')
    hrs = sorted(glob.glob(os.path.join(root, 'HR', f'x{scale}', '*.png')))
    assert len(hrs) == 5
    for hr in hrs:
        name = os.path.basename(hr).replace('_HR_', '_LRBI_')
        yield hr, os.path.join(root, 'LR_bicubic', f'x{scale}', name)


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_matlab_bit_exact_on_rcan_set5(scale):
    for hr_path, lr_path in _rcan_pairs(scale):
        hr, lr = read_rgb_u8(hr_path), read_rgb_u8(lr_path)
        out = imresize(hr, 1 / scale)
        assert out.dtype == torch.uint8 and out.shape == lr.shape, hr_path
        assert int((out != lr).sum()) == 0, hr_path
        # the same through an explicit output size, and batched
        assert torch.equal(imresize(hr.unsqueeze(0), size=lr.shape[-2:])[0], lr)


def _naive(img: np.ndarray, out_hw, quantise: bool) -> np.ndarray:
    """Per-pixel MATLAB imresize of a 2-D array, written from the rules in the rcan-set5 README."""
    def kernel(x):
        x = abs(x)
        if x <= 1:
            return 1.5 * x ** 3 - 2.5 * x ** 2 + 1
        if x <= 2:
            return -0.5 * x ** 3 + 2.5 * x ** 2 - 4 * x + 2
        return 0.0

    def one_axis(a, n_out):  # resizes axis 0
        n_in = a.shape[0]
        s = n_out / n_in
        width = 4 / s if s < 1 else 4
        res = np.zeros((n_out,) + a.shape[1:])
        for i in range(n_out):
            u = (i + 1) / s + 0.5 * (1 - 1 / s)
            js = range(math.floor(u - width / 2), math.floor(u - width / 2) + math.ceil(width) + 2)
            ws = [s * kernel(s * (u - j)) if s < 1 else kernel(u - j) for j in js]
            tot = sum(ws)
            for j, wgt in zip(js, ws):
                res[i] += wgt / tot * a[min(max(j - 1, 0), n_in - 1)]
        if quantise:
            res = np.clip(np.floor(res + 0.5), 0, 255)
        return res

    sh, sw = out_hw[0] / img.shape[0], out_hw[1] / img.shape[1]
    if sh <= sw:
        return one_axis(one_axis(img, out_hw[0]).T, out_hw[1]).T
    return one_axis(one_axis(img.T, out_hw[1]).T, out_hw[0])


@pytest.mark.parametrize('out_hw', [(5, 13), (11, 4), (16, 18), (3, 3)])
def test_matches_per_pixel_reference(out_hw):
    g = torch.Generator().manual_seed(1)
    img = torch.randint(0, 256, (2, 9, 7), generator=g, dtype=torch.uint8)
    for c in range(2):
        ref_u8 = _naive(img[c].double().numpy(), out_hw, quantise=True)
        ref_f = _naive(img[c].double().numpy() / 255, out_hw, quantise=False)
        assert np.array_equal(imresize(img, size=out_hw)[c].numpy(), ref_u8)
        np.testing.assert_allclose(imresize(img.double() / 255, size=out_hw)[c].numpy(), ref_f,
                                   rtol=0, atol=1e-12)


@pytest.mark.parametrize('out_hw', [(23, 31), (97, 61), (200, 120)])
def test_float_path_matches_pil_away_from_borders(out_hw):
    # PIL's BICUBIC is the same a = -0.5 antialiased filter; on float ('F') images it does not
    # round, and it only differs at the borders (it renormalises instead of replicating)
    g = torch.Generator().manual_seed(2)
    img = torch.rand(60, 80, generator=g, dtype=torch.float64)
    ours = imresize(img, size=out_hw).numpy()
    pil = np.asarray(Image.fromarray(img.float().numpy(), mode='F').resize(out_hw[::-1], Image.BICUBIC))
    mh = math.ceil(3 * max(1, out_hw[0] / 60)) + 1
    mw = math.ceil(3 * max(1, out_hw[1] / 80)) + 1
    # PIL works in float32 (measured up to 1.1e-7 away); the borders differ by 0.02-0.03: replicate is not PIL's rule
    np.testing.assert_allclose(ours[mh:-mh, mw:-mw], pil[mh:-mh, mw:-mw], rtol=0, atol=5e-7)
    assert np.abs(ours - pil).max() > 0.01


def test_shapes_dtypes_and_constants():
    img = torch.full((2, 3, 10, 20), 0.25)
    out = imresize(img, 0.35)
    assert out.shape == (2, 3, 4, 7) and out.dtype == torch.float32  # ceil(10 * .35), ceil(20 * .35)
    torch.testing.assert_close(out, torch.full_like(out, 0.25))
    assert imresize(img, (2, 0.5)).shape == (2, 3, 20, 10)
    assert imresize(img[0, 0], size=(7, 3)).shape == (7, 3)
    assert imresize(torch.full((1, 5, 5), 200, dtype=torch.uint8), 3.3).unique().tolist() == [200]


def test_batch_equals_single_images():
    g = torch.Generator().manual_seed(3)
    img = torch.randint(0, 256, (3, 3, 17, 12), generator=g, dtype=torch.uint8)
    out = imresize(img, 2.5)
    for i in range(3):
        assert torch.equal(out[i], imresize(img[i], 2.5))


def test_linear_ramp_is_reproduced_when_upscaling():
    # Keys' cubic reproduces linear functions exactly, so an upscaled ramp stays a ramp inside
    ramp = torch.arange(12, dtype=torch.float64).view(1, 12).expand(6, 12)
    out = imresize(ramp, size=(6, 36))
    centres = (torch.arange(36, dtype=torch.float64) + 0.5) / 3 - 0.5
    torch.testing.assert_close(out[0, 4:-4], centres[4:-4], rtol=0, atol=1e-12)


def test_bands_equal_whole_resize():
    g = torch.Generator().manual_seed(4)
    img = torch.rand(4, 13, 9, generator=g)
    whole = imresize(img, size=(40, 27))
    bands = list(iter_imresize_bands(img, (40, 27), rows=7))
    assert [r0 for r0, _ in bands] == [0, 7, 14, 21, 28, 35]
    torch.testing.assert_close(torch.cat([b for _, b in bands], dim=-2), whole)


def test_bad_arguments():
    img = torch.zeros(3, 8, 8)
    with pytest.raises(ValueError, match='exactly one'):
        imresize(img, 2, size=(4, 4))
    with pytest.raises(ValueError, match='positive'):
        imresize(img, -1)
    with pytest.raises(ValueError, match='positive'):
        imresize(img, size=(0, 4))
    with pytest.raises(TypeError):
        imresize(img.long(), 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device')
def test_cuda_equals_cpu():
    hr_path, lr_path = next(_rcan_pairs(3))
    hr = read_rgb_u8(hr_path)
    assert torch.equal(imresize(hr.to(torch.device('cuda')), 1 / 3).cpu(), read_rgb_u8(lr_path))
    x = torch.rand(2, 3, 30, 40)
    torch.testing.assert_close(imresize(x.to(torch.device('cuda')), 1.7).cpu(), imresize(x, 1.7), atol=1e-5, rtol=0)
