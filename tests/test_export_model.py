"""scripts/export_model.py: a training checkpoint stripped to a release checkpoint."""
import os
import zipfile

import pytest
import torch
from torch.optim.lr_scheduler import MultiStepLR

import models
from inference.loading import load_model
from tests.helpers import PER_CHANNEL_NORM, ROOT, TINY_LIIF, error_lines, load_script, run_script
from training import state
from training.dist import DistInfo
from utils.checkpoint import load_checkpoint, model_spec, save_safetensors
from utils.errors import UserError

export_model = load_script('scripts/export_model.py')

CFG = {'model': TINY_LIIF, 'optimizer': {'name': 'adam', 'args': {'lr': 1e-3}}, 'resume': '/train/box/last.pth',
       'epoch_max': 9, 'data_norm': PER_CHANNEL_NORM}


@pytest.fixture
def training_ckpt(tmp_path):
    """A training checkpoint as the trainer writes it (optimizer, schedule, RNG and resume state)."""
    model = models.make(TINY_LIIF)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = MultiStepLR(opt, [1], 0.5)
    model(torch.rand(1, 3, 8, 8), torch.rand(1, 5, 2) * 2 - 1, torch.full((1, 5, 2), 0.1)).sum().backward()
    opt.step()
    sched.step()
    progress = state.Progress(epoch=4, step=1, global_step=7, best_val_psnr=31.5)
    info = DistInfo(rank=0, world_size=1, local_rank=0, local_world_size=1, device=torch.device('cpu'))
    path = tmp_path / 'epoch-last.pth'
    state.write(state.checkpoint(model, opt, sched, torch.amp.GradScaler('cpu', enabled=False), progress,
                                 CFG, 'run', info), str(path))
    return path, model


def test_release_checkpoint_keeps_weights_and_metadata(tmp_path, training_ckpt):
    src, model = training_ckpt
    dst = tmp_path / 'out' / 'release.pth'
    export_model.main([str(src), str(dst)])
    out = torch.load(dst, weights_only=True)
    assert set(out) == {'model', 'meta', 'data_norm'} and set(out['model']) == {'name', 'args', 'sd'}
    assert out['data_norm'] == PER_CHANNEL_NORM
    assert (out['model']['name'], out['model']['args']) == ('liif', TINY_LIIF['args'])
    sd = model.state_dict()
    assert out['model']['sd'].keys() == sd.keys()
    for k, v in sd.items():
        assert torch.equal(out['model']['sd'][k], v) and out['model']['sd'][k].dtype == v.dtype, k
    assert out['meta'] == {'epoch': 3, 'global_step': 7, 'best_val_psnr': 31.5,
                           'train_config': {k: v for k, v in CFG.items() if k != 'resume'}}
    x = (torch.rand(1, 3, 8, 8), torch.rand(1, 20, 2) * 2 - 1, torch.full((1, 20, 2), 0.1))
    with torch.no_grad():
        assert torch.equal(load_model(dst)(*x), model.eval()(*x))
    assert [n for n in os.listdir(dst.parent) if n != 'release.pth'] == []


def test_fp16_export_halves_float_weights(tmp_path, training_ckpt):
    src, model = training_ckpt
    dst = tmp_path / 'half.pth'
    export_model.main([str(src), str(dst), '--fp16'])
    sd = torch.load(dst, weights_only=True)['model']['sd']
    for k, v in model.state_dict().items():
        assert torch.equal(sd[k], v.half() if v.is_floating_point() else v), k


def test_a_release_checkpoint_re_exports_with_its_metadata(tmp_path, training_ckpt):
    src, _ = training_ckpt
    released = tmp_path / 'released.pth'
    export_model.main([str(src), str(released)])
    again = tmp_path / 'again.pth'
    export_model.main([str(released), str(again)])
    first, out = torch.load(released, weights_only=True), torch.load(again, weights_only=True)
    assert out['meta'] == first['meta'] and out['meta']['global_step'] == 7
    assert out['data_norm'] == first['data_norm'] == PER_CHANNEL_NORM


def test_an_authors_checkpoint_exports_without_training_metadata(tmp_path):
    out = export_model.release_checkpoint(_training_ckpt())
    assert out['meta'] == {'epoch': 3, 'global_step': None, 'best_val_psnr': None, 'train_config': None}


@pytest.mark.parametrize('case, message', [
    ('missing', 'checkpoint not found: '),
    ('text', 'truncated or not a PyTorch file'),
    ('folder', 'is a folder: give the path of the release checkpoint'),
])
def test_bad_input_is_one_line(tmp_path, training_ckpt, case, message):
    src, dst = str(training_ckpt[0]), str(tmp_path / 'out.pth')
    if case == 'missing':
        src = str(tmp_path / 'nope.pth')
    elif case == 'text':
        src = str(tmp_path / 'notes.txt')
        open(src, 'w').write('not a checkpoint\n')
    else:
        dst = str(tmp_path)
    with pytest.raises(UserError, match=message) as e:
        export_model.main([src, dst])
    assert '\n' not in str(e.value)
    assert not os.path.exists(tmp_path / 'out.pth')


