import os

import pytest
import torch

import models
from tests.conftest import shared_path
from inference.loading import load_model
from utils.checkpoint import atomic_save, load_checkpoint, model_spec, save_checkpoint
from utils.errors import UserError

SPEC = {'name': 'liif', 'args': {
    'encoder_spec': {'name': 'edsr-baseline', 'args': {'n_resblocks': 1, 'n_feats': 8, 'no_upsampling': True}},
    'imnet_spec': {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': [16]}}}}


def test_roundtrip_released_format(tmp_path):
    model = models.make(SPEC)
    path = tmp_path / 'epoch-last.pth'
    save_checkpoint(path, model_spec(model, SPEC['name'], SPEC['args']), epoch=3)
    ckpt = load_checkpoint(path)
    assert set(ckpt) == {'model', 'epoch'} and ckpt['epoch'] == 3
    assert set(ckpt['model']) == {'name', 'args', 'sd'}
    rebuilt = load_model(path)
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), rebuilt.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    assert [p.name for p in tmp_path.iterdir()] == ['epoch-last.pth']  # no temporary left


def test_released_checkpoint_loads():
    ckpt = load_checkpoint(shared_path('reference', 'liif-parity', 'edsr-baseline-liif.pth'))
    assert ckpt['model']['name'] == 'liif'


@pytest.mark.parametrize('cut', [0, 10, 4096, 0.5, -64])
def test_truncated_checkpoint_is_one_line_error(tmp_path, cut):
    model = models.make(SPEC)
    good = tmp_path / 'good.pth'
    save_checkpoint(good, model_spec(model, SPEC['name'], SPEC['args']))
    data = good.read_bytes()
    n = int(len(data) * cut) if isinstance(cut, float) else (cut if cut >= 0 else len(data) + cut)
    bad = tmp_path / 'bad.pth'
    bad.write_bytes(data[:n])
    with pytest.raises(UserError, match='truncated or not a PyTorch file') as e:
        load_checkpoint(bad)
    assert '\n' not in str(e.value)


def test_missing_foreign_and_untrusted_files(tmp_path):
    with pytest.raises(UserError, match='not found'):
        load_checkpoint(tmp_path / 'nope.pth')
    (tmp_path / 'text.pth').write_text('hello')
    with pytest.raises(UserError, match='not a PyTorch file'):
        load_checkpoint(tmp_path / 'text.pth')
    torch.save({'weights': torch.zeros(2)}, tmp_path / 'foreign.pth')
    with pytest.raises(UserError, match='not a LIIF checkpoint'):
        load_checkpoint(tmp_path / 'foreign.pth')
    torch.save({'model': {'name': 'liif', 'args': {}, 'sd': {}}, 'extra': UserError('x')},
               tmp_path / 'objects.pth')
    with pytest.raises(UserError, match='trust'):
        load_checkpoint(tmp_path / 'objects.pth')
    assert 'extra' in load_checkpoint(tmp_path / 'objects.pth', trusted=True)


def test_atomic_save_keeps_previous_file_on_failure(tmp_path):
    path = tmp_path / 'ckpt.pth'
    atomic_save({'a': torch.ones(2)}, path)

    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError('boom')

    with pytest.raises(RuntimeError, match='boom'):
        atomic_save({'a': Unsaveable()}, path)
    assert torch.equal(torch.load(path, weights_only=True)['a'], torch.ones(2))
    assert sorted(os.listdir(tmp_path)) == ['ckpt.pth']
