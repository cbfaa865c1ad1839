"""evaluation/gallery.py: the crop where the model gains most over bicubic, and the HTML gallery of an evaluation."""
import html
import json
import os
import re
import urllib.parse

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import models
from evaluation.gallery import GalleryWriter, Window, best_window, dataset_names, gain_map
from evaluation.protocol import Protocol, evaluate, liif_predictor, make_test_loader
from tests.conftest import shared_path
from tests.helpers import (TINY_LIIF, load_script, manual_upscale, np_psnr, one_thread, run_script,  # noqa: F401
                          save_model, write_small_pairs)
from utils.errors import UserError
from utils.imresize import imresize

pytestmark = pytest.mark.usefixtures('one_thread')

IDENTITY_NORM = {'inp': {'sub': [0.0], 'div': [1.0]}, 'gt': {'sub': [0.0], 'div': [1.0]}}
Y = np.array([65.481, 128.553, 24.966]).reshape(3, 1, 1) / 255


def brute_force_window(gain: np.ndarray, size: int):
    """(top, left) of the first size x size window of largest sum, by summing every window."""
    best, where = -np.inf, None
    for top in range(gain.shape[0] - size + 1):
        for left in range(gain.shape[1] - size + 1):
            total = gain[top:top + size, left:left + size].sum()
            if total > best:
                best, where = total, (top, left)
    return where


def test_best_window_is_the_largest_window_sum():
    rng = np.random.default_rng(3)
    gain = rng.normal(size=(13, 17))
    for size in (1, 4, 13):
        top, left = brute_force_window(gain, size)
        assert best_window(torch.from_numpy(gain), size) == Window(top, left, size)
    # a window larger than the image is clipped to it; ties go to the first window in row order
    assert best_window(torch.from_numpy(gain), 40) == Window(*brute_force_window(gain, 13), 13)
    assert best_window(torch.zeros(6, 6), 2) == Window(0, 0, 2)


def test_gain_is_bicubic_minus_model_error_on_y_inside_the_shave():
    rng = np.random.default_rng(4)
    gt, bic, pred = (rng.uniform(size=(3, 10, 12)) for _ in range(3))
    got = gain_map(*(torch.from_numpy(a) for a in (bic, pred, gt)), Protocol('benchmark', 2)).numpy()
    want = np.abs(((bic - gt) * Y).sum(0)) - np.abs(((pred - gt) * Y).sum(0))
    assert np.abs(got[2:-2, 2:-2] - want[2:-2, 2:-2]).max() < 1e-12
    assert not got[:2].any() and not got[-2:].any() and not got[:, :2].any() and not got[:, -2:].any()
    plain = gain_map(*(torch.from_numpy(a) for a in (bic, pred, gt)), Protocol('plain', 0)).numpy()
    assert np.abs(plain - (np.abs(bic - gt).sum(0) - np.abs(pred - gt).sum(0))).max() < 1e-12


ODD_NAME = 'h&d <x>.png'  # escaped in the page, quoted in the links


@pytest.fixture
def pairs(tmp_path):
    """Two 48 px HR images of Set5 and their x2 MATLAB LR; the second renamed to a name HTML must escape."""
    lr_dir, hr_dir = write_small_pairs(shared_path('benchmark', 'Set5', 'HR'), tmp_path / 'data')
    for d in (lr_dir, hr_dir):
        os.rename(os.path.join(d, 'head.png'), os.path.join(d, ODD_NAME))
    return lr_dir, hr_dir


def _loader(lr_dir, hr_dir, protocol):
    spec = {'dataset': {'name': 'paired-image-folders', 'args': {'root_path_1': lr_dir, 'root_path_2': hr_dir}},
            'wrapper': {'name': 'sr-implicit-paired', 'args': {}}, 'batch_size': 1}
    return make_test_loader(spec, protocol, 'unused')


def _page_rows(folder):
    """index.html, and per table row: name, linked files (in order) and the data-psnr values."""
    return _page_rows_of(open(os.path.join(folder, 'index.html')).read())


def _page_rows_of(page):
    rows = []
    for row in re.findall(r'<tr><td>\d+</td>.*?</tr>', page):
        name = html.unescape(re.search(r'<td>\d+</td><td>(.*?)</td>', row).group(1))
        links = [urllib.parse.unquote(html.unescape(h)) for h in re.findall(r'href="([^"]*)"', row)]
        psnrs = [float(v) for v in re.findall(r'data-psnr="([^"]*)"', row)]
        rows.append((name, links, psnrs))
    return page, rows


