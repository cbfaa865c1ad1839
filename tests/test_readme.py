"""Every command of the README's bash blocks is run as written (fast ones), checked, or skipped for a named reason."""
import os
import re
import shlex
from typing import List, Tuple

import pytest
from PIL import Image

import demo
from tests.conftest import ROOT, shared_path
from tests.helpers import load_script, one_thread  # noqa: F401
from evaluation.protocol import apply_root_overrides, parse_root_override
from training.config import validate_config
from utils.config import apply_overrides, load_config

README = os.path.join(ROOT, 'README.md')
# segments of a command line that set up the environment: the tests run in the current interpreter
SETUP = re.compile(r'venv|^pip install ')
# commands not run, and why (matched against the command text)
SKIPPED = {
    '-m pytest': "the test suite itself",
    'configs/train-div2k/': "needs DIV2K downloaded to ./load/div2k (not part of the data beside the repository)",
}
# commands whose arguments, files and data folders are checked, but which are not run, and why
CHECKED = {
    'test.py': "evaluates Set5 with the bundled model: about a minute on a busy 2-core machine",
    'scripts/eval_suite.py': "evaluates three benchmark sets at five scales: tens of minutes",
    'train_liif.py': "trains (the tiny config runs in tests/test_train.py)",
    'viewer.py': "serves until Ctrl-C (tests/test_viewer.py drives its page in a browser)",
}


# commands run as written (each in a fresh folder holding the repository's assets and weights)
RUN = ('demo.py', 'scripts/export_onnx.py')


def readme_commands() -> List[str]:
    """The commands of the README's ```bash blocks: continuation lines joined, comments and setup segments dropped."""
    text = open(README).read()
    commands = []
    for block in re.findall(r'```bash\n(.*?)```', text, re.S):
        for line in block.replace('\\\n', ' ').splitlines():
            line = re.sub(r'\s+#.*$', '', line).strip()
            segments = [s.strip() for s in line.split('&&')]
            commands += [s for s in segments if s and not SETUP.search(s)]
    return commands


def classify(command: str) -> Tuple[str, str]:
    """('run' | 'check' | 'skip', reason); every README command must fall in one of them."""
    for key, reason in SKIPPED.items():
        if key in command:
            return 'skip', reason
    argv = shlex.split(command)
    assert argv[0] == 'python', f"README command not run by python: {command}"
    if argv[1] in RUN:
        return 'run', ''
    if argv[1] in CHECKED:
        return 'check', CHECKED[argv[1]]
    raise AssertionError(f"README command with no rule in tests/test_readme.py: {command}")


COMMANDS = readme_commands()


def test_first_screen_keeps_the_two_fresh_machine_commands():
    assert COMMANDS[:2] == ['python demo.py --input assets/sample.png --scale 2 --output sample_x2.png',
                            'python -m pytest -q -rs tests']
    first = open(README).read().split('## ')[0]
    assert first.count('{ [ -d .venv ] || python3 -m venv .venv; } && . .venv/bin/activate') == 2
    assert 'download.pytorch.org/whl/cpu' in first and '5.5 GB' in first


@pytest.mark.usefixtures('one_thread')
@pytest.mark.parametrize('command', COMMANDS)
def test_readme_command(command, tmp_path, monkeypatch):
    kind, reason = classify(command)
    if kind == 'skip':
        pytest.skip(reason)
    argv = shlex.split(command)[2:]
    if kind == 'run':
        # as written, in a folder holding the repository's assets: outputs land in tmp_path
        os.symlink(os.path.join(ROOT, 'assets'), tmp_path / 'assets')
        os.symlink(os.path.join(ROOT, 'weights'), tmp_path / 'weights')
        monkeypatch.chdir(tmp_path)
        if shlex.split(command)[1] == 'scripts/export_onnx.py':
            load_script('scripts/export_onnx.py').main(argv)
            out = argv[argv.index('--out') + 1]
            assert sorted(os.listdir(out)) == ['encoder.onnx', 'manifest.json', 'query.onnx']
            return
        if '--onnx' in argv:  # the README's export command that writes that folder runs first
            folder = argv[argv.index('--onnx') + 1]
            export = [c for c in COMMANDS if 'export_onnx.py' in c and shlex.split(c)[-1] == folder]
            assert export, f"no README command exports {folder}"
            load_script('scripts/export_onnx.py').main(shlex.split(export[0])[2:])
        demo.main(argv)
        out = argv[argv.index('--output') + 1]
        assert Image.open(tmp_path / out).size[0] > Image.open(tmp_path / 'assets' / 'sample.png').size[0]
        return
    monkeypatch.chdir(ROOT)
    if shlex.split(command)[1] == 'viewer.py':
        args = load_script('viewer.py').parse_args(argv)
        assert os.path.isfile(args.input) and args.host == '127.0.0.1', args
        pytest.skip(f"arguments and files checked; not run: {reason}")
    shared_path('benchmark')  # skips, with the reason, where the data beside the repository is absent
    script = shlex.split(command)[1]
    if script == 'train_liif.py':
        args = load_script(script).build_parser().parse_args(argv)
        cfg = validate_config(apply_overrides(load_config(args.config), args.overrides))
        folders = [v for v in _values(cfg, 'root_path')]
    else:
        module = load_script(script)
        args = module.parse_args(argv)
        assert os.path.isfile(args.model), args.model
        overrides = [parse_root_override(t) for t in args.data_root]
        if script == 'test.py':
            spec = apply_root_overrides(load_config(args.config)['test_dataset'], overrides)['dataset']['args']
            folders = [spec.get('root_path_2', spec.get('root_path'))]
        else:
            folders = [module.hr_folder(n, args.suite, overrides) for n in args.sets.split(',')]
    assert folders and all(os.path.isdir(f) for f in folders), folders
    pytest.skip(f"arguments, files and folders checked; not run: {reason}")


def _values(node, key):
    """Every value stored under `key` anywhere in a nested config."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            else:
                yield from _values(v, key)
    elif isinstance(node, list):
        for v in node:
            yield from _values(v, key)
