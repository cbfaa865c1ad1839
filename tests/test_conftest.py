"""tests/conftest.py: a missing ../shared skips with its reason, except under CI=true where it fails."""
import os
import subprocess
import sys

import pytest

from tests import conftest
from tests.helpers import ROOT

TINY_TEST = f'''
import sys
sys.path.insert(0, {ROOT!r})
from tests.conftest import shared_path


def test_needs_data():
    shared_path('benchmark', 'Set5', 'HR')


def test_finds_data():
    assert shared_path('present').endswith('present')
'''


@pytest.fixture
def data(tmp_path, monkeypatch):
    """A shared data folder holding only `present`."""
    (tmp_path / 'present').mkdir()
    monkeypatch.setattr(conftest, 'DATA', str(tmp_path))
    return tmp_path


def _missing_outcome() -> BaseException:
    """What shared_path raises for a missing folder (caught whether skip or fail, so this test cannot skip)."""
    with pytest.raises((pytest.skip.Exception, pytest.fail.Exception)) as info:
        conftest.shared_path('benchmark', 'Set5')
    return info.value


@pytest.mark.parametrize('ci', ['', 'false', '0'])
def test_missing_data_skips_with_its_reason_outside_ci(data, monkeypatch, ci):
    monkeypatch.setenv('CI', ci)
    assert conftest.shared_path('present') == str(data / 'present')
    outcome = _missing_outcome()
    assert isinstance(outcome, pytest.skip.Exception)
    assert str(outcome).startswith(f"shared data not found: {data / 'benchmark' / 'Set5'} (")


@pytest.mark.parametrize('ci', ['true', 'True', '1', 'yes'])
def test_missing_data_fails_under_ci(data, monkeypatch, ci):
    monkeypatch.setenv('CI', ci)
    assert conftest.shared_path('present') == str(data / 'present')
    outcome = _missing_outcome()
    assert isinstance(outcome, pytest.fail.Exception)
    assert str(outcome).startswith(f"shared data not found: {data / 'benchmark' / 'Set5'} (")
    assert str(outcome).endswith('CI=true requires it')


def test_a_ci_run_without_shared_data_fails_instead_of_skipping(tmp_path):
    """The whole path, as .ci/run runs it: pytest -rs in a fresh interpreter with CI=true and LIIF_SHARED empty."""
    (tmp_path / 'shared' / 'data' / 'present').mkdir(parents=True)
    (tmp_path / 'test_tiny.py').write_text(TINY_TEST)
    env = {**os.environ, 'LIIF_SHARED': str(tmp_path / 'shared'), 'CI': 'true', 'OMP_NUM_THREADS': '1'}
    proc = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-rs', '-p', 'no:cacheprovider', 'test_tiny.py'],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout
    assert '1 failed, 1 passed' in proc.stdout and 'skipped' not in proc.stdout, proc.stdout
    assert 'CI=true requires it' in proc.stdout
