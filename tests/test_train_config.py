"""Config overrides, schema check, and the shipped training configs."""
import glob
import os

import pytest

from tests.conftest import ROOT, shared_path
from tests.helpers import validate_shipped
from datasets.image_folder import list_images
from training.config import validate_config
from training.data import build_dataset
from utils.config import apply_overrides, load_config, parse_override
from utils.errors import UserError

CONFIGS = sorted(glob.glob(os.path.join(ROOT, 'configs', 'train-*', '**', '*.yaml'), recursive=True))


def test_overrides_parse_yaml_and_nest():
    assert parse_override('a.b=[1, 2]') == (['a', 'b'], [1, 2])
    assert parse_override('lr=1.e-4') == (['lr'], 1e-4)
    assert parse_override('x=') == (['x'], None)
    cfg = {'a': {'b': 1}, 'c': 2}
    out = apply_overrides(cfg, ['a.b=3', 'a.d.e=true', 'c=null'])
    assert out == {'a': {'b': 3, 'd': {'e': True}}, 'c': None} and cfg == {'a': {'b': 1}, 'c': 2}
    for bad in ('a', '=1', 'a..b=1', 'a.b.c=1', 'x=[1'):
        with pytest.raises(UserError):
            apply_overrides(cfg, [bad])


@pytest.mark.parametrize('path', CONFIGS, ids=[os.path.relpath(p, ROOT) for p in CONFIGS])
def test_shipped_configs_validate(path):
    cfg = load_config(path)
    if not validate_shipped(cfg):
        return  # refused by the name of what another branch brings (checked); the values are pinned anyway
    cfg = validate_config(cfg)
    assert cfg['data_norm'] == {'inp': {'sub': [0.5], 'div': [0.5]}, 'gt': {'sub': [0.5], 'div': [0.5]}}
    assert cfg['optimizer']['name'] == 'adam'


def _cfg(name):
    return load_config(os.path.join(ROOT, 'configs', name))


def test_div2k_configs_follow_the_paper():
    base = _cfg('train-div2k/train_edsr-baseline-liif.yaml')
    tr, val = base['train_dataset'], base['val_dataset']
    assert tr['dataset']['args'] == {'root_path': './load/div2k/DIV2K_train_HR', 'repeat': 20, 'cache': 'bin'}
    assert tr['wrapper'] == {'name': 'sr-implicit-downsampled', 'args': {
        'inp_size': 48, 'scale_max': 4, 'augment': True, 'sample_q': 2304}} and tr['batch_size'] == 16
    assert val['dataset']['args'] == {'root_path': './load/div2k/DIV2K_valid_HR', 'first_k': 10, 'repeat': 160,
                                      'cache': 'in_memory'}
    assert base['epoch_max'] == 1000 and base['multi_step_lr'] == {'milestones': [200, 400, 600, 800], 'gamma': 0.5}
    assert base['optimizer']['args'] == {'lr': 1e-4} and base['epoch_save'] == 100
    assert base['model']['args']['imnet_spec']['args']['hidden_list'] == [256] * 4
    flags = {'c': ('cell_decode', False), 'u': ('feat_unfold', False), 'e': ('local_ensemble', False)}
    for suffix, (key, value) in flags.items():
        cfg = _cfg(f'train-div2k/ablation/train_edsr-baseline-liif-{suffix}.yaml')
        assert cfg['model']['args'][key] is value
        cfg['model']['args'].pop(key)
        assert cfg == base
    d = _cfg('train-div2k/ablation/train_edsr-baseline-liif-d.yaml')
    assert d['model']['args']['imnet_spec']['args']['hidden_list'] == [256, 256]
    for s in (2, 3, 4):
        x = _cfg(f'train-div2k/ablation/train_edsr-baseline-liif-x{s}.yaml')
        assert x['train_dataset']['wrapper']['args']['scale_min'] == x['train_dataset']['wrapper']['args']['scale_max'] == s
        # validated at the training scale, as the authors' configs do
        assert x['val_dataset']['wrapper']['args'] == {'inp_size': 48, 'scale_min': s, 'sample_q': 2304}
    for enc in ('rdn', 'edsr-baseline'):
        assert _cfg(f'train-div2k/train_{enc}-metasr.yaml')['model'] == {
            'name': 'metasr', 'args': {'encoder_spec': {'name': enc, 'args': {'no_upsampling': True}}}}
    assert _cfg('train-div2k/train_rdn-liif.yaml')['model']['args']['encoder_spec']['name'] == 'rdn'


def test_celebahq_configs():
    for lr, hr in ((32, 256), (64, 128)):
        cfg = _cfg(f'train-celebAHQ/train_celebAHQ-{lr}-{hr}_liif.yaml')
        ds = cfg['train_dataset']['dataset']
        assert ds['name'] == 'paired-image-folders' and ds['args']['root_path_2'] == f'./load/celebAHQ/{hr}'
        assert ds['args']['split_file'] == './load/celebAHQ/split.json' and ds['args']['split_key'] == 'train'
        wrapper = cfg['train_dataset']['wrapper']
        assert wrapper['name'] == 'sr-implicit-uniform-varied'
        assert (wrapper['args']['size_min'], wrapper['args']['size_max']) == (lr, hr)
        assert cfg['epoch_max'] == 200 and cfg['multi_step_lr']['milestones'] == [100]


