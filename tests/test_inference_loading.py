import logging
import os

import pytest
import torch

from tests.helpers import ENCODER_ONLY, PER_CHANNEL_NORM, ROOT, TINY_LIIF, save_model
from utils.checkpoint import load_checkpoint
from utils.errors import UserError
from utils.norm import DEMO, DataNorm
from inference.loading import _exact_fp32, load_sr, load_sr_model, select_device, stored_norm


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


def test_the_checkpoints_data_norm_wins_over_the_callers(tmp_path, caplog):
    per_channel = DataNorm.from_mapping(PER_CHANNEL_NORM)
    ckpt = save_model(tmp_path / 'own.pth', TINY_LIIF, data_norm=PER_CHANNEL_NORM)
    with caplog.at_level(logging.INFO, logger='inference.loading'):
        loaded = load_sr(ckpt, torch.device('cpu'), DEMO, 'the data_norm of test.yaml')
    assert loaded.norm == per_channel and 'query_rgb' in dir(loaded.model)
    assert "using the checkpoint's (data_norm: inp sub 0.45,0.5,0.35" in caplog.text
    assert 'not the data_norm of test.yaml (inp sub 0.5 div 0.5' in caplog.text
    # a released-format file stores none: the caller's fallback, and the log says so
    caplog.clear()
    released = save_model(tmp_path / 'released.pth', TINY_LIIF)
    with caplog.at_level(logging.INFO, logger='inference.loading'):
        loaded = load_sr(released, torch.device('cpu'), per_channel, 'the data_norm of test.yaml')
    assert loaded.norm == per_channel and loaded.norm_source == 'the data_norm of test.yaml'
    assert 'released.pth stores none, using the data_norm of test.yaml' in caplog.text


def test_stored_norm_lookup_order():
    other = {'inp': {'sub': [0], 'div': [1]}, 'gt': {'sub': [0.1], 'div': [2]}}
    assert stored_norm({'model': {}}) is None
    assert stored_norm({'meta': {'train_config': {'data_norm': other}}}).where == 'meta.train_config.data_norm'
    found = stored_norm({'train_state': {'config': {'data_norm': other}}, 'data_norm': PER_CHANNEL_NORM})
    assert (found.norm, found.where) == (DataNorm.from_mapping(PER_CHANNEL_NORM), 'data_norm')
    assert stored_norm({'train_state': {'config': {'data_norm': other}}}).norm == DataNorm.from_mapping(other)
    with pytest.raises(UserError, match=r'data_norm\.gt must be a mapping'):
        stored_norm({'data_norm': {'inp': other['inp']}})


def test_bundled_weights_carry_their_training_norm():
    path = os.path.join(ROOT, 'weights', 'liif-edsr-baseline.pth')
    if not os.path.isfile(path):
        pytest.skip('no bundled weights')
    found = stored_norm(load_checkpoint(path))
    assert (found.norm, found.where) == (DEMO, 'meta.train_config.data_norm')
