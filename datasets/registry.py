"""The dataset registry: `datasets.make({'name', 'args'}, args=None)` for datasets and wrappers."""
from typing import Any, Dict, List, Optional

from utils.registry import Registry

DATASETS = Registry('dataset')
register = DATASETS.register


def list_datasets() -> List[str]:
    """Sorted names of every registered dataset and wrapper."""
    return DATASETS.names()


def make(spec: Dict[str, Any], args: Optional[Dict[str, Any]] = None):
    """Build dataset `spec['name']` with `spec['args']` updated by `args` (e.g. the wrapped dataset)."""
    return DATASETS.build(spec, args)
