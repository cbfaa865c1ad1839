"""Every config of the authors' repository at the authors' path, with the authors' model, data and schedule values."""
import copy
import glob
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import models
from evaluation.protocol import make_test_loader, parse_eval_type
from tests.conftest import ROOT
from tests.helpers import validate_shipped
from utils.config import load_config

NORM = {'inp': {'sub': [0.5], 'div': [0.5]}, 'gt': {'sub': [0.5], 'div': [0.5]}}
MLP = {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': [256, 256, 256, 256]}}


def _liif(encoder, **args):
    return {'name': 'liif', 'args': {'encoder_spec': {'name': encoder, 'args': {'no_upsampling': True}},
                                     'imnet_spec': MLP, **args}}


def _upsample(encoder, scale):
    return {'name': 'liif', 'args': {'encoder_spec': {'name': encoder, 'args': {'scale': scale}}}}


def _div2k(model, train_scales=(1, 4), val_scales=(1, 4)):
    """The paper's DIV2K recipe (LIIF.md): scales as (scale_min, scale_max) of the train and val wrappers."""
    def wrapper(scales, augment):
        args = {'inp_size': 48, 'scale_min': scales[0], 'scale_max': scales[1], 'sample_q': 2304}
        return {'name': 'sr-implicit-downsampled', 'args': {**args, 'augment': True} if augment else args}
    return {
        'train': {'dataset': {'name': 'image-folder', 'args': {'root_path': './load/div2k/DIV2K_train_HR',
                                                               'repeat': 20}},
                  'wrapper': wrapper(train_scales, True), 'batch_size': 16},
        'val': {'dataset': {'name': 'image-folder', 'args': {'root_path': './load/div2k/DIV2K_valid_HR',
                                                             'first_k': 10, 'repeat': 160}},
                'wrapper': wrapper(val_scales, False), 'batch_size': 16},
        'model': model, 'data_norm': NORM, 'optimizer': {'name': 'adam', 'args': {'lr': 1e-4}},
        'epoch_max': 1000, 'multi_step_lr': {'milestones': [200, 400, 600, 800], 'gamma': 0.5},
        'epoch_val': 1, 'epoch_save': 100}


def _celebahq(lr, hr, model, hr_min):
    """CelebA-HQ: size-varied (hr_min..hr) ground truths for LIIF, fixed hr ones for the upsample baseline."""
    def folders(split, **extra):
        return {'name': 'paired-image-folders', 'args': {
            'root_path_1': f'./load/celebAHQ/{lr}', 'root_path_2': f'./load/celebAHQ/{hr}',
            'split_file': './load/celebAHQ/split.json', 'split_key': split, **extra}}
    return {
        'train': {'dataset': folders('train'), 'batch_size': 16, 'wrapper': {
            'name': 'sr-implicit-uniform-varied',
            'args': {'size_min': hr_min, 'size_max': hr, 'sample_q': 1024, 'augment': True}}},
        'val': {'dataset': folders('val', first_k=100), 'batch_size': 16,
                'wrapper': {'name': 'sr-implicit-paired', 'args': {'sample_q': 1024}}},
        'model': model, 'data_norm': NORM, 'optimizer': {'name': 'adam', 'args': {'lr': 1e-4}},
        'epoch_max': 200, 'multi_step_lr': {'milestones': [100], 'gamma': 0.1}, 'epoch_val': 1, 'epoch_save': 100}


def _lte(encoder, batch_size=16, lr=1e-4, milestones=(200, 400, 600, 800)):
    """LTE's recipe as LTE.md gives it (LIIF's wrapper; batch, Adam lr, milestones halving); dataset
    repeats, validation, epoch_val / epoch_save as LIIF's (LTE.md does not give them)."""
    cfg = _div2k({'name': 'lte', 'args': {
        'encoder_spec': {'name': encoder, 'args': {'no_upsampling': True}},
        'imnet_spec': {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': [256, 256, 256]}}, 'hidden_dim': 256}})
    cfg['train']['batch_size'] = batch_size
    cfg.update(optimizer={'name': 'adam', 'args': {'lr': lr}},
               multi_step_lr={'milestones': list(milestones), 'gamma': 0.5})
    return cfg


def _lte_fast():
    """LTE+: LTE's schedule with the grid-layout wrapper (LIIF's crops, a 48 x 48 grid of HR pixels)."""
    cfg = _div2k({'name': 'lte-fast', 'args': {
        'encoder_spec': {'name': 'edsr-baseline', 'args': {'no_upsampling': True}},
        'num_layer': 3, 'hidden_dim': 256, 'out_dim': 3}})
    grid = {'inp_size': 48, 'scale_min': 1, 'scale_max': 4}
    cfg['train']['wrapper'] = {'name': 'sr-implicit-downsampled-fast', 'args': {**grid, 'augment': True}}
    cfg['val']['wrapper'] = {'name': 'sr-implicit-downsampled-fast', 'args': grid}
    return cfg


def _with_mlp(hidden):
    model = _liif('edsr-baseline')
    model['args']['imnet_spec'] = {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': hidden}}
    return model


# the authors' training configs, by their path under configs/
AUTHORS_TRAIN = {
    'train-div2k/train_edsr-baseline-liif.yaml': _div2k(_liif('edsr-baseline')),
    'train-div2k/train_rdn-liif.yaml': _div2k(_liif('rdn')),
    'train-div2k/train_edsr-baseline-metasr.yaml': _div2k(
        {'name': 'metasr', 'args': {'encoder_spec': {'name': 'edsr-baseline', 'args': {'no_upsampling': True}}}}),
    'train-div2k/train_rdn-metasr.yaml': _div2k(
        {'name': 'metasr', 'args': {'encoder_spec': {'name': 'rdn', 'args': {'no_upsampling': True}}}}),
    'train-div2k/train_edsr-baseline-x2.yaml': _div2k(_upsample('edsr-baseline', 2), (2, 2), (2, 2)),
    'train-div2k/train_rdn-x2.yaml': _div2k(_upsample('rdn', 2), (2, 2), (2, 2)),
    'train-div2k/ablation/train_edsr-baseline-liif-c.yaml': _div2k(_liif('edsr-baseline', cell_decode=False)),
    'train-div2k/ablation/train_edsr-baseline-liif-u.yaml': _div2k(_liif('edsr-baseline', feat_unfold=False)),
    'train-div2k/ablation/train_edsr-baseline-liif-e.yaml': _div2k(_liif('edsr-baseline', local_ensemble=False)),
    'train-div2k/ablation/train_edsr-baseline-liif-d.yaml': _div2k(_with_mlp([256, 256])),
    **{f'train-div2k/ablation/train_edsr-baseline-liif-x{s}.yaml': _div2k(_liif('edsr-baseline'), (s, s), (s, s))
       for s in (2, 3, 4)},
    'train-celebAHQ/train_celebAHQ-32-256_liif.yaml': _celebahq(32, 256, _liif('edsr-baseline'), 32),
    'train-celebAHQ/train_celebAHQ-64-128_liif.yaml': _celebahq(64, 128, _liif('edsr-baseline'), 64),
    'train-celebAHQ/train_celebAHQ-32-256_upsample.yaml': _celebahq(32, 256, _upsample('edsr-baseline', 8), 256),
    'train-celebAHQ/train_celebAHQ-64-128_upsample.yaml': _celebahq(64, 128, _upsample('edsr-baseline', 2), 128),
    'train-div2k/train_edsr-baseline-lte.yaml': _lte('edsr-baseline'),
    'train-div2k/train_rdn-lte.yaml': _lte('rdn'),
    'train-div2k/train_swinir-lte.yaml': _lte('swinir', batch_size=32, lr=2e-4, milestones=(500, 800, 900, 950)),
    'train-div2k/train_edsr-baseline-lte-fast.yaml': _lte_fast(),
}


def _effective_wrapper(wrapper):
    """The wrapper with the defaults that decide the scale filled in (scale_max / size_max = the minimum)."""
    w = copy.deepcopy(wrapper)
    args = w.setdefault('args', {})
    if w['name'] in ('sr-implicit-downsampled', 'sr-implicit-downsampled-fast'):
        args.setdefault('scale_min', 1)
        args.setdefault('scale_max', args['scale_min'])
    if w['name'] == 'sr-implicit-uniform-varied':
        args.setdefault('size_max', args['size_min'])
    return w


def _section(section):
    """dataset (its cache mode left out: a storage choice, not a value of the method), wrapper, batch size."""
    ds = copy.deepcopy(section['dataset'])
    ds['args'].pop('cache', None)
    return {'dataset': ds, 'wrapper': _effective_wrapper(section['wrapper']), 'batch_size': section['batch_size']}


def _summary(cfg):
    return {'train': _section(cfg['train_dataset']), 'val': _section(cfg['val_dataset']), 'model': cfg['model'],
            'data_norm': cfg['data_norm'], 'optimizer': cfg['optimizer'], 'epoch_max': cfg['epoch_max'],
            'multi_step_lr': cfg['multi_step_lr'], 'epoch_val': cfg['epoch_val'], 'epoch_save': cfg['epoch_save']}


def test_every_authors_config_is_at_their_path_and_nothing_else_is_beside_them():
    shipped = {os.path.relpath(p, os.path.join(ROOT, 'configs'))
               for d in ('train-div2k', 'train-celebAHQ')
               for p in glob.glob(os.path.join(ROOT, 'configs', d, '**', '*.yaml'), recursive=True)}
    assert shipped == set(AUTHORS_TRAIN)
    assert not glob.glob(os.path.join(ROOT, 'configs', 'train-div2k', 'train_edsr-baseline-liif-?.yaml'))


@pytest.mark.parametrize('name', sorted(AUTHORS_TRAIN))
def test_training_config_has_the_authors_values_and_validates(name):
    cfg = load_config(os.path.join(ROOT, 'configs', name))
    assert _summary(cfg) == AUTHORS_TRAIN[name]
    validate_shipped(cfg)


UPSAMPLE = sorted(n for n, v in AUTHORS_TRAIN.items() if v['model']['name'] == 'liif'
                  and 'imnet_spec' not in v['model']['args'])


@pytest.mark.parametrize('name', UPSAMPLE)
def test_upsample_baseline_encoder_makes_the_ground_truth_size(name):
    """The shipped model's tail must output exactly the ground truth its training wrapper hands out."""
    assert len(UPSAMPLE) == 4
    cfg = load_config(os.path.join(ROOT, 'configs', name))
    wrapper = _effective_wrapper(cfg['train_dataset']['wrapper'])['args']
    if 'celebAHQ' in name:
        lr = int(cfg['train_dataset']['dataset']['args']['root_path_1'].rsplit('/', 1)[1])
        gt = wrapper['size_min']
        assert wrapper['size_max'] == gt
    else:
        lr = wrapper['inp_size']
        assert wrapper['scale_min'] == wrapper['scale_max']
        gt = lr * wrapper['scale_min']
    with torch.device('meta'):  # shapes only: the full RDN would take seconds on a small CPU
        encoder = models.make(cfg['model']).encoder
        assert encoder(torch.zeros(1, 3, lr, lr)).shape == (1, 3, gt, gt)


AUTHORS_TEST = {f'test/test-celebAHQ-{lr}-{hr}.yaml': {
    'test_dataset': {'dataset': {'name': 'paired-image-folders', 'args': {
        'root_path_1': f'./load/celebAHQ/{lr}', 'root_path_2': f'./load/celebAHQ/{hr}',
        'split_file': './load/celebAHQ/split.json', 'split_key': 'val', 'cache': 'bin'}},
        'wrapper': {'name': 'sr-implicit-paired', 'args': {}}, 'batch_size': 1},
    'data_norm': NORM, 'eval_bsize': 30000} for lr, hr in ((32, 256), (64, 128))}


@pytest.mark.parametrize('name', sorted(AUTHORS_TEST))
def test_celebahq_test_config_reads_the_val_split_whole(name, tmp_path):
    """The authors' values (no eval_type: RGB PSNR, no shave), and it loads the whole val faces as pairs."""
    cfg = load_config(os.path.join(ROOT, 'configs', name))
    assert cfg == AUTHORS_TEST[name]
    protocol = parse_eval_type(cfg.get('eval_type'))
    assert protocol.shave == 0 and not protocol.y_channel
    lr, hr = (int(s) for s in name[len('test/test-celebAHQ-'):-len('.yaml')].split('-'))
    rng = np.random.default_rng(0)
    for size in (lr, hr):
        os.makedirs(tmp_path / 'celebAHQ' / str(size))
        for face in ('a.png', 'b.png', 'c.png'):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
                tmp_path / 'celebAHQ' / str(size) / face)
    (tmp_path / 'celebAHQ' / 'split.json').write_text(json.dumps({'train': ['a.png', 'b.png'], 'val': ['c.png']}))
    loader = make_test_loader(cfg['test_dataset'], protocol, str(tmp_path / 'lr'), [('./load', str(tmp_path))])
    batches = list(loader)
    assert len(batches) == 1
    assert batches[0]['inp'].shape == (1, 3, lr, lr) and batches[0]['gt'].shape == (1, hr * hr, 3)
