"""The training config: schema check (unknown or missing keys, bad names and arguments) and defaults.

Everything here runs before any data is read, so a bad config or override fails in a second.
"""
import copy
import inspect
import math
from typing import Any, Dict, Iterable, Optional

import torch

import models
from evaluation.protocol import parse_eval_type
from datasets.registry import DATASETS
from datasets.wrappers import GRID_WRAPPERS
from models.registry import MODELS
from utils.amp import AMP_DTYPES
from utils.errors import UserError
from utils.registry import Registry, type_problem

OPTIMIZERS = {'adam': torch.optim.Adam, 'sgd': torch.optim.SGD}
AMP_MODES = tuple(AMP_DTYPES)  # ('bf16', 'fp16')

REQUIRED = ('train_dataset', 'data_norm', 'model', 'optimizer', 'epoch_max')
# optional keys and their defaults (num_workers None = min(8, CPU cores per process))
DEFAULTS: Dict[str, Any] = {
    'val_dataset': None, 'multi_step_lr': None, 'warmup_cosine_lr': None, 'epoch_val': 1, 'epoch_save': None,
    'resume': None, 'eval_type': None, 'eval_bsize': None, 'amp': None, 'tf32': False, 'seed': 0, 'num_workers': None,
    'time_limit': None, 'step_limit': None, 'device': None, 'compile': False,
}
DEVICES = ('cpu', 'cuda')  # device None: CUDA when available


def _mapping(node: Any, where: str, required: Iterable[str], optional: Iterable[str] = ()) -> Dict:
    """Check node is a mapping with every required key and no key outside required + optional."""
    name = where or 'the config'
    if not isinstance(node, dict):
        raise UserError(f"{name} must be a mapping, got {node!r}")
    known = list(required) + list(optional)
    for key in node:
        if key not in known:
            path = f"{where}.{key}" if where else key
            raise UserError(f"unknown config key {path!r}; {name} takes {', '.join(known)}")
    for key in required:
        if key not in node:
            raise UserError(f"{name} is missing the key {key!r}")
    return node


