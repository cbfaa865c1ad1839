"""YAML configs: loading and command-line overrides, with one-line errors."""
import copy
import os
from typing import Any, Dict, List, Sequence, Tuple

import yaml

from utils.errors import UserError


def load_config(path: str) -> Dict[str, Any]:
    """Parse a YAML config file into a dict (yaml.safe_load); unreadable or non-mapping files are UserErrors."""
    if not os.path.isfile(path):
        raise UserError(f"config not found: {path}")
    try:
        with open(path) as f:
            cfg = yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, 'problem_mark', None)
        where = f" at line {mark.line + 1}" if mark is not None else ''
        raise UserError(f"config {path} is not valid YAML{where}") from None
    if not isinstance(cfg, dict):
        raise UserError(f"config {path} must be a mapping of keys to values")
    return cfg


def parse_override(text: str) -> Tuple[List[str], Any]:
    """'a.b.c=value' -> (['a', 'b', 'c'], yaml.safe_load('value')); malformed text is a UserError."""
    key, sep, raw = text.partition('=')
    path = key.strip().split('.')
    if not sep or not all(p.strip() for p in path):
        raise UserError(f"bad override {text!r}: expected key.sub=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise UserError(f"bad override {text!r}: the value is not valid YAML") from None
    return [p.strip() for p in path], value


def apply_overrides(cfg: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """A deep copy of cfg with each 'key.sub=value' set (missing mappings are created; validate after)."""
    cfg = copy.deepcopy(cfg)
    for text in overrides:
        path, value = parse_override(text)
        node = cfg
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                where = '.'.join(path[:i + 1])
                raise UserError(f"bad override {text!r}: {where} is {child!r}, not a mapping")
            node = child
        node[path[-1]] = value
    return cfg
