"""scripts/export_model.py: a release checkpoint keeps the model, its data_norm and plain metadata."""
import torch

from scripts.export_model import release_checkpoint
from tests.helpers import PER_CHANNEL_NORM, TINY_LIIF
import models
from utils.checkpoint import model_spec


def _training_ckpt(**extra):
    spec = model_spec(models.make(TINY_LIIF), TINY_LIIF['name'], TINY_LIIF['args'])
    return {'model': spec, 'optimizer': {'name': 'adam', 'args': {}, 'sd': {}}, 'epoch': 3, **extra}


def test_data_norm_is_kept_at_the_top_level():
    other = {'inp': {'sub': [0], 'div': [1]}, 'gt': {'sub': [0], 'div': [1]}}
    ckpt = _training_ckpt(data_norm=PER_CHANNEL_NORM,
                          train_state={'global_step': 9, 'config': {'data_norm': other, 'resume': '/x.pth'}})
    out = release_checkpoint(ckpt)
    assert set(out) == {'model', 'meta', 'data_norm'} and out['data_norm'] == PER_CHANNEL_NORM
    assert out['meta']['train_config'] == {'data_norm': other} and out['meta']['global_step'] == 9
    assert all(torch.equal(out['model']['sd'][k], v) for k, v in ckpt['model']['sd'].items())
    # an older training checkpoint: the stored training config's norm
    older = release_checkpoint(_training_ckpt(train_state={'config': {'data_norm': PER_CHANNEL_NORM}}))
    assert older['data_norm'] == PER_CHANNEL_NORM
    # the authors' released format stores none: nothing is invented
    assert 'data_norm' not in release_checkpoint(_training_ckpt())
