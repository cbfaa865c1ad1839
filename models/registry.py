"""The `{name, args}` registry that turns config specs into models."""
import copy
import inspect
from typing import Any, Callable, Dict, List, Optional

from utils.errors import UserError

_REGISTRY: Dict[str, Callable[..., Any]] = {}


def register(name: str) -> Callable:
    """Class or factory decorator that makes `name` buildable with `make`."""
    def decorator(factory: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"model name registered twice: {name!r}")
        _REGISTRY[name] = factory
        return factory
    return decorator


def list_models() -> List[str]:
    """Sorted names of every registered model."""
    return sorted(_REGISTRY)


def make(spec: Dict[str, Any], args: Optional[Dict[str, Any]] = None, load_sd: bool = False):
    """Build the model `spec['name']` with `spec['args']` updated by `args`; load `spec['sd']` if asked."""
    if not isinstance(spec, dict) or 'name' not in spec:
        raise UserError(f"a model spec needs a 'name' key, got {spec!r}")
    name = spec['name']
    if name not in _REGISTRY:
        raise UserError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    model_args = copy.deepcopy(spec.get('args') or {})
    if args is not None:
        model_args.update(args)
    factory = _REGISTRY[name]
    try:
        inspect.signature(factory).bind(**model_args)
    except TypeError as e:
        raise UserError(f"bad arguments for model {name!r}: {e}") from None
    model = factory(**model_args)
    if load_sd:
        if 'sd' not in spec:
            raise UserError(f"model spec {name!r} has no 'sd' (state dict) to load")
        try:
            model.load_state_dict(spec['sd'])
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            raise UserError(f"state dict does not fit model {name!r}: {' '.join(first[:3])}") from None
    return model
