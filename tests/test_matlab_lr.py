import logging
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from datasets.matlab_lr import ensure_matlab_lr, matlab_lr
from tests.conftest import shared_path
from tests.helpers import one_thread  # noqa: F401  (fixture)
from utils.image import read_rgb_u8
from utils.imresize import imresize

# one intra-op thread: on the small shared test machines two threads thrash
pytestmark = pytest.mark.usefixtures('one_thread')


def test_generated_folder_equals_published_lr_and_is_reused(tmp_path, caplog):
    root = shared_path('reference', 'rcan-set5')
    hr_root = os.path.join(root, 'HR', 'x4')
    with caplog.at_level(logging.INFO):
        out = ensure_matlab_lr(hr_root, 4, str(tmp_path / 'cache'), missing='LR_bicubic/X4')
    assert 'LR_bicubic/X4 not found' in caplog.text and '5 generated now, 0 reused' in caplog.text
    names = sorted(os.listdir(out))
    assert names == sorted(os.listdir(hr_root))  # same names: pairs line up as in published folders
    for n in names:
        ref = read_rgb_u8(os.path.join(root, 'LR_bicubic', 'x4', n.replace('_HR_', '_LRBI_')))
        assert torch.equal(read_rgb_u8(os.path.join(out, n)), ref), n
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert ensure_matlab_lr(hr_root, 4, str(tmp_path / 'cache')) == out
    assert '0 generated now, 5 reused' in caplog.text


def test_cache_follows_hr_changes_and_leaves_no_temporaries(tmp_path):
    hr_root = tmp_path / 'Set' / 'HR'
    shutil.copytree(shared_path('benchmark', 'Set5', 'HR'), hr_root)
    first = ensure_matlab_lr(str(hr_root), 3, str(tmp_path / 'cache'))
    assert os.path.basename(os.path.dirname(first)).startswith('Set-')
    img = np.asarray(Image.open(hr_root / 'bird.png')).copy()
    img[:8] = 0
    Image.fromarray(img).save(hr_root / 'bird.png')
    os.utime(hr_root / 'bird.png', ns=(1, 1))
    second = ensure_matlab_lr(str(hr_root), 3, str(tmp_path / 'cache'))
    assert second != first
    # the first LR row only sees HR rows 1..8 (1-based), all zero now
    assert torch.equal(read_rgb_u8(os.path.join(second, 'bird.png'))[:, :1], torch.zeros(3, 1, 96, dtype=torch.uint8))
    for folder in (first, second):
        assert all(n.endswith('.png') and not n.startswith('.') for n in os.listdir(folder))


def test_hr_is_cropped_to_a_multiple_of_the_scale():
    hr = torch.randint(0, 256, (3, 50, 47), dtype=torch.uint8)
    lr = matlab_lr(hr, 4)
    assert lr.shape == (3, 12, 11)
    assert torch.equal(lr, imresize(hr[:, :48, :44], 0.25))
