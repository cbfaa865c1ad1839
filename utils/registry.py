"""A name -> factory registry for `{name, args}` specs (used by models and datasets).

Arguments are checked against the factory's signature and annotated types before anything is
built: int arguments count things (blocks, features, pixels, samples, images) and must be >= 1.
"""
import collections.abc
import copy
import inspect
import math
import typing
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

    def factory(self, name: str) -> Callable[..., Any]:
        """The class or function registered as `name` (KeyError if none)."""
        return self._factories[name]

    def check(self, spec: Dict[str, Any], args: Optional[Dict[str, Any]] = None,
              partial: bool = False) -> Dict[str, Any]:
        """Validate spec (known name, arguments that fit) without building; return the merged arguments.

        partial: required arguments may be missing (a nested spec whose parent model supplies them).
        """
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
        factory = self._factories[name]
        try:
            sig = inspect.signature(factory)
            sig.bind_partial(**kwargs) if partial else sig.bind(**kwargs)
        except TypeError as e:
            raise UserError(f"bad arguments for {self.kind} {name!r}: {e}") from None
        hints = annotated_types(factory)
        for key, value in (spec_args if args is None else {k: v for k, v in kwargs.items() if k not in args}).items():
            problem = type_problem(value, hints.get(key, Any))
            if problem:
                raise UserError(f"bad argument for {self.kind} {name!r}: {key} must be {problem}, got {value!r}")
        return kwargs

    def build(self, spec: Dict[str, Any], args: Optional[Dict[str, Any]] = None) -> Any:
        """Call the factory of spec['name'] with spec['args'] updated by `args`."""
        kwargs = self.check(spec, args)
        return self._factories[spec['name']](**kwargs)


def annotated_types(factory: Callable) -> Dict[str, Any]:
    """Parameter annotations of a function or class (its __init__), resolved; {} where they cannot be."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        return typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - unresolvable forward references: nothing to check against
        return {}


def type_problem(value: Any, annotation: Any) -> str:
    """'' if value fits annotation (ints >= 1, finite floats), else what it should be; unknown types always fit."""
    origin, params = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any or annotation is inspect.Parameter.empty:
        return ''
    if origin is typing.Union:
        problems = [type_problem(value, p) for p in params]
        return '' if any(not p for p in problems) else ' or '.join(dict.fromkeys(p for p in problems if p))
    if annotation is type(None):
        return '' if value is None else 'null'
    if annotation is bool:
        return '' if isinstance(value, bool) else 'true or false'
    if annotation is int:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        return '' if ok else 'a positive integer'
    if annotation is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return '' if ok else 'a number'
    if annotation is str:
        return '' if isinstance(value, str) else 'a string'
    if origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return 'a list'
        inner = params[0] if params and (origin is not tuple or len(params) == 2 and params[1] is Ellipsis) else Any
        bad = [type_problem(v, inner) for v in value]
        return next((f"a list of {b[2:] if b.startswith('a ') else b}s" for b in bad if b), '')
    if origin in (dict, collections.abc.Mapping) or annotation is dict:
        return '' if isinstance(value, dict) else 'a mapping'
    return ''  # classes (a Dataset built elsewhere...): not something a config spells out
