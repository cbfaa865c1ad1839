"""train_liif.py end to end on a tiny config: outputs, exact resume, safe stops, DDP, bad configs."""
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

import datasets
import train_liif
from tests.conftest import ROOT, shared_path
from tests.helpers import PER_CHANNEL_NORM
from inference.loading import load_model
from training.data import VAL_STREAM
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


# the parts of a metrics / history record that do not depend on timing
DETERMINISTIC = ('epoch', 'train_loss', 'lr', 'val_psnr', 'val_loss')


def _records(recs):
    return [{k: r[k] for k in DETERMINISTIC if k in r} for r in recs]


def _same_runs(dir_a, dir_b):
    """Same per-epoch numbers, weights and Adam moments in two run folders' metrics and last checkpoints."""
    assert _records(metrics(dir_a)) == _records(metrics(dir_b))
    ca, cb = load_checkpoint(dir_a / 'epoch-last.pth'), load_checkpoint(dir_b / 'epoch-last.pth')
    _same_state(ca['model']['sd'], cb['model']['sd'])
    assert _records(ca['train_state']['history']) == _records(cb['train_state']['history'])
    sa, sb = ca['optimizer']['sd']['state'], cb['optimizer']['sd']['state']
    assert sa.keys() == sb.keys()
    for i in sa:
        _same_state(sa[i], sb[i])


def _expected_validation(ckpt_path, cfg):
    """Mean per-sample PSNR and L1 of a checkpoint over the validation set, computed here from scratch."""
    model = load_model(ckpt_path)
    spec = cfg['val_dataset']
    ds = datasets.make(spec['wrapper'], args={'dataset': datasets.make(spec['dataset'])})
    ds.reseed(cfg['seed'], 0, VAL_STREAM)
    psnrs, l1s = [], []
    with torch.no_grad():
        for i in range(len(ds)):
            s = ds[i]
            pred = model(((s['inp'] - 0.5) / 0.5)[None], s['coord'][None], s['cell'][None])[0]
            l1s.append((pred - (s['gt'] - 0.5) / 0.5).abs().mean().item())
            mse = ((pred * 0.5 + 0.5).clamp(0, 1) - s['gt']).pow(2).mean().item()
            psnrs.append(-10 * math.log10(mse))
    return sum(psnrs) / len(psnrs), sum(l1s) / len(l1s)


def test_run_folder_outputs(tmp_path, tiny):
    # validation batches of one: the logged mean is the mean of per-image PSNRs
    assert train(tmp_path, '--config', tiny, '--tag', 't', '-o', 'epoch_max=2', '-o', 'val_dataset.batch_size=1') == 0
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
    assert [r['epoch'] for r in rec] == [1, 2] and [r['lr'] for r in rec] == [1e-3, 5e-4]
    for r in rec:
        psnr, l1 = _expected_validation(run / f"epoch-{r['epoch']}.pth", cfg)
        assert (r['val_psnr'], r['val_loss']) == (pytest.approx(psnr, abs=1e-5), pytest.approx(l1, abs=1e-7))
    assert rec[1]['val_psnr'] != pytest.approx(rec[0]['val_psnr'], abs=1e-3)  # each epoch validates its own weights
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
    _same_runs(tmp_path / 'save' / 'full', cut)
    assert len(metrics(cut)) == 3


