"""training/state.py: what a checkpoint restores, and what the config in force changes on resume."""
import io
import random

import numpy as np
import pytest
import torch
from torch.optim.lr_scheduler import MultiStepLR

from training import state
from training.dist import DistInfo
from utils.errors import UserError

ONE = DistInfo(rank=0, world_size=1, local_rank=0, local_world_size=1, device=torch.device('cpu'))


def _cfg(lr=1e-3, **args):
    return {'model': {'name': 'linear', 'args': {}}, 'optimizer': {'name': 'adam', 'args': {'lr': lr, **args}},
            'data_norm': {'inp': {'sub': [0.5], 'div': [0.5]}, 'gt': {'sub': [0.5], 'div': [0.5]}}}


def _objects(cfg, milestones=None, gamma=0.5, scaler=None):
    """A small model, its Adam from cfg, MultiStepLR(milestones) or None, and a (disabled) GradScaler."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.Adam(model.parameters(), **cfg['optimizer']['args'])
    sched = MultiStepLR(opt, milestones, gamma) if milestones is not None else None
    return model, opt, sched, scaler or torch.amp.GradScaler('cpu', enabled=False)


def _train_epochs(model, opt, sched, scaler, epochs, steps=2):
    x = torch.arange(12, dtype=torch.float32).view(3, 4) / 10
    for _ in range(epochs):
        for _ in range(steps):
            opt.zero_grad()
            scaler.scale(model(x).square().mean()).backward()
            scaler.step(opt)
            scaler.update()
        if sched is not None:
            sched.step()


def _saved(ckpt):
    """The checkpoint as written and read back (weights_only): no tensor shared with the live objects."""
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _checkpoint(cfg, milestones, epochs, scaler=None):
    model, opt, sched, scaler = _objects(cfg, milestones, scaler=scaler)
    _train_epochs(model, opt, sched, scaler, epochs)
    progress = state.Progress(epoch=epochs + 1, global_step=2 * epochs)
    return _saved(state.checkpoint(model, opt, sched, scaler, progress, cfg, 'run', ONE)), opt


def _restore(ckpt, cfg, milestones=None, scaler=None, info=ONE):
    model, opt, sched, scaler = _objects(cfg, milestones, scaler=scaler)
    restored = state.restore(ckpt, model, opt, sched, scaler, cfg, info, 'ck.pth')
    return restored, model, opt, sched, scaler


def test_unchanged_config_restores_the_optimizer_as_saved():
    ckpt, opt = _checkpoint(_cfg(), [1, 3], 2)
    restored, _, opt2, sched2, _ = _restore(ckpt, _cfg(), [1, 3])
    assert restored.optimizer_changes == [] and restored.progress.epoch == 3
    assert opt2.state_dict()['param_groups'] == opt.state_dict()['param_groups']
    assert opt2.param_groups[0]['lr'] == 5e-4 and sched2.last_epoch == 2 and sched2.base_lrs == [1e-3]
    for i, s in opt.state_dict()['state'].items():
        assert torch.equal(opt2.state_dict()['state'][i]['exp_avg'], s['exp_avg'])


def test_a_changed_lr_becomes_the_base_of_the_restored_schedule():
    ckpt, _ = _checkpoint(_cfg(), [1, 3], 2)  # two epochs done, one decay: lr 5e-4
    restored, model, opt, sched, scaler = _restore(ckpt, _cfg(lr=4e-3), [1, 3])
    assert restored.optimizer_changes == ['lr 0.001 -> 0.004']
    assert opt.param_groups[0]['lr'] == 2e-3 and opt.param_groups[0]['initial_lr'] == 4e-3
    assert sched.base_lrs == [4e-3] and sched.get_last_lr() == [2e-3]
    _train_epochs(model, opt, sched, scaler, 1)  # epoch 3 done: the second decay applies to the new base
    assert opt.param_groups[0]['lr'] == 1e-3


def test_other_changed_optimizer_args_are_honoured():
    ckpt, _ = _checkpoint(_cfg(), [1], 1)
    restored, _, opt, _, _ = _restore(ckpt, _cfg(weight_decay=0.1, betas=(0.8, 0.99)), [1])
    assert restored.optimizer_changes == ['betas (0.9, 0.999) -> (0.8, 0.99)', 'weight_decay 0 -> 0.1']
    g = opt.param_groups[0]
    assert (g['weight_decay'], tuple(g['betas']), g['lr']) == (0.1, (0.8, 0.99), 5e-4)


def test_betas_as_a_list_are_no_change():
    ckpt, _ = _checkpoint(_cfg(betas=(0.9, 0.999)), None, 1)
    restored, _, opt, _, _ = _restore(ckpt, _cfg(betas=[0.9, 0.999]))
    assert restored.optimizer_changes == [] and list(opt.param_groups[0]['betas']) == [0.9, 0.999]


def test_amsgrad_cannot_change_on_resume():
    ckpt, _ = _checkpoint(_cfg(), None, 1)
    with pytest.raises(UserError, match=r'optimizer.args.amsgrad cannot change on resume \(False in'):
        _restore(ckpt, _cfg(amsgrad=True))


def test_a_schedule_added_on_resume_starts_at_the_completed_epoch():
    ckpt, _ = _checkpoint(_cfg(), None, 3)  # no schedule, three epochs done
    restored, model, opt, sched, scaler = _restore(ckpt, _cfg(), [2, 5])
    assert restored.progress.epoch == 4 and sched.last_epoch == 3 and restored.optimizer_changes == []
    assert opt.param_groups[0]['lr'] == 5e-4  # the decay at 2 is behind
    _train_epochs(model, opt, sched, scaler, 2)  # epoch 5 done
    assert opt.param_groups[0]['lr'] == 2.5e-4


@pytest.mark.parametrize('written, now', [(2, 1), (1, 2)])
def test_another_world_size_is_refused(written, now):
    ckpt, _ = _checkpoint(_cfg(), None, 1)
    ckpt['train_state']['world_size'] = written
    ckpt['train_state']['rng'] = ckpt['train_state']['rng'] * written
    info = DistInfo(rank=now - 1, world_size=now, local_rank=now - 1, local_world_size=now,
                    device=torch.device('cpu'))
    with pytest.raises(UserError, match=rf'written by a run of {written} process\(es\), this run has {now}: '
                                        rf'resume it with {written} \(torchrun --nproc_per_node={written}') as e:
        _restore(ckpt, _cfg(), info=info)
    assert '\n' not in str(e.value)


def test_released_checkpoints_resume_at_any_world_size():
    ckpt, _ = _checkpoint(_cfg(), [1], 1)
    released = {k: ckpt[k] for k in ('model', 'optimizer', 'epoch')}
    two = DistInfo(rank=1, world_size=2, local_rank=1, local_world_size=2, device=torch.device('cpu'))
    restored, _, opt, _, _ = _restore(released, _cfg(), [1], info=two)
    assert restored.progress.epoch == 2 and opt.param_groups[0]['lr'] == 5e-4


def test_rng_states_are_restored():
    ckpt, _ = _checkpoint(_cfg(), None, 1)
    after = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    _restore(ckpt, _cfg())
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == after


def test_grad_scaler_state_is_saved_and_restored():
    scaler = torch.amp.GradScaler('cpu', init_scale=2.0 ** 8, growth_interval=3)
    model, opt, _, _ = _objects(_cfg())
    _train_epochs(model, opt, None, scaler, 2)  # 4 good steps: the scale grew once
    opt.zero_grad()
    scaler.scale(model.weight.sum() * float('inf')).backward()  # an overflow: step skipped, scale backs off
    scaler.step(opt)
    scaler.update()
    expected = scaler.state_dict()
    assert (expected['scale'], expected['_growth_tracker']) == (2.0 ** 8, 0)
    ckpt = _saved(state.checkpoint(model, opt, None, scaler, state.Progress(epoch=3), _cfg(), 'run', ONE))
    assert ckpt['train_state']['scaler'] == expected
    fresh = torch.amp.GradScaler('cpu', growth_interval=3)
    _, model2, opt2, _, scaler2 = _restore(ckpt, _cfg(), scaler=fresh)
    assert scaler2.state_dict() == expected
    # the next steps go the same way from the restored objects
    _train_epochs(model, opt, None, scaler, 2)
    _train_epochs(model2, opt2, None, scaler2, 2)
    assert torch.equal(model.weight, model2.weight) and scaler.state_dict() == scaler2.state_dict()
    assert scaler.get_scale() == 2.0 ** 9


def test_a_disabled_scaler_saves_nothing():
    ckpt, _ = _checkpoint(_cfg(), None, 1)
    assert ckpt['train_state']['scaler'] is None
