import os
import zipfile

import pytest
import torch

import models
from tests.conftest import shared_path
from tests.helpers import load_script
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
    want, got = model.state_dict(), rebuilt.state_dict()
    assert list(got) == list(want)  # zip below would silently stop at a missing key
    for k, v in want.items():
        assert torch.equal(got[k], v), k
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


def _saved(tmp_path, legacy: bool):
    model = models.make(SPEC)
    path = tmp_path / ('legacy.pth' if legacy else 'zip.pth')
    torch.save({'model': model_spec(model, SPEC['name'], SPEC['args']), 'epoch': 1}, path,
               _use_new_zipfile_serialization=not legacy)
    return model, path


def test_legacy_format_checkpoint_loads(tmp_path):
    """torch.save(..., _use_new_zipfile_serialization=False) files load with weights_only, as torch.load reads them."""
    model, path = _saved(tmp_path, legacy=True)
    assert not zipfile.is_zipfile(path)
    rebuilt = load_model(path)
    want, got = model.state_dict(), rebuilt.state_dict()
    assert list(got) == list(want)  # zip below would silently stop at a missing key
    for k, v in want.items():
        assert torch.equal(got[k], v), k


@pytest.mark.parametrize('cut', [0, 10, 16, 0.5, -8])
def test_truncated_legacy_checkpoint_is_one_line_error(tmp_path, cut):
    _, good = _saved(tmp_path, legacy=True)
    data = good.read_bytes()
    n = int(len(data) * cut) if isinstance(cut, float) else (cut if cut >= 0 else len(data) + cut)
    (tmp_path / 'bad.pth').write_bytes(data[:n])
    with pytest.raises(UserError, match='truncated or not a PyTorch file') as e:
        load_checkpoint(tmp_path / 'bad.pth')
    assert '\n' not in str(e.value)


@pytest.mark.parametrize('legacy', [False, True])
def test_untrusted_message_names_the_flag_and_the_class(tmp_path, legacy):
    torch.save({'model': {'name': 'liif', 'args': {}, 'sd': {}}, 'extra': UserError('x')}, tmp_path / 'o.pth',
               _use_new_zipfile_serialization=not legacy)
    with pytest.raises(UserError) as e:
        load_checkpoint(tmp_path / 'o.pth')
    assert str(e.value) == (f"checkpoint {tmp_path / 'o.pth'} holds a utils.errors.UserError object, beyond tensors "
                            f"and plain data; if you trust its source, pass --trust-checkpoint (unpickling it can "
                            f"run any code)")


def test_missing_weights_are_summarised(tmp_path):
    model = models.make(SPEC)
    sd = model.state_dict()
    keys = list(sd)
    partial = {k: v for k, v in sd.items() if k.startswith('imnet')}
    partial['extra.weight'] = torch.zeros(1)
    partial[keys[-1]] = torch.zeros(5)  # an imnet weight of the wrong shape
    with pytest.raises(UserError) as e:
        models.make({**SPEC, 'sd': partial}, load_sd=True)
    msg = str(e.value)
    missing = [k for k in keys if not k.startswith('imnet')]
    assert msg == (f"state dict does not fit model 'liif': {len(missing)} of {len(keys)} weights missing "
                   f"({', '.join(missing[:3])}, ... ({len(missing) - 3} more)); 1 unexpected (extra.weight); "
                   f"1 of other shape ({keys[-1]} (5,) vs {tuple(sd[keys[-1]].shape)})")
    assert len(msg) < 300


def test_every_checkpoint_loading_script_takes_trust_checkpoint():
    """The flag the untrusted-pickle message names exists wherever a checkpoint is loaded."""
    assert load_script('demo.py').parse_args(['--input', 'a', '--scale', '2', '--output', 'b.png',
                                          '--trust-checkpoint']).trust_checkpoint
    assert load_script('test.py').parse_args(['--config', 'c', '--model', 'm', '--trust-checkpoint']).trust_checkpoint
    assert load_script('train_liif.py').build_parser().parse_args(['--resume', 'r', '--trust-checkpoint']).trust_checkpoint
    assert load_script('scripts/eval_suite.py').parse_args(['--model', 'm', '--suite', 'div2k', '--out', 'o',
                                                        '--trust-checkpoint']).trust_checkpoint


def test_export_with_trust_checkpoint(tmp_path):
    export = load_script('scripts/export_model.py')
    model = models.make(SPEC)
    torch.save({'model': model_spec(model, SPEC['name'], SPEC['args']), 'extra': UserError('x')}, tmp_path / 'o.pth')
    with pytest.raises(UserError, match='pass --trust-checkpoint'):
        export.main([str(tmp_path / 'o.pth'), str(tmp_path / 'out.pth')])
    export.main([str(tmp_path / 'o.pth'), str(tmp_path / 'out.pth'), '--trust-checkpoint'])
    assert set(load_checkpoint(tmp_path / 'out.pth')) == {'model', 'meta'}