def test_resume_from_a_copied_checkpoint_with_other_workers(tmp_path, tiny):
    base = ['--config', tiny, '-o', 'epoch_max=2']
    assert train(tmp_path, *base, '--name', 'w_full', '-o', 'num_workers=0') == 0
    assert train(tmp_path, *base, '--name', 'w_cut', '-o', 'num_workers=2', '-o', 'step_limit=3') == 0
    cut = load_checkpoint(tmp_path / 'save' / 'w_cut' / 'epoch-last.pth')
    assert (cut['epoch'], cut['train_state']['step']) == (1, 1)  # mid-epoch 2
    elsewhere = tmp_path / 'moved.pth'
    os.replace(tmp_path / 'save' / 'w_cut' / 'epoch-last.pth', elsewhere)
    # no --config: the stored one is used (-o still applies); the run continues in a new folder
    assert train(tmp_path, '--resume', str(elsewhere), '--name', 'w_resumed', '-o', 'num_workers=1') == 0
    resumed = tmp_path / 'save' / 'w_resumed'
    assert load_checkpoint(resumed / 'epoch-last.pth')['train_state']['config']['num_workers'] == 1
    # epoch 1 is in the resumed run's history only
    full = load_checkpoint(tmp_path / 'save' / 'w_full' / 'epoch-last.pth')['train_state']['history']
    assert _records(load_checkpoint(resumed / 'epoch-last.pth')['train_state']['history']) == _records(full)
    assert _records(metrics(resumed)) == _records(full)[1:]
    _same_state(load_checkpoint(resumed / 'epoch-last.pth')['model']['sd'],
                load_checkpoint(tmp_path / 'save' / 'w_full' / 'epoch-last.pth')['model']['sd'])


def test_resume_released_format_sets_lr_in_closed_form(tmp_path, tiny):
    assert train(tmp_path, '--config', tiny, '--name', 'r', '-o', 'epoch_max=1') == 0
    ckpt = load_checkpoint(tmp_path / 'save' / 'r' / 'epoch-last.pth')
    released = {'model': ckpt['model'], 'optimizer': ckpt['optimizer'], 'epoch': 1}
    torch.save(released, tmp_path / 'released.pth')
    assert train(tmp_path, '--config', tiny, '--name', 'r2', '--resume', str(tmp_path / 'released.pth'),
                 '-o', 'epoch_max=2') == 0
    rec = metrics(tmp_path / 'save' / 'r2')
    assert [r['epoch'] for r in rec] == [2] and rec[0]['lr'] == pytest.approx(5e-4)


def test_resume_honours_a_new_lr_as_the_schedule_base(tmp_path, tiny):
    assert train(tmp_path, '--config', tiny, '--name', 'lr', '-o', 'epoch_max=1') == 0
    run = tmp_path / 'save' / 'lr'
    assert train(tmp_path, '--resume', str(run / 'epoch-last.pth'), '-o', 'epoch_max=2',
                 '-o', 'optimizer.args.lr=4.e-3', '-o', 'optimizer.args.weight_decay=1.e-4') == 0
    # milestone 1 is behind: epoch 2 trains at half the new base
    assert [r['lr'] for r in metrics(run)] == [1e-3, 2e-3]
    assert yaml.safe_load((run / 'config.yaml').read_text())['optimizer']['args'] == {'lr': 4e-3, 'weight_decay': 1e-4}
    ckpt = load_checkpoint(run / 'epoch-last.pth')
    group = ckpt['optimizer']['sd']['param_groups'][0]
    assert (group['lr'], group['initial_lr'], group['weight_decay']) == (2e-3, 4e-3, 1e-4)
    assert ckpt['optimizer']['args'] == {'lr': 4e-3, 'weight_decay': 1e-4}
    assert ckpt['train_state']['scheduler']['base_lrs'] == [4e-3]
    assert ("optimizer settings of the config in force replace the checkpoint's: lr 0.001 -> 0.004, "
            "weight_decay 0 -> 0.0001") in (run / 'log.txt').read_text()


