"""The run folder: a start that fails before its first checkpoint leaves nothing that blocks the same command."""
import os

import pytest
import yaml

import train_liif
from tests.conftest import ROOT, shared_path
from training.rundir import is_fresh, remove_failed_start
from utils.checkpoint import atomic_save, load_checkpoint
from utils.errors import UserError

TINY = os.path.join(ROOT, 'configs', 'train-local', 'train_tiny-liif.yaml')


@pytest.fixture
def tiny(tmp_path):
    """The tiny config on the CPU with absolute data paths, one epoch, written to tmp_path/tiny.yaml."""
    with open(TINY) as f:
        cfg = yaml.safe_load(f)
    cfg.update(device='cpu', epoch_max=1)
    cfg['train_dataset']['dataset']['args'].update(root_path=shared_path('train', 'T91'), first_k=4)
    cfg['val_dataset']['dataset']['args'].update(root_path=shared_path('benchmark', 'Set5', 'HR'), repeat=1)
    path = tmp_path / 'tiny.yaml'
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def train(tmp_path, *args):
    return train_liif.main([*args, '--save-root', str(tmp_path / 'save')])


@pytest.mark.filterwarnings('ignore:Using a target size')  # out_dim 4 against 3 colours, on purpose
def test_failed_starts_leave_no_folder_and_the_fixed_command_runs(tmp_path, tiny):
    run = tmp_path / 'save' / 'tiny'
    for bad in ('train_dataset.wrapper.args.inp_size=0', 'train_dataset.wrapper.args.sample_q=0',
                'train_dataset.wrapper.args.sample_q=100000'):
        with pytest.raises(UserError):
            train(tmp_path, '--config', tiny, '-o', bad)
        assert not run.exists(), bad
    # a model that builds but fails in the first step: the folder made for it goes again
    with pytest.raises(RuntimeError):
        train(tmp_path, '--config', tiny, '-o', 'model.args.imnet_spec.args.out_dim=4')
    assert not run.exists()
    assert train(tmp_path, '--config', tiny, '-o', 'train_dataset.wrapper.args.sample_q=64') == 0
    assert (run / 'epoch-last.pth').exists()

    # --resume of a released checkpoint with a --config whose model differs
    ckpt = load_checkpoint(run / 'epoch-last.pth')
    atomic_save({'model': ckpt['model'], 'epoch': ckpt['epoch']}, tmp_path / 'released.pth')
    resume = ['--config', tiny, '--name', 'r2', '--resume', str(tmp_path / 'released.pth'), '-o', 'epoch_max=2']
    with pytest.raises(UserError):
        train(tmp_path, *resume, '-o', 'model.args.imnet_spec.args.hidden_list=[8, 8]')
    assert not (tmp_path / 'save' / 'r2').exists()
    assert train(tmp_path, *resume) == 0
    # a failure later on, in a folder holding a run, deletes nothing
    with pytest.raises(UserError):
        train(tmp_path, *resume, '-o', 'model.args.imnet_spec.args.hidden_list=[8, 8]')
    assert (tmp_path / 'save' / 'r2' / 'epoch-last.pth').exists()


def test_remove_failed_start_keeps_checkpoints(tmp_path):
    assert is_fresh(str(tmp_path / 'absent')) and is_fresh(str(tmp_path))
    (tmp_path / 'run').mkdir()
    (tmp_path / 'run' / 'log.txt').write_text('x')
    assert not is_fresh(str(tmp_path / 'run'))
    (tmp_path / 'kept').mkdir()
    (tmp_path / 'kept' / 'epoch-last.pth').write_bytes(b'x')
    assert not remove_failed_start(str(tmp_path / 'kept')) and (tmp_path / 'kept' / 'epoch-last.pth').exists()
    assert remove_failed_start(str(tmp_path / 'run')) and not (tmp_path / 'run').exists()
    assert not remove_failed_start(str(tmp_path / 'absent'))