def test_local_config_datasets_build():
    cfg = validate_config(load_config(os.path.join(ROOT, 'configs', 'train-local', 'train_edsr-baseline-liif.yaml')))
    t91, bsd = shared_path('train', 'T91'), shared_path('train', 'BSD200')
    specs = cfg['train_dataset']['dataset']['args']['datasets']
    specs[0]['args'].update(root_path=t91, cache='none')
    specs[1]['args'].update(root_path=bsd, cache='none')
    ds = build_dataset(cfg['train_dataset'])
    assert len(ds) == 55 * (91 + 200)
    ds.reseed(0)
    for idx in range(91):  # every T91 image, half of them smaller than an HR crop of 192 px
        s = ds[idx]
        assert s['inp'].shape == (3, 48, 48) and s['coord'].shape == (2304, 2)


def test_unknown_and_missing_top_level_keys():
    with pytest.raises(UserError, match='unknown config key'):
        validate_config({**_cfg('train-local/train_tiny-liif.yaml'), 'bogus': 1})
    with pytest.raises(UserError, match="missing the key 'optimizer'"):
        cfg = _cfg('train-local/train_tiny-liif.yaml')
        del cfg['optimizer']
        validate_config(cfg)


def test_eval_type_is_evaluations_and_needs_whole_validation_images():
    cfg = _cfg('train-local/train_tiny-liif.yaml')
    del cfg['val_dataset']['wrapper']['args']['sample_q']
    assert validate_config({**cfg, 'eval_type': 'benchmark-4'})['eval_type'] == 'benchmark-4'
    with pytest.raises(UserError, match="eval_type must be 'div2k-S' or 'benchmark-S'"):
        validate_config({**cfg, 'eval_type': 'div2k-0'})  # evaluation's parser: no scale 0
    with pytest.raises(UserError, match=r'scores whole images: val_dataset\.wrapper\.args\.sample_q'):
        validate_config({**_cfg('train-local/train_tiny-liif.yaml'), 'eval_type': 'div2k-4'})


@pytest.mark.parametrize('override, message', [
    ('optimizer.args.lr=abc', "optimizer.args.lr must be a number, got 'abc'"),
    ('optimizer.args.lr=-1', "optimizer.args: adam rejects them: ValueError: Invalid learning rate: -1"),
    ('optimizer.args.betas=[2, 0.9]', "optimizer.args: adam rejects them: ValueError: Invalid beta parameter"),
    ('model.args.encoder_spec.args.n_feats=abc', "model.args.encoder_spec: bad argument for model 'edsr-baseline': "
                                                 "n_feats must be a positive integer, got 'abc'"),
    ('model.args.encoder_spec.args.n_feats=0', "n_feats must be a positive integer, got 0"),
    ('model.args.encoder_spec.args.res_scale=abc', "res_scale must be a number, got 'abc'"),
    ('model.args.imnet_spec.args.hidden_list=abc', "model.args.imnet_spec: bad argument for model 'mlp': "
                                                   "hidden_list must be a list, got 'abc'"),
    ('model.args.imnet_spec.args.hidden_list=[16, 0]', "hidden_list must be a list of positive integers"),
    ('model.args.local_ensemble=1', "local_ensemble must be true or false, got 1"),
    ('train_dataset.wrapper.args.inp_size=0', "train_dataset.wrapper: bad argument for dataset "
                                              "'sr-implicit-downsampled': inp_size must be a positive integer or null, got 0"),
    ('train_dataset.wrapper.args.sample_q=0', "sample_q must be a positive integer or null, got 0"),
    ('train_dataset.wrapper.args.sample_q=100000', "train_dataset.wrapper.args.sample_q: 100000 exceeds the 144 "
                                                   "pixels of the smallest HR crop (12 x 12 px"),
    ('val_dataset.wrapper.args.scale_max=abc', "val_dataset.wrapper: bad argument for dataset "
                                               "'sr-implicit-downsampled': scale_max must be a number or null"),
    ('train_dataset.dataset.args.first_k=0', "train_dataset.dataset: bad argument for dataset 'image-folder': "
                                             "first_k must be a positive integer or null, got 0"),
])
def test_bad_argument_values_name_the_key(override, message):
    """Types and ranges of model, optimizer and wrapper arguments fail in validation, not as tracebacks later."""
    with pytest.raises(UserError) as e:
        validate_config(apply_overrides(_cfg('train-local/train_tiny-liif.yaml'), [override]))
    assert message in str(e.value) and '\n' not in str(e.value)


def test_model_build_failure_is_one_line_naming_the_model():
    """What annotations cannot catch still ends as one line naming the config key (an RDN configuration letter)."""
    cfg = _cfg('train-local/train_tiny-liif.yaml')
    cfg['model']['args']['encoder_spec'] = {'name': 'rdn', 'args': {'RDNconfig': 'Z', 'no_upsampling': True}}
    with pytest.raises(UserError, match=r"^model: cannot build 'liif' from these arguments: \w+Error: ") as e:
        validate_config(cfg)
    assert '\n' not in str(e.value)


def test_first_k_zero_says_what_is_wrong(tmp_path):
    (tmp_path / 'a.png').write_bytes(b'')
    with pytest.raises(UserError, match=r'^first_k must be a positive integer \(or null for all images\), got 0$'):
        list_images(str(tmp_path), first_k=0)