def test_a_schedule_added_on_resume_counts_the_done_epochs(tmp_path, tiny):
    assert train(tmp_path, '--config', tiny, '--name', 's', '-o', 'epoch_max=2', '-o', 'multi_step_lr=null') == 0
    run = tmp_path / 'save' / 's'
    assert train(tmp_path, '--resume', str(run / 'epoch-last.pth'), '-o', 'epoch_max=3',
                 '-o', 'multi_step_lr={milestones: [1, 3], gamma: 0.5}') == 0
    assert [r['lr'] for r in metrics(run)] == [1e-3, 1e-3, 5e-4]
    assert load_checkpoint(run / 'epoch-last.pth')['optimizer']['sd']['param_groups'][0]['lr'] == 2.5e-4


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
    # one process cannot continue it: refused in one line before the run folder is touched
    before = {n: (run / n).read_bytes() for n in ('config.yaml', 'command.txt', 'log.txt', 'epoch-last.pth')}
    with pytest.raises(UserError, match=r'written by a run of 2 process\(es\), this run has 1: resume it with 2') as e:
        train(tmp_path, '--resume', str(run / 'epoch-last.pth'), '-o', 'epoch_max=3')
    assert '\n' not in str(e.value)
    assert {n: (run / n).read_bytes() for n in before} == before


def test_short_training_lowers_validation_loss(tmp_path, tiny):
    assert train(tmp_path, '--config', tiny, '--name', 'learn', '-o', 'epoch_max=5', '-o', 'multi_step_lr=null',
                 '-o', 'train_dataset.dataset.args.repeat=3', '-o', 'optimizer.args.lr=3.e-3') == 0
    rec = metrics(tmp_path / 'save' / 'learn')
    assert rec[-1]['val_loss'] < 0.7 * rec[0]['val_loss'], [r['val_loss'] for r in rec]


def test_bf16_autocast_trains_on_the_cpu(tmp_path, tiny):
    base = ['--config', tiny, '-o', 'epoch_max=2', '-o', 'epoch_val=2']
    assert train(tmp_path, *base, '--name', 'fp32') == 0
    assert train(tmp_path, *base, '--name', 'bf16', '-o', 'amp=bf16') == 0
    assert train(tmp_path, *base, '--name', 'bf16_cut', '-o', 'amp=bf16', '-o', 'step_limit=3') == 0
    cut = tmp_path / 'save' / 'bf16_cut'
    assert train(tmp_path, '--resume', str(cut / 'epoch-last.pth')) == 0
    fp32, bf16 = metrics(tmp_path / 'save' / 'fp32'), metrics(tmp_path / 'save' / 'bf16')
    # bf16 rounding shows in the losses (autocast is on) but stays small; resuming is still bit-exact
    for a, b in zip(fp32, bf16):
        assert a['train_loss'] != b['train_loss'] and b['train_loss'] == pytest.approx(a['train_loss'], rel=0.02)
    assert bf16[-1]['val_loss'] != fp32[-1]['val_loss']
    assert bf16[-1]['val_loss'] == pytest.approx(fp32[-1]['val_loss'], rel=0.02)
    _same_runs(tmp_path / 'save' / 'bf16', cut)


def test_fp16_on_the_cpu_is_refused_before_any_work(tmp_path, tiny):
    with pytest.raises(UserError, match='amp fp16 trains on CUDA only; on the CPU use amp: bf16') as e:
        train(tmp_path, '--config', tiny, '-o', 'amp=fp16')
    assert '\n' not in str(e.value)
    assert not os.path.exists(tmp_path / 'save')


def test_compile_trains_like_eager_and_saves_plain_weights(tmp_path, tiny, monkeypatch):
    """compile: true through the trainer; TorchDynamo's 'eager' backend, since inductor needs ~45 s on this CPU."""
    calls = []
    real_compile = torch.compile

    def eager_compile(model, **kwargs):
        calls.append(type(model).__name__)
        return real_compile(model, backend='eager', **kwargs)
    monkeypatch.setattr(torch, 'compile', eager_compile)
    base = ['--config', tiny, '-o', 'epoch_max=2', '-o', 'val_dataset=null']  # tracing eval mode too costs seconds
    assert train(tmp_path, *base, '--name', 'plain') == 0
    assert train(tmp_path, *base, '--name', 'compiled', '-o', 'compile=true', '-o', 'step_limit=3') == 0
    run = tmp_path / 'save' / 'compiled'
    assert train(tmp_path, '--resume', str(run / 'epoch-last.pth')) == 0
    assert calls == ['LIIF', 'LIIF']
    assert not any('_orig_mod' in k for k in load_checkpoint(run / 'epoch-last.pth')['model']['sd'])
    load_model(run / 'epoch-last.pth')
    _same_runs(tmp_path / 'save' / 'plain', run)


