"""train_liif.py end to end on a tiny config: outputs, exact resume, safe stops, DDP, bad configs."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

import train_liif
from tests.conftest import ROOT, shared_path
from inference.loading import load_model
from utils.checkpoint import load_checkpoint
from utils.errors import UserError

TINY = os.path.join(ROOT, 'configs', 'train-local', 'train_tiny-liif.yaml')


def _env():
    path = os.pathsep.join(p for p in (ROOT, os.environ.get('PYTHONPATH')) if p)
    env = dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    env.pop('RANK', None)
    env.pop('WORLD_SIZE', None)
    return env


@pytest.fixture
def tiny(tmp_path):
    """The tiny config with absolute data paths, on the CPU (bit-exact checks), written to tmp_path/tiny.yaml."""
    with open(TINY) as f:
        cfg = yaml.safe_load(f)
    cfg['device'] = 'cpu'
    cfg['train_dataset']['dataset']['args']['root_path'] = shared_path('train', 'T91')
    cfg['val_dataset']['dataset']['args']['root_path'] = shared_path('benchmark', 'Set5', 'HR')
    path = tmp_path / 'tiny.yaml'
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def train(tmp_path, *args):
    """train_liif.main in this process, runs under tmp_path/save; returns the exit code."""
    return train_liif.main([*args, '--save-root', str(tmp_path / 'save')])


def metrics(run_dir):
    with open(os.path.join(run_dir, 'metrics.jsonl')) as f:
        return [json.loads(line) for line in f]


def _same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_run_folder_outputs(tmp_path, tiny):
    assert train(tmp_path, '--config', tiny, '--tag', 't', '-o', 'epoch_max=2') == 0
    run = tmp_path / 'save' / 'tiny_t'
    names = set(os.listdir(run))
    assert {'config.yaml', 'command.txt', 'log.txt', 'metrics.jsonl', 'tensorboard', 'epoch-last.pth',
            'epoch-best.pth', 'epoch-1.pth', 'epoch-2.pth'} <= names
    assert not [n for n in names if n.endswith('.tmp')]
    cfg = yaml.safe_load((run / 'config.yaml').read_text())
    assert cfg['epoch_max'] == 2 and cfg['seed'] == 0  # resolved: overrides and defaults
    assert '--tag t' in (run / 'command.txt').read_text()
    ckpt = load_checkpoint(run / 'epoch-last.pth')  # weights_only loading: plain data only
    assert ckpt['epoch'] == 2 and ckpt['model']['name'] == 'liif'
    assert set(ckpt['optimizer']) == {'name', 'args', 'sd'} and ckpt['optimizer']['name'] == 'adam'
    assert ckpt['data_norm'] == cfg['data_norm']  # what inference must run the model with
    load_model(run / 'epoch-best.pth')
    events = os.listdir(run / 'tensorboard')
    assert events and os.path.getsize(run / 'tensorboard' / events[0]) > 0
    rec = metrics(run)
    assert [r['epoch'] for r in rec] == [1, 2] and rec[1]['lr'] == pytest.approx(5e-4)
    assert all(r['val_psnr'] > 0 for r in rec)
    # a second start under the same name refuses, --overwrite replaces it
    with pytest.raises(UserError, match='already holds a run'):
        train(tmp_path, '--config', tiny, '--tag', 't')
    assert train(tmp_path, '--config', tiny, '--tag', 't', '--overwrite', '-o', 'epoch_max=1') == 0
    assert len(metrics(run)) == 1


def test_resume_is_bit_exact(tmp_path, tiny):
    base = ['--config', tiny, '-o', 'epoch_max=3', '-o', 'train_dataset.dataset.args.first_k=12']
    assert train(tmp_path, *base, '--name', 'full') == 0
    # stopped mid-epoch 2 (step 4 of 3 per epoch), then at the end of epoch 2, then to the end
    assert train(tmp_path, *base, '--name', 'cut', '-o', 'step_limit=4') == 0
    cut = tmp_path / 'save' / 'cut'
    ck = load_checkpoint(cut / 'epoch-last.pth')
    assert ck['epoch'] == 1 and ck['train_state']['step'] == 1
    assert train(tmp_path, *base, '--name', 'cut', '--resume', str(cut / 'epoch-last.pth'),
                 '-o', 'step_limit=2') == 0
    assert load_checkpoint(cut / 'epoch-last.pth')['epoch'] == 2
    assert train(tmp_path, *base, '--name', 'cut', '--resume', str(cut / 'epoch-last.pth')) == 0
    full = tmp_path / 'save' / 'full'
    a, b = metrics(full), metrics(cut)
    keys = ('epoch', 'train_loss', 'lr', 'val_psnr', 'val_loss')
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]
    ca, cb = load_checkpoint(full / 'epoch-last.pth'), load_checkpoint(cut / 'epoch-last.pth')
    _same_state(ca['model']['sd'], cb['model']['sd'])
    assert ca['train_state']['history'] == ca['train_state']['history']
    sa, sb = ca['optimizer']['sd']['state'], cb['optimizer']['sd']['state']
    assert all(torch.equal(sa[i]['exp_avg_sq'], sb[i]['exp_avg_sq']) for i in sa)


def test_resume_from_a_copied_checkpoint_with_workers(tmp_path, tiny):
    base = ['--config', tiny, '-o', 'epoch_max=2', '-o', 'num_workers=2']
    assert train(tmp_path, *base, '--name', 'w_full') == 0
    assert train(tmp_path, *base, '--name', 'w_cut', '-o', 'step_limit=3') == 0
    elsewhere = tmp_path / 'moved.pth'
    os.replace(tmp_path / 'save' / 'w_cut' / 'epoch-last.pth', elsewhere)
    # no --config: the stored one is used; the run continues in a new folder
    assert train(tmp_path, '--resume', str(elsewhere), '--name', 'w_resumed') == 0
    a = load_checkpoint(tmp_path / 'save' / 'w_full' / 'epoch-last.pth')
    b = load_checkpoint(tmp_path / 'save' / 'w_resumed' / 'epoch-last.pth')
    _same_state(a['model']['sd'], b['model']['sd'])
    assert metrics(tmp_path / 'save' / 'w_resumed')[-1]['train_loss'] == metrics(tmp_path / 'save' / 'w_full')[-1]['train_loss']


def test_resume_released_format_sets_lr_in_closed_form(tmp_path, tiny):
    assert train(tmp_path, '--config', tiny, '--name', 'r', '-o', 'epoch_max=1') == 0
    ckpt = load_checkpoint(tmp_path / 'save' / 'r' / 'epoch-last.pth')
    released = {'model': ckpt['model'], 'optimizer': ckpt['optimizer'], 'epoch': 1}
    torch.save(released, tmp_path / 'released.pth')
    assert train(tmp_path, '--config', tiny, '--name', 'r2', '--resume', str(tmp_path / 'released.pth'),
                 '-o', 'epoch_max=2') == 0
    rec = metrics(tmp_path / 'save' / 'r2')
    assert [r['epoch'] for r in rec] == [2] and rec[0]['lr'] == pytest.approx(5e-4)


def test_nonfinite_loss_names_epoch_and_step(tmp_path, tiny):
    with pytest.raises(UserError, match=r'loss became .* at epoch 1, step 1 '):
        train(tmp_path, '--config', tiny, '-o', 'data_norm.gt.div=[1.e-45]')
    assert not os.path.exists(tmp_path / 'save' / 'tiny' / 'epoch-last.pth')


@pytest.mark.parametrize('override, message', [
    ('model.name=liff', "unknown model 'liff'"),
    ('train_dataset.dataset.name=image-folders', "unknown dataset 'image-folders'"),
    ('train_dataset.wraper.name=x', "unknown config key 'train_dataset.wraper'"),
    ('epoch_maxx=3', "unknown config key 'epoch_maxx'"),
    ('train_dataset.wrapper.args.inp_sz=4', "bad arguments for dataset 'sr-implicit-downsampled'"),
    ('model.args.encoder_spec.args.n_feat=4', "bad arguments for model 'edsr-baseline'"),
    ('optimizer.name=adamw', "unknown optimizer 'adamw'"),
    ('optimizer.args.lrr=1', "bad arguments for optimizer 'adam'"),
    ('epoch_max=0', 'epoch_max must be an integer >= 1'),
    ('amp=fp8', 'amp must be one of'),
    ('device=gpu', 'device must be one of'),
    ('epoch_max.x=1', "bad override 'epoch_max.x=1': epoch_max is 2"),
    ('epoch_max', "bad override 'epoch_max'"),
    ('seed=[1', 'not valid YAML'),
])
def test_bad_config_is_one_line_before_any_work(tmp_path, tiny, override, message):
    with pytest.raises(UserError, match=message.replace('[', r'\[')) as e:
        train(tmp_path, '--config', tiny, '-o', override)
    assert '\n' not in str(e.value)
    assert not os.path.exists(tmp_path / 'save')


def test_missing_key_and_gpu_without_cuda(tmp_path, tiny):
    cfg = yaml.safe_load(open(tiny))
    del cfg['model']
    bad = tmp_path / 'bad.yaml'
    bad.write_text(yaml.safe_dump(cfg))
    with pytest.raises(UserError, match="missing the key 'model'"):
        train(tmp_path, '--config', str(bad))
    if not torch.cuda.is_available():
        env = dict(os.environ)
        try:
            with pytest.raises(UserError, match='CUDA is not available'):
                train(tmp_path, '--config', tiny, '--gpu', '0')
        finally:
            os.environ.clear()
            os.environ.update(env)


def test_cli_error_exit_code_and_single_line(tmp_path, tiny):
    p = subprocess.run([sys.executable, os.path.join(ROOT, 'train_liif.py'), '--config', tiny,
                        '-o', 'model.name=nope', '--save-root', str(tmp_path / 'save')],
                       capture_output=True, text=True, env=_env(), timeout=120)
    assert p.returncode == 2
    assert p.stderr.count('\n') == 1 and p.stderr.startswith('error: ') and "unknown model 'nope'" in p.stderr


@pytest.mark.parametrize('sig, workers, group', [(signal.SIGTERM, 0, False), (signal.SIGINT, 2, True)])
def test_signal_finishes_the_step_saves_and_resumes(tmp_path, tiny, sig, workers, group):
    """SIGTERM to the trainer, or Ctrl-C as a terminal sends it: to the whole group, loader workers too."""
    run = tmp_path / 'save' / 'sig'
    cmd = [sys.executable, os.path.join(ROOT, 'train_liif.py'), '--config', tiny, '--name', 'sig',
           '--save-root', str(tmp_path / 'save'), '-o', 'epoch_max=100000', '-o', 'epoch_val=1000',
           '-o', f'num_workers={workers}', '-o', 'train_dataset.dataset.args.repeat=25']
    p = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not (run / 'metrics.jsonl').exists() and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.1)
        if group:
            os.killpg(p.pid, sig)
        else:
            p.send_signal(sig)
        _, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 128 + sig, err
    assert f'stopped ({signal.Signals(sig).name})' in err and 'Traceback' not in err
    ckpt = load_checkpoint(run / 'epoch-last.pth')
    done = ckpt['epoch'] * 50 + ckpt['train_state']['step']
    assert done >= 50 and ckpt['train_state']['global_step'] == done
    assert train(tmp_path, '--resume', str(run / 'epoch-last.pth'), '-o', f"epoch_max={ckpt['epoch'] + 1}") == 0
    assert load_checkpoint(run / 'epoch-last.pth')['epoch'] == ckpt['epoch'] + 1


def test_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, tiny, monkeypatch):
    assert train(tmp_path, '--config', tiny, '--name', 'crash', '-o', 'epoch_max=1') == 0
    last = tmp_path / 'save' / 'crash' / 'epoch-last.pth'

    def half_write_then_die(obj, f, *args, **kwargs):
        f.write(b'PK\x03\x04 partial')
        raise OSError('disk full')
    monkeypatch.setattr(torch, 'save', half_write_then_die)
    with pytest.raises(OSError, match='disk full'):
        train(tmp_path, '--resume', str(last), '-o', 'epoch_max=2')
    assert load_checkpoint(last)['epoch'] == 1
    assert [n for n in os.listdir(last.parent) if n.endswith('.tmp')] == []


def test_gpu_ids_and_torchrun_command():
    from training.launch import parse_gpu_ids, torchrun_command
    assert parse_gpu_ids('0, 2') == ['0', '2']
    with pytest.raises(UserError, match='--gpu'):
        parse_gpu_ids('0,a')
    cmd = torchrun_command(2, 'train_liif.py', ['--config', 'c.yaml', '--gpu', '0,1'])
    assert cmd[1:5] == ['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2']
    assert cmd[5:] == ['train_liif.py', '--config', 'c.yaml', '--gpu', '0,1']


def test_two_process_ddp_on_cpu(tmp_path, tiny):
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
           os.path.join(ROOT, 'train_liif.py'), '--config', tiny, '--name', 'ddp',
           '--save-root', str(tmp_path / 'save'), '-o', 'epoch_max=2']
    p = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert 'replicas identical on 2 ranks' in p.stderr
    run = tmp_path / 'save' / 'ddp'
    rec = metrics(run)
    assert [r['epoch'] for r in rec] == [1, 2]
    assert load_checkpoint(run / 'epoch-last.pth')['train_state']['world_size'] == 2
    assert len(load_checkpoint(run / 'epoch-last.pth')['train_state']['rng']) == 2


def test_short_training_lowers_validation_loss(tmp_path, tiny):
    assert train(tmp_path, '--config', tiny, '--name', 'learn', '-o', 'epoch_max=5', '-o', 'multi_step_lr=null',
                 '-o', 'train_dataset.dataset.args.repeat=3', '-o', 'optimizer.args.lr=3.e-3') == 0
    rec = metrics(tmp_path / 'save' / 'learn')
    assert rec[-1]['val_loss'] < 0.7 * rec[0]['val_loss'], [r['val_loss'] for r in rec]
