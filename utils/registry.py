"""A name -> factory registry for `{name, args}` specs (used by models and datasets)."""
import copy
import inspect
from typing import Any, Callable, Dict, List, Optional

from utils.errors import UserError


class Registry:
    """Factories by name; `build` checks the arguments before calling so a bad key is one clear line."""

    def __init__(self, kind: str):
        self.kind = kind
        self._factories: Dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable:
        """Class or factory decorator that makes `name` buildable."""
        def decorator(factory: Callable) -> Callable:
            if name in self._factories:
                raise ValueError(f"{self.kind} name registered twice: {name!r}")
            self._factories[name] = factory
            return factory
        return decorator

    def names(self) -> List[str]:
        """Sorted registered names."""
        return sorted(self._factories)

    def check(self, spec: Dict[str, Any], args: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Validate spec (known name, arguments that fit) without building; return the merged arguments."""
        if not isinstance(spec, dict) or 'name' not in spec:
            raise UserError(f"a {self.kind} spec needs a 'name' key, got {spec!r}")
        name = spec['name']
        if name not in self._factories:
            raise UserError(f"unknown {self.kind} {name!r}; registered: {', '.join(self.names())}")
        spec_args = spec.get('args') or {}
        if not isinstance(spec_args, dict):
            raise UserError(f"the args of {self.kind} {name!r} must be a mapping, got {spec_args!r}")
        kwargs = copy.deepcopy(spec_args)
        if args is not None:
            kwargs.update(args)
        try:
            inspect.signature(self._factories[name]).bind(**kwargs)
        except TypeError as e:
            raise UserError(f"bad arguments for {self.kind} {name!r}: {e}") from None
        return kwargs

    def build(self, spec: Dict[str, Any], args: Optional[Dict[str, Any]] = None) -> Any:
        """Call the factory of spec['name'] with spec['args'] updated by `args`."""
        kwargs = self.check(spec, args)
        return self._factories[spec['name']](**kwargs)