SRNO_SHORT = os.path.join(ROOT, 'configs', 'train-local', 'train_edsr-sronet-short.yaml')


def test_srno_trains_in_the_grid_layout(tmp_path):
    """The short SRNO config, shrunk: grid samples train and validate through train_liif.py; the logged
    validation is the per-sample PSNR / L1 of the saved weights on the (N, 3, H, W) outputs, and the lr
    follows the warm-up (x10 after one epoch)."""
    cfg = yaml.safe_load(open(SRNO_SHORT))
    for part in cfg['train_dataset']['dataset']['args']['datasets']:
        part['args'].update(root_path=shared_path('train', os.path.basename(part['args']['root_path'])), first_k=3)
    cfg['train_dataset']['wrapper']['args']['inp_size'] = 8
    cfg['val_dataset']['dataset']['args'].update(root_path=shared_path('benchmark', 'Set5', 'HR'), repeat=1)
    cfg['val_dataset']['wrapper']['args']['inp_size'] = 8
    cfg['val_dataset']['batch_size'] = 1
    cfg['model']['args'].update(width=16, blocks=4)
    cfg['model']['args']['encoder_spec']['args'].update(n_resblocks=1, n_feats=8)
    # per-channel values: a normalisation applied along the wrong axis of (N, 3, H, W) cannot pass
    cfg.update(epoch_max=2, epoch_save=1, device='cpu', num_workers=0, seed=0, data_norm=PER_CHANNEL_NORM)
    path = tmp_path / 'srno.yaml'
    path.write_text(yaml.safe_dump(cfg))
    assert train(tmp_path, '--config', str(path), '--name', 'srno') == 0
    run = tmp_path / 'save' / 'srno'
    rec = metrics(run)
    assert [r['lr'] for r in rec] == [pytest.approx(4e-5), pytest.approx(4e-4)]
    model = load_model(run / 'epoch-2.pth')
    assert model.query_layout == 'grid'
    spec = cfg['val_dataset']
    ds = datasets.make(spec['wrapper'], args={'dataset': datasets.make(spec['dataset'])})
    ds.reseed(cfg['seed'], 0, VAL_STREAM)
    isub, idiv, gsub, gdiv = (torch.tensor(PER_CHANNEL_NORM[p][k]).view(3, 1, 1) for p in ('inp', 'gt')
                              for k in ('sub', 'div'))
    psnrs, l1s = [], []
    with torch.no_grad():
        for i in range(len(ds)):
            s = ds[i]
            assert s['coord'].shape == (8, 8, 2) and s['gt'].shape == (3, 8, 8) and s['cell'].shape == (2,)
            pred = model(((s['inp'] - isub) / idiv)[None], s['coord'][None], s['cell'][None])[0]
            l1s.append((pred - (s['gt'] - gsub) / gdiv).abs().mean().item())
            psnrs.append(-10 * math.log10(((pred * gdiv + gsub).clamp(0, 1) - s['gt']).pow(2).mean().item()))
    assert rec[1]['val_psnr'] == pytest.approx(sum(psnrs) / len(psnrs), abs=1e-5)
    assert rec[1]['val_loss'] == pytest.approx(sum(l1s) / len(l1s), abs=1e-7)