def test_summary_line(tmp_path, training_ckpt, capsys):
    export_model.main([str(training_ckpt[0]), str(tmp_path / 'r.pth')])
    assert capsys.readouterr().out.endswith('step 7, epoch 3)\n')


def test_command_line_error_exit_code(tmp_path):
    bad = run_script('scripts/export_model.py', tmp_path / 'nope.pth', tmp_path / 'x.pth')
    assert bad.returncode == 2 and error_lines(bad) == [f"error: checkpoint not found: {tmp_path / 'nope.pth'}"]


def _training_ckpt(**extra):
    spec = model_spec(models.make(TINY_LIIF), TINY_LIIF['name'], TINY_LIIF['args'])
    return {'model': spec, 'optimizer': {'name': 'adam', 'args': {}, 'sd': {}}, 'epoch': 3, **extra}


def test_data_norm_is_kept_at_the_top_level():
    other = {'inp': {'sub': [0], 'div': [1]}, 'gt': {'sub': [0], 'div': [1]}}
    ckpt = _training_ckpt(data_norm=PER_CHANNEL_NORM,
                          train_state={'global_step': 9, 'config': {'data_norm': other, 'resume': '/x.pth'}})
    out = export_model.release_checkpoint(ckpt)
    assert set(out) == {'model', 'meta', 'data_norm'} and out['data_norm'] == PER_CHANNEL_NORM
    assert out['meta']['train_config'] == {'data_norm': other} and out['meta']['global_step'] == 9
    assert all(torch.equal(out['model']['sd'][k], v) for k, v in ckpt['model']['sd'].items())
    # an older training checkpoint: the stored training config's norm
    older = export_model.release_checkpoint(_training_ckpt(train_state={'config': {'data_norm': PER_CHANNEL_NORM}}))
    assert older['data_norm'] == PER_CHANNEL_NORM
    # the authors' released format stores none: nothing is invented
    assert 'data_norm' not in export_model.release_checkpoint(_training_ckpt())


def test_safetensors_export_loads_as_the_pth_export(tmp_path, training_ckpt):
    """By extension or by --format: the same release checkpoint, bit for bit, in the safetensors format."""
    src, _ = training_ckpt
    export_model.main([str(src), str(tmp_path / 'r.pth')])
    export_model.main([str(src), str(tmp_path / 'r.safetensors')])
    export_model.main([str(src), str(tmp_path / 'r.bin'), '--format', 'safetensors'])
    want = load_checkpoint(tmp_path / 'r.pth')
    for name in ('r.safetensors', 'r.bin'):
        assert (tmp_path / name).read_bytes()[8:9] == b'{', name  # a safetensors header, not a zip
        got = load_checkpoint(tmp_path / name)
        assert {k: v for k, v in got.items() if k != 'model'} == {k: v for k, v in want.items() if k != 'model'}
        assert got['model']['args'] == want['model']['args'] and list(got['model']['sd']) == list(want['model']['sd'])
        assert all(torch.equal(got['model']['sd'][k], v) for k, v in want['model']['sd'].items())
    assert zipfile.is_zipfile(tmp_path / 'r.pth')


def test_fp16_safetensors_export(tmp_path, training_ckpt):
    src, model = training_ckpt
    export_model.main([str(src), str(tmp_path / 'h.safetensors'), '--fp16'])
    sd = load_checkpoint(tmp_path / 'h.safetensors')['model']['sd']
    for k, v in model.state_dict().items():
        assert sd[k].dtype == (torch.float16 if v.is_floating_point() else v.dtype), k
        assert torch.equal(sd[k], v.half() if v.is_floating_point() else v), k


def test_bundled_model_converts_with_its_metadata(tmp_path):
    bundled = os.path.join(ROOT, 'weights', 'liif-edsr-baseline.pth')
    export_model.main([bundled, str(tmp_path / 'b.safetensors')])
    got, want = load_checkpoint(tmp_path / 'b.safetensors'), load_checkpoint(bundled)
    assert got['meta'] == want['meta'] and got['meta']['global_step'] == 12012
    assert got['data_norm'] == want['meta']['train_config']['data_norm']


@pytest.mark.parametrize('dst, fmt', [('m.safetensors', 'pth'), ('m.pth', 'safetensors'), ('m.PT', 'safetensors')])
def test_format_and_extension_mismatch_is_one_line(tmp_path, training_ckpt, dst, fmt):
    with pytest.raises(UserError, match=f"--format {fmt} does not match the destination {dst}") as e:
        export_model.main([str(training_ckpt[0]), str(tmp_path / dst), '--format', fmt])
    assert '\n' not in str(e.value) and not (tmp_path / dst).exists()


def test_training_state_never_reaches_a_safetensors_file(tmp_path, training_ckpt):
    """Saving the training checkpoint itself as safetensors is refused: its optimizer state is no plain data."""
    ckpt = load_checkpoint(training_ckpt[0])
    with pytest.raises(UserError, match="is not plain JSON data"):
        save_safetensors(tmp_path / 't.safetensors', ckpt)