def _int(value: Any, where: str, minimum: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{where} must be an integer >= {minimum}, got {value!r}")


def _number(value: Any, where: str, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise UserError(f"{where} must be a positive number, got {value!r}")


def _checked(registry: Registry, spec: Dict[str, Any], where: str,
             args: Optional[Dict[str, Any]] = None, partial: bool = False) -> Dict[str, Any]:
    """registry.check(spec, args, partial) with the config key in front of any error."""
    try:
        return registry.check(spec, args, partial)
    except UserError as e:
        raise UserError(f"{where}: {e}") from None


def _dataset_spec(spec: Any, where: str, args: Optional[Dict[str, Any]] = None) -> None:
    """A {name, args} dataset spec whose name is registered and whose arguments fit (nested ones too)."""
    _mapping(spec, where, ['name'], ['args'])
    kwargs = _checked(DATASETS, spec, where, args)
    for i, sub in enumerate(kwargs.get('datasets') or []):  # 'concat' holds specs of its own
        _dataset_spec(sub, f"{where}.args.datasets[{i}]")


def _samples_fit_crop(wrapper: Dict[str, Any], where: str) -> None:
    """sample_q of the downsampling wrapper fits its smallest HR crop (round(inp_size * scale_min) px a side)."""
    args = wrapper.get('args') or {}
    if wrapper.get('name') != 'sr-implicit-downsampled' or None in (args.get('inp_size'), args.get('sample_q')):
        return
    side = round(args['inp_size'] * args.get('scale_min', 1))
    if args['sample_q'] > side * side:
        raise UserError(f"{where}.args.sample_q: {args['sample_q']} exceeds the {side * side} pixels of the "
                        f"smallest HR crop ({side} x {side} px: inp_size {args['inp_size']} x scale_min "
                        f"{args.get('scale_min', 1)})")


def _data_section(section: Any, where: str) -> None:
    _mapping(section, where, ['dataset', 'batch_size'], ['wrapper'])
    _dataset_spec(section['dataset'], f"{where}.dataset")
    if section.get('wrapper') is not None:
        _dataset_spec(section['wrapper'], f"{where}.wrapper", {'dataset': None})
        _samples_fit_crop(section['wrapper'], f"{where}.wrapper")
    _int(section['batch_size'], f"{where}.batch_size", 1)


def _data_norm(node: Any) -> None:
    _mapping(node, 'data_norm', ['inp', 'gt'])
    for part in ('inp', 'gt'):
        _mapping(node[part], f"data_norm.{part}", ['sub', 'div'])
        for key in ('sub', 'div'):
            v = node[part][key]
            if not (isinstance(v, list) and len(v) in (1, 3)
                    and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)):
                raise UserError(f"data_norm.{part}.{key} must be a list of 1 or 3 numbers, got {v!r}")
            if key == 'div' and any(x == 0 for x in v):
                raise UserError(f"data_norm.{part}.div must not contain 0")


def _model_spec(spec: Any, where: str, nested: bool = False) -> None:
    """A {name, args} model spec and every nested *_spec (encoder, MLP) it holds: names, types and ranges."""
    _mapping(spec, where, ['name'], ['args'])
    kwargs = _checked(MODELS, spec, where, partial=nested)  # a parent supplies e.g. its MLP's in_dim
    for key, sub in kwargs.items():
        if key.endswith('_spec') and sub is not None:
            _model_spec(sub, f"{where}.args.{key}", nested=True)


def _model(spec: Any) -> str:
    """Check the model spec completely; return the layout its samples must have (query_layout)."""
    _model_spec(spec, 'model')
    # what annotations cannot say (an MLP's in_dim against its encoder...) shows when building;
    # on the meta device that costs nothing
    try:
        with torch.device('meta'):
            return getattr(models.make(spec), 'query_layout', 'points')
    except UserError as e:
        raise UserError(f"model: {e}") from None
    except Exception as e:  # noqa: BLE001 - any failure of a factory is a bad model config
        raise UserError(f"model: cannot build {spec['name']!r} from these arguments: {_first_line(e)}") from None


def _layout_fits(section: Optional[Dict[str, Any]], where: str, model_name: str, layout: str) -> None:
    """The section's wrapper hands out samples in the model's layout (grid: SRNO's (N, H, W, 2) coordinates)."""
    wrapper = (section or {}).get('wrapper')
    if wrapper is None:
        return
    given = 'grid' if wrapper['name'] in GRID_WRAPPERS else 'points'
    if given != layout:
        fix = ', '.join(GRID_WRAPPERS) if layout == 'grid' else 'a wrapper of per-query samples'
        raise UserError(f"{where}.wrapper: model {model_name!r} takes {layout} samples, {wrapper['name']!r} "
                        f"gives {given} samples; use {fix}")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:200]}" if text else type(e).__name__


def _optimizer(spec: Any) -> None:
    _mapping(spec, 'optimizer', ['name'], ['args'])
    if spec['name'] not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {spec['name']!r}; known: {', '.join(OPTIMIZERS)}")
    args = spec.get('args') or {}
    if not isinstance(args, dict):
        raise UserError(f"optimizer.args must be a mapping, got {args!r}")
    try:
        inspect.signature(OPTIMIZERS[spec['name']]).bind([], **args)
    except TypeError as e:
        raise UserError(f"bad arguments for optimizer {spec['name']!r}: {e}") from None
    for key, value in args.items():
        if key in ('lr', 'momentum', 'weight_decay', 'eps') and type_problem(value, float):
            raise UserError(f"optimizer.args.{key} must be a number, got {value!r}")
    # the optimizer's own range checks (lr >= 0, betas in [0, 1)...), on a throwaway parameter
    try:
        OPTIMIZERS[spec['name']]([torch.zeros(1, requires_grad=True)], **args)
    except Exception as e:  # noqa: BLE001 - any failure of the constructor is a bad optimizer config
        raise UserError(f"optimizer.args: {spec['name']} rejects them: {_first_line(e)}") from None


