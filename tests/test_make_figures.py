"""scripts/make_figures.py: the README's figures, their PSNRs and sizes."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

import models
from evaluation.protocol import bicubic_predictor, liif_predictor
from tests.conftest import shared_path
from tests.helpers import ROOT, TINY_LIIF, load_script, manual_upscale, np_psnr, one_thread, save_model  # noqa: F401
from utils.errors import UserError
from utils.imresize import imresize

pytestmark = pytest.mark.usefixtures('one_thread')

make_figures = load_script('scripts/make_figures.py')

IDENTITY_NORM = {'inp': {'sub': [0.0], 'div': [1.0]}, 'gt': {'sub': [0.0], 'div': [1.0]}}
MAX_BYTES = 500 * 1024


def _hr_crop(side=32):
    hr = np.asarray(Image.open(shared_path('benchmark', 'Set5', 'HR', 'bird.png')).convert('RGB'))
    return hr[60:60 + side, 100:100 + side].copy()


def test_x4_panels_and_their_psnr():
    hr = _hr_crop()
    torch.manual_seed(0)
    model = models.make(TINY_LIIF).eval()
    res = make_figures.x4_panels(torch.from_numpy(hr).permute(2, 0, 1).contiguous(), liif_predictor(model, None, None))
    lr = imresize(torch.from_numpy(hr).permute(2, 0, 1).contiguous(), scale=0.25).permute(1, 2, 0).numpy()
    gt = hr.transpose(2, 0, 1) / 255
    nearest = lr.repeat(4, axis=0).repeat(4, axis=1).transpose(2, 0, 1) / 255
    bic = imresize(torch.from_numpy(lr.transpose(2, 0, 1) / 255.0), size=(32, 32)).clamp(0, 1).numpy()
    liif = manual_upscale(model, lr, (32, 32), IDENTITY_NORM)
    # the benchmark protocol at x4: Y channel, 4 px shaved
    assert res.psnr['Nearest LR'] == pytest.approx(np_psnr(nearest, gt, 4, True), abs=1e-6)
    assert res.psnr['Bicubic'] == pytest.approx(np_psnr(bic, gt, 4, True), abs=1e-6)
    assert res.psnr['LIIF'] == pytest.approx(np_psnr(liif, gt, 4, True), abs=1e-4)
    assert [p.label for p in res.panels] == [f"Nearest LR {res.psnr['Nearest LR']:.2f} dB",
                                             f"Bicubic {res.psnr['Bicubic']:.2f} dB",
                                             f"LIIF {res.psnr['LIIF']:.2f} dB", 'HR (PSNR on Y)']
    assert np.array_equal(res.panels[0].image, np.round(nearest.transpose(1, 2, 0) * 255))
    assert np.array_equal(res.panels[3].image, hr)
    with pytest.raises(UserError, match='multiple of 4'):
        make_figures.x4_panels(torch.zeros(3, 30, 32, dtype=torch.uint8), bicubic_predictor())


def test_scale_panels_show_the_same_centre_at_every_scale():
    lr = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    panels = make_figures.scale_panels(lr, bicubic_predictor(), (1.5, 2.5), view=4, tile=10)
    assert [p.label for p in panels] == ['x1.5 (6 px)', 'x2.5 (10 px)']
    for s, side, panel in zip((1.5, 2.5), (6, 10), panels):
        out = imresize(lr[0], size=(round(12 * s),) * 2).clamp(0, 1).numpy()
        top = (round(12 * s) - side) // 2
        centre = out[:, top:top + side, top:top + side]
        idx = np.floor(np.arange(10) * side / 10).astype(int)  # nearest neighbour onto 10 x 10
        want = np.round(centre[:, idx][:, :, idx].transpose(1, 2, 0) * 255)
        assert panel.image.shape == (10, 10, 3) and np.array_equal(panel.image, want)


def test_small_run_writes_both_figures(tmp_path):
    hr_path = tmp_path / 'hr.png'
    Image.fromarray(_hr_crop(48)).save(hr_path)
    ckpt = save_model(tmp_path / 'tiny.pth', TINY_LIIF)
    written = make_figures.main(['--image', str(hr_path), '--box', '8,4,32', '--model', ckpt,
                                 '--scales', '1.5,2.5', '--view', '4', '--out', str(tmp_path / 'out')])
    assert [os.path.basename(p) for p in written] == ['figure_x4.png', 'figure_scales.png']
    assert Image.open(written[0]).size == (4 * 32 + 3 * 4, 32 + make_figures.LABEL_H)
    assert Image.open(written[1]).size == (2 * 10 + 4, 10 + make_figures.LABEL_H)
    assert all(os.path.getsize(p) < MAX_BYTES for p in written)
    with pytest.raises(UserError, match='outside'):
        make_figures.main(['--image', str(hr_path), '--box', '20,20,32', '--model', ckpt, '--out', str(tmp_path)])


def test_committed_figures_are_small():
    for name, size in (('figure_x4.png', (652, 176)), ('figure_scales.png', (1460, 256))):
        path = os.path.join(ROOT, 'assets', name)
        assert os.path.getsize(path) < MAX_BYTES and Image.open(path).size == size
