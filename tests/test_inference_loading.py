import pytest
import torch

from tests.helpers import ENCODER_ONLY, TINY_LIIF, save_model
from utils.errors import UserError
from inference.loading import _exact_fp32, load_sr_model, select_device


def test_cpu_selection_and_bad_ids(monkeypatch):
    assert select_device('cpu') == torch.device('cpu')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert select_device(None) == torch.device('cpu')
    # a GPU asked for and absent stops, as in train_liif.py (it used to warn and run on the CPU)
    with pytest.raises(UserError, match=r'^--gpu 0: CUDA is not available here \(drop --gpu, or pass --gpu cpu'):
        select_device('0')
    with pytest.raises(UserError, match='device number'):
        select_device('gpu0')


def test_cuda_devices_run_without_tf32():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        _exact_fp32(torch.device('cpu'))
        assert torch.backends.cudnn.allow_tf32  # the CPU leaves the flags alone
        _exact_fp32(torch.device('cuda', 0))
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_only_arbitrary_scale_models_load(tmp_path):
    assert hasattr(load_sr_model(save_model(tmp_path / 'liif.pth', TINY_LIIF), torch.device('cpu')), 'query_rgb')
    with pytest.raises(UserError, match='not an arbitrary-scale SR model'):
        load_sr_model(save_model(tmp_path / 'enc.pth', ENCODER_ONLY), torch.device('cpu'))