def _schedule(node: Any) -> None:
    _mapping(node, 'multi_step_lr', ['milestones', 'gamma'])
    ms = node['milestones']
    if not (isinstance(ms, list) and all(isinstance(m, int) and not isinstance(m, bool) for m in ms)):
        raise UserError(f"multi_step_lr.milestones must be a list of integers, got {ms!r}")
    _number(node['gamma'], 'multi_step_lr.gamma')


def _warmup_cosine(node: Any, epoch_max: int, multi_step: Any) -> None:
    _mapping(node, 'warmup_cosine_lr', ['multiplier', 'warmup_epochs'])
    _number(node['multiplier'], 'warmup_cosine_lr.multiplier')
    _int(node['warmup_epochs'], 'warmup_cosine_lr.warmup_epochs', 0)
    if node['warmup_epochs'] >= epoch_max:
        raise UserError(f"warmup_cosine_lr.warmup_epochs ({node['warmup_epochs']}) must be below epoch_max "
                        f"({epoch_max})")
    if multi_step is not None:
        raise UserError("multi_step_lr and warmup_cosine_lr are two schedules: set one of them")


def _eval_type(eval_type: Any, val_section: Optional[Dict[str, Any]]) -> None:
    """eval_type is evaluation's ('div2k-S' / 'benchmark-S'); it shaves whole images, which sample_q breaks up."""
    parse_eval_type(eval_type)
    wrapper = (val_section or {}).get('wrapper') or {}
    wrapper_args = wrapper.get('args') or {}
    if wrapper.get('name') in GRID_WRAPPERS and wrapper_args.get('inp_size') is not None:
        raise UserError(f"eval_type {eval_type} scores whole images: {wrapper['name']} with "
                        f"val_dataset.wrapper.args.inp_size draws a subset of the pixels (unset it, or drop eval_type)")
    if wrapper_args.get('sample_q') is not None:
        raise UserError(f"eval_type {eval_type} scores whole images: val_dataset.wrapper.args.sample_q "
                        f"must be unset (or drop eval_type)")


def validate_config(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Check a training config completely; return a copy with every optional key filled in."""
    _mapping(cfg, '', REQUIRED, DEFAULTS)
    cfg = {**copy.deepcopy(DEFAULTS), **copy.deepcopy(cfg)}
    _data_section(cfg['train_dataset'], 'train_dataset')
    if cfg['val_dataset'] is not None:
        _data_section(cfg['val_dataset'], 'val_dataset')
    _data_norm(cfg['data_norm'])
    layout = _model(cfg['model'])
    for key in ('train_dataset', 'val_dataset'):
        _layout_fits(cfg[key], key, cfg['model']['name'], layout)
    _optimizer(cfg['optimizer'])
    if cfg['multi_step_lr'] is not None:
        _schedule(cfg['multi_step_lr'])
    _int(cfg['epoch_max'], 'epoch_max', 1)
    if cfg['warmup_cosine_lr'] is not None:
        _warmup_cosine(cfg['warmup_cosine_lr'], cfg['epoch_max'], cfg['multi_step_lr'])
    for key in ('epoch_val', 'epoch_save', 'eval_bsize', 'step_limit'):
        _int(cfg[key], key, 1, optional=True)
    _int(cfg['num_workers'], 'num_workers', 0, optional=True)
    _int(cfg['seed'], 'seed', 0)
    _number(cfg['time_limit'], 'time_limit', optional=True)
    if cfg['amp'] not in (None,) + AMP_MODES:
        raise UserError(f"amp must be one of {', '.join(AMP_MODES)} or null, got {cfg['amp']!r}")
    if cfg['device'] not in (None,) + DEVICES:
        raise UserError(f"device must be one of {', '.join(DEVICES)} or null (auto), got {cfg['device']!r}")
    for key in ('tf32', 'compile'):
        if not isinstance(cfg[key], bool):
            raise UserError(f"{key} must be true or false, got {cfg[key]!r}")
    if cfg['eval_type'] is not None:
        _eval_type(cfg['eval_type'], cfg['val_dataset'])
    if cfg['resume'] is not None and not isinstance(cfg['resume'], str):
        raise UserError(f"resume must be a checkpoint path, got {cfg['resume']!r}")
    return cfg
