"""The model registry: `models.make({'name', 'args'[, 'sd']})`."""
from typing import Any, Dict, List, Optional

from utils.errors import UserError
from utils.registry import Registry

MODELS = Registry('model')
register = MODELS.register


def list_models() -> List[str]:
    """Sorted names of every registered model."""
    return MODELS.names()


def model_factory(name: str):
    """The class or function registered as model `name`."""
    return MODELS.factory(name)


def make(spec: Dict[str, Any], args: Optional[Dict[str, Any]] = None, load_sd: bool = False):
    """Build the model `spec['name']` with `spec['args']` updated by `args`; load `spec['sd']` if asked."""
    model = MODELS.build(spec, args)
    if load_sd:
        if 'sd' not in spec:
            raise UserError(f"model spec {spec['name']!r} has no 'sd' (state dict) to load")
        problems = state_dict_mismatch(model.state_dict(), spec['sd'])
        if problems:
            raise UserError(f"state dict does not fit model {spec['name']!r}: {problems}")
        try:
            model.load_state_dict(spec['sd'])
        except (RuntimeError, TypeError, AttributeError) as e:
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise UserError(f"state dict does not fit model {spec['name']!r}: {first}") from None
    return model


def _few(names: List[str], shown: int = 3) -> str:
    more = f", ... ({len(names) - shown} more)" if len(names) > shown else ''
    return ', '.join(names[:shown]) + more


def state_dict_mismatch(expected: Dict[str, Any], given: Any) -> str:
    """'' if `given` fits `expected` key for key and shape for shape, else a one-line summary (counts, first few)."""
    if not isinstance(given, dict):
        return f"'sd' must be a mapping of tensors, got {type(given).__name__}"
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [f"{k} {tuple(given[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in given and hasattr(given[k], 'shape') and tuple(given[k].shape) != tuple(v.shape)]
    parts = [f"{len(missing)} of {len(expected)} weights missing ({_few(missing)})" if missing else '',
             f"{len(unexpected)} unexpected ({_few(unexpected)})" if unexpected else '',
             f"{len(shapes)} of other shape ({_few(shapes, 2)})" if shapes else '']
    return '; '.join(p for p in parts if p)
