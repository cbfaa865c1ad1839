"""The layering the README promises: leaf helpers, then models and datasets, then orchestration, then scripts."""
import ast
import os
from typing import Dict, List, Set

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ['utils', 'models', 'datasets', 'inference', 'evaluation', 'training', 'viewer_server', 'benchmarks']
# what each package may import of the project (itself always)
ALLOWED: Dict[str, Set[str]] = {
    'utils': set(),
    'models': {'utils'},
    'datasets': {'utils'},
    'inference': {'utils', 'models'},
    'evaluation': {'utils', 'models', 'datasets', 'inference'},
    'training': {'utils', 'models', 'datasets', 'inference', 'evaluation'},
    'viewer_server': {'utils', 'models', 'inference'},
    'benchmarks': {'utils', 'models', 'datasets', 'inference', 'evaluation', 'training', 'viewer_server'},
}
SCRIPTS = ['train_liif.py', 'test.py', 'demo.py', 'viewer.py']
# deliberate late imports, not cycles: file -> why
LATE_IMPORTS = {'train_liif.py': '--help answers without importing torch'}


def _py_files(package: str) -> List[str]:
    folder = os.path.join(ROOT, package)
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith('.py'))


def _project_imports(path: str) -> Set[str]:
    """Top-level project packages a file imports (anywhere in it)."""
    found = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        found |= {n.split('.')[0] for n in names if n.split('.')[0] in PACKAGES}
    return found


def _local_imports(path: str) -> List[str]:
    """'file:line' of project imports inside a function body."""
    out = []
    tree = ast.parse(open(path).read(), path)
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            mod = None
            if isinstance(node, ast.Import):
                mod = node.names[0].name
            elif isinstance(node, ast.ImportFrom):
                mod = node.module or ''
            if mod is not None and mod.split('.')[0] in PACKAGES:
                out.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}")
    return out


@pytest.mark.parametrize('package', PACKAGES)
def test_package_imports_only_lower_layers(package):
    for path in _py_files(package):
        wrong = _project_imports(path) - ALLOWED[package] - {package}
        assert not wrong, f"{os.path.relpath(path, ROOT)} imports {sorted(wrong)} (above its layer)"


def test_layer_check_catches_an_upward_import(tmp_path):
    bad = tmp_path / 'bad.py'
    bad.write_text("import os\nfrom inference.bounded import upscale\n")
    assert _project_imports(str(bad)) - ALLOWED['utils'] == {'inference'}
    local = tmp_path / 'local.py'
    local.write_text("def f():\n    import models\n    return models\n")
    assert _local_imports(str(local)) and _local_imports(str(local))[0].endswith(':2')


def test_no_function_local_project_imports():
    paths = [p for pkg in PACKAGES for p in _py_files(pkg)] + [os.path.join(ROOT, s) for s in SCRIPTS]
    paths += _py_files('scripts')
    local = [hit for p in paths for hit in _local_imports(p) if hit.split(':')[0] not in LATE_IMPORTS]
    assert not local, f"project imports inside functions (hide cycles; import at the top): {local}"
