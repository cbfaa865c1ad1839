"""The model registry: `models.make({'name', 'args'[, 'sd']})`."""
from typing import Any, Dict, List, Optional

from utils.errors import UserError
from utils.registry import Registry

MODELS = Registry('model')
register = MODELS.register


def list_models() -> List[str]:
    """Sorted names of every registered model."""
    return MODELS.names()


def make(spec: Dict[str, Any], args: Optional[Dict[str, Any]] = None, load_sd: bool = False):
    """Build the model `spec['name']` with `spec['args']` updated by `args`; load `spec['sd']` if asked."""
    model = MODELS.build(spec, args)
    if load_sd:
        if 'sd' not in spec:
            raise UserError(f"model spec {spec['name']!r} has no 'sd' (state dict) to load")
        try:
            model.load_state_dict(spec['sd'])
        except RuntimeError as e:
            lines = str(e).strip().splitlines()
            raise UserError(f"state dict does not fit model {spec['name']!r}: {' '.join(lines[:3])}") from None
    return model