def test_gallery_of_a_tiny_evaluation(tmp_path, pairs):
    lr_dir, hr_dir = pairs
    protocol = Protocol('benchmark', 2)
    loader = _loader(lr_dir, hr_dir, protocol)
    torch.manual_seed(0)
    model = models.make(TINY_LIIF).eval()
    out = tmp_path / 'gallery'
    with GalleryWriter(str(out), crop=16) as gallery:
        gallery.section('Set5 crops x2', protocol, dataset_names(loader.dataset))
        res = evaluate(liif_predictor(model, None, None), loader, protocol, torch.device('cpu'),
                       on_image=gallery.add)
    page, rows = _page_rows(out)
    assert [r[0] for r in rows] == ['bird.png', ODD_NAME]
    assert 'h&amp;d &lt;x&gt;.png' in page and '<x>' not in page
    assert [f for f in os.listdir(out) if f.startswith('.')] == []  # no staging folder left
    psnr_model = []
    for (name, links, psnrs) in rows:
        assert len(links) == 4 and all(os.path.isfile(out / rel) for rel in links), links
        assert all(not os.path.isabs(rel) for rel in links)
        hr = np.asarray(Image.open(os.path.join(hr_dir, name)).convert('RGB'))
        lr = np.asarray(Image.open(os.path.join(lr_dir, name)).convert('RGB'))
        pred = manual_upscale(model, lr, hr.shape[:2], IDENTITY_NORM)
        bic = imresize(torch.from_numpy(lr.transpose(2, 0, 1) / 255.0), size=hr.shape[:2]).clamp(0, 1).numpy()
        gt = hr.transpose(2, 0, 1) / 255.0
        # bicubic, then model: each the whole image's PSNR under the protocol (Y, shave 2)
        assert psnrs[0] == pytest.approx(np_psnr(bic, gt, 2, True), abs=1e-6)
        assert psnrs[1] == pytest.approx(np_psnr(pred, gt, 2, True), abs=1e-4)
        psnr_model.append(psnrs[1])
        # the crops are the first 16 px window of largest summed |bicubic error| - |model error| (on Y)
        gain = np.abs(((bic - gt) * Y).sum(0)) - np.abs(((pred - gt) * Y).sum(0))
        gain[:2], gain[-2:], gain[:, :2], gain[:, -2:] = 0, 0, 0, 0
        top, left = brute_force_window(gain, 16)
        crops = {key: np.asarray(Image.open(out / rel)) for key, rel in zip(('bicubic', 'model', 'hr'), links[1:])}
        assert np.array_equal(crops['hr'], hr[top:top + 16, left:left + 16])
        assert np.array_equal(crops['bicubic'], np.round(bic.transpose(1, 2, 0) * 255)[top:top + 16, left:left + 16])
        assert np.abs(crops['model'].astype(int)
                      - np.round(pred.transpose(1, 2, 0) * 255)[top:top + 16, left:left + 16]).max() <= 1
    assert np.mean(psnr_model) == pytest.approx(res['psnr'], abs=1e-9)


def test_nothing_is_published_when_the_evaluation_fails(tmp_path, pairs):
    lr_dir, hr_dir = pairs
    protocol = Protocol('benchmark', 2)
    calls = []

    def failing_predict(inp, size):
        calls.append(size)
        if len(calls) == 2:
            raise RuntimeError('out of memory')
        return imresize(inp, size=size).clamp(0, 1)

    out = tmp_path / 'gallery'
    with pytest.raises(RuntimeError):
        with GalleryWriter(str(out)) as gallery:
            gallery.section('x2', protocol)
            evaluate(failing_predict, _loader(lr_dir, hr_dir, protocol), protocol, torch.device('cpu'),
                     on_image=gallery.add)
    assert len(calls) == 2 and os.listdir(out) == []


def test_test_py_writes_the_gallery(tmp_path, pairs):
    lr_dir, hr_dir = pairs
    cfg = tmp_path / 'test.yaml'
    cfg.write_text(yaml.safe_dump({
        'test_dataset': {'dataset': {'name': 'paired-image-folders',
                                     'args': {'root_path_1': lr_dir, 'root_path_2': hr_dir}},
                         'wrapper': {'name': 'sr-implicit-paired', 'args': {}}, 'batch_size': 1},
        'eval_type': 'benchmark-2'}))
    torch.manual_seed(1)
    ckpt = save_model(tmp_path / 'tiny.pth', TINY_LIIF)
    proc = run_script('test.py', '--config', cfg, '--model', ckpt, '--gallery', tmp_path / 'g')
    assert proc.returncode == 0, proc.stderr
    _, rows = _page_rows(tmp_path / 'g')
    assert [r[0] for r in rows] == ['bird.png', ODD_NAME]
    mean = float(re.search(r'psnr: ([\d.]+)', proc.stdout).group(1))
    assert mean == pytest.approx(np.mean([r[2][1] for r in rows]), abs=5e-5)


def test_eval_suite_gallery_needs_a_model(tmp_path):
    eval_suite = load_script('scripts/eval_suite.py')
    with pytest.raises(UserError, match=r"^--gallery compares a model with bicubic: it needs --model, not --bicubic$"):
        eval_suite.main(['--bicubic', '--suite', 'benchmark', '--out', str(tmp_path / 'o'),
                         '--gallery', str(tmp_path / 'g')])
    assert not os.path.exists(tmp_path / 'g')


def test_eval_suite_gallery_follows_the_table(tmp_path):
    hr = tmp_path / 'data' / 'div2k' / 'DIV2K_valid_HR'
    hr.mkdir(parents=True)
    for name in ('bird.png', 'head.png'):
        Image.open(shared_path('benchmark', 'Set5', 'HR', name)).crop((10, 20, 74, 70)).save(hr / name)
    ckpt = save_model(tmp_path / 'tiny.pth', TINY_LIIF)
    proc = run_script('scripts/eval_suite.py', '--model', ckpt, '--suite', 'div2k', '--scales', '3,12',
                      '--data-root', tmp_path / 'data', '--lr-cache', tmp_path / 'cache', '--out', tmp_path / 'out',
                      '--gallery', tmp_path / 'g')
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / 'out' / 'div2k.json').read_text())
    page = (tmp_path / 'g' / 'index.html').read_text()
    # one table per cell, in the table's order, each image's model PSNR as the evaluation scored it
    sections = re.split(r'<h2>', page)[1:]
    assert [re.match(r'(.*?)</h2>', s).group(1) for s in sections] == ['DIV2K x3', 'DIV2K x12']
    for scale, section in zip(('3', '12'), sections):
        _, rows = _page_rows_of(section)
        assert [r[0] for r in rows] == ['bird.png', 'head.png']
        assert all(os.path.isfile(tmp_path / 'g' / rel) for r in rows for rel in r[1])
        assert np.mean([r[2][1] for r in rows]) == pytest.approx(report['results']['DIV2K'][scale]['psnr'], abs=1e-9)
