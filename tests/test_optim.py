"""training/optim.py: the warm-up + cosine schedule of SRNO, by hand."""
import pytest
import torch

from training.optim import make_scheduler


def _lrs(epochs, spec, epoch_max):
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=4e-5)
    sched = make_scheduler(opt, None, spec, epoch_max)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]['lr'])
        opt.step()
        sched.step()
    return out, sched


def test_warmup_cosine_is_srnos_schedule():
    """4e-5 for epoch 1, a line to 4e-4 reached after 50 epochs, then half a cosine to 0 at epoch_max 1050."""
    lrs, _ = _lrs(1051, {'multiplier': 10, 'warmup_epochs': 50}, 1050)
    assert lrs[0] == pytest.approx(4e-5, rel=1e-12)
    assert lrs[25] == pytest.approx(4e-5 * 5.5, rel=1e-12)  # halfway up: 1 + 9 * 25 / 50
    assert lrs[50] == pytest.approx(4e-4, rel=1e-12)
    assert lrs[550] == pytest.approx(2e-4, rel=1e-12)  # halfway down the cosine
    assert lrs[800] == pytest.approx(4e-4 * (1 - 2 ** -0.5) / 2, rel=1e-12)  # cos(3 pi / 4)
    assert lrs[1050] == pytest.approx(0, abs=1e-20)
    assert all(a < b for a, b in zip(lrs[:50], lrs[1:51])) and all(a > b for a, b in zip(lrs[50:1050], lrs[51:]))


def test_set_epoch_is_the_stepped_schedule():
    """Resume puts the schedule at the completed epochs in closed form: the same lr as stepping there."""
    spec = {'multiplier': 3, 'warmup_epochs': 4}
    lrs, _ = _lrs(12, spec, 12)
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=4e-5)
    sched = make_scheduler(opt, None, spec, 12)
    for epoch in (0, 3, 4, 7, 11):
        sched.set_epoch(epoch)
        assert opt.param_groups[0]['lr'] == pytest.approx(lrs[epoch], rel=1e-12)
