"""YAML configs: loading with one-line errors."""
import os
from typing import Any, Dict

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