def test_warmup_cosine_resumes_in_closed_form(tmp_path, tiny):
    """lr 1e-3, x10 after the one warm-up epoch, then half of it (cos(pi / 2)); the same after a stop and resume."""
    base = ['--config', tiny, '-o', 'epoch_max=3', '-o', 'multi_step_lr=null',
            '-o', 'warmup_cosine_lr={multiplier: 10, warmup_epochs: 1}']
    assert train(tmp_path, *base, '--name', 'full') == 0
    assert [r['lr'] for r in metrics(tmp_path / 'save' / 'full')] == pytest.approx([1e-3, 1e-2, 5e-3], rel=1e-12)
    assert train(tmp_path, *base, '--name', 'cut', '-o', 'epoch_max=2') == 0
    cut = tmp_path / 'save' / 'cut'
    assert train(tmp_path, *base, '--name', 'cut', '--resume', str(cut / 'epoch-last.pth')) == 0
    _same_runs(tmp_path / 'save' / 'full', cut)


SHORT_CONFIGS = sorted(p for p in os.listdir(os.path.join(ROOT, 'configs', 'train-local')) if p.endswith('-short.yaml'))


def _shrunk(cfg):
    """A train-local config cut to a couple of tiny steps: 2 training images, 1 validation image, 8 px crops."""
    def shrink_folder(spec):
        if spec['name'] == 'image-folder':
            spec['args'].update(first_k=2, repeat=1)
        for sub in spec.get('args', {}).get('datasets', []):
            shrink_folder(sub)
    for section in ('train_dataset', 'val_dataset'):
        shrink_folder(cfg[section]['dataset'])
        wargs = cfg[section]['wrapper']['args']
        wargs['inp_size'] = 8
        if 'sample_q' in wargs:
            wargs['sample_q'] = 64  # = inp_size^2, which LMF's training routine needs
        cfg[section]['batch_size'] = 2
    cfg['val_dataset']['dataset']['args']['first_k'] = 2
    cfg.update(device='cpu', epoch_max=1, num_workers=0, epoch_save=None)
    if cfg.get('warmup_cosine_lr'):
        cfg['epoch_max'] = cfg['warmup_cosine_lr']['warmup_epochs'] + 1
    return cfg


@pytest.mark.parametrize('name', SHORT_CONFIGS)
def test_every_short_local_config_trains(name, tmp_path):
    """Each configs/train-local/*-short.yaml (one per method) runs through train_liif.py, shrunk to 1 step."""
    assert {'train_edsr-baseline-liif-short.yaml', 'train_edsr-baseline-lte-short.yaml', 'train_rdn-lte-short.yaml',
            'train_swinir-lte-short.yaml', 'train_edsr-baseline-lte-fast-short.yaml', 'train_edsr-sronet-short.yaml',
            'train_edsr-baseline-lmliif-short.yaml', 'train_edsr-baseline-lmlte-short.yaml'} <= set(SHORT_CONFIGS)
    with open(os.path.join(ROOT, 'configs', 'train-local', name)) as f:
        cfg = yaml.safe_load(f)
    for section in ('train_dataset', 'val_dataset'):  # the configs read ../shared relative to the root
        text = json.dumps(cfg[section]).replace('../shared/data/', shared_path() + '/')
        cfg[section] = json.loads(text)
    path = tmp_path / 'short.yaml'
    cfg = _shrunk(cfg)
    path.write_text(yaml.safe_dump(cfg))
    torch.manual_seed(0)
    assert train_liif.main(['--config', str(path), '--save-root', str(tmp_path / 'save')]) == 0
    run = tmp_path / 'save' / 'short'
    records = [json.loads(line) for line in (run / 'metrics.jsonl').read_text().splitlines()]
    assert len(records) == cfg['epoch_max'] and all(math.isfinite(r['train_loss']) and math.isfinite(r['val_psnr'])
                                                    for r in records)
    ckpt = load_checkpoint(run / 'epoch-last.pth')
    assert ckpt['model']['name'] == cfg['model']['name']
    assert load_model(run / 'epoch-last.pth') is not None
