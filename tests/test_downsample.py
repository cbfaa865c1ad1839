import glob
import os

import pytest
import torch

import datasets
from datasets.downsample import downsample
from tests.conftest import shared_path
from tests.helpers import one_thread  # noqa: F401  (fixture)
from utils.errors import UserError
from utils.image import read_rgb_u8, u8_to_float

# one intra-op thread: on the small shared test machines two threads thrash
pytestmark = pytest.mark.usefixtures('one_thread')


def test_matlab_method_reproduces_rcan_lr():
    root = shared_path('reference', 'rcan-set5')
    for hr_path in sorted(glob.glob(os.path.join(root, 'HR', 'x3', '*.png'))):
        lr = read_rgb_u8(os.path.join(root, 'LR_bicubic', 'x3', os.path.basename(hr_path).replace('_HR_', '_LRBI_')))
        out = downsample(u8_to_float(read_rgb_u8(hr_path)), lr.shape[-2:], 'matlab')
        assert torch.equal(out, u8_to_float(lr)), hr_path


def test_downsampled_wrapper_with_matlab_resize():
    root = shared_path('reference', 'rcan-set5')
    hr = datasets.make({'name': 'image-folder', 'args': {'root_path': os.path.join(root, 'HR', 'x2'), 'first_k': 1}})
    ds = datasets.make({'name': 'sr-implicit-downsampled', 'args': {'scale_min': 2, 'resize': 'matlab'}},
                       args={'dataset': hr})
    lr = read_rgb_u8(os.path.join(root, 'LR_bicubic', 'x2', 'baby_LRBI_x2.png'))
    item = ds[0]
    assert torch.equal(item['inp'], u8_to_float(lr))
    assert item['gt'].shape == (512 * 512, 3)


def test_unknown_method():
    with pytest.raises(UserError, match='matlab'):
        downsample(torch.zeros(3, 8, 8), (4, 4), 'lanczos')
