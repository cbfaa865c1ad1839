"""python -m models: every registered model with its constructor parameters and defaults."""
import inspect
import sys
from typing import List, Optional

from models import list_models, model_factory
from models.implicit import ImplicitSR
from utils.cli import run_cli
from utils.errors import UserError


def describe(name: str) -> List[str]:
    """Lines for one registered model: name, kind and first docstring line, then its parameters."""
    factory = model_factory(name)
    is_sr = inspect.isclass(factory) and issubclass(factory, ImplicitSR)
    kind = f"SR model, query layout {factory.query_layout}" if is_sr else 'module'
    doc = (inspect.getdoc(factory) or '').split('\n')[0]
    lines = [f"{name}  ({kind})  {doc}".rstrip()]
    for p in inspect.signature(factory).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        default = '(required)' if p.default is p.empty else f"= {p.default!r}"
        lines.append(f"    {p.name} {default}")
    return lines


def main(argv: Optional[List[str]] = None) -> None:
    """Print every registered model (or the ones named on the command line)."""
    names = (argv if argv is not None else sys.argv[1:]) or list_models()
    unknown = [n for n in names if n not in list_models()]
    if unknown:
        raise UserError(f"unknown model {unknown[0]!r}; registered: {', '.join(list_models())}")
    for name in names:
        print('\n'.join(describe(name)))


if __name__ == '__main__':
    run_cli(main)
