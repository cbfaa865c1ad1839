"""Shared test fixtures: the ../shared data folder and small deterministic models."""
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SHARED = os.environ.get('LIIF_SHARED', os.path.join(ROOT, '..', 'shared'))
DATA = os.path.join(SHARED, 'data')
REFERENCE = os.path.join(DATA, 'reference')


# CI always has ../shared beside its clone: there a missing data folder is a failure, so that the
# suite cannot pass by skipping the tests that check real numbers
def in_ci() -> bool:
    """True when the environment says CI (CI=true, 1 or yes)."""
    return os.environ.get('CI', '').strip().lower() in ('1', 'true', 'yes')


def shared_path(*parts: str) -> str:
    """Path under ../shared/data; when absent the calling test skips with the reason (fails under CI=true)."""
    path = os.path.join(DATA, *parts)
    if not os.path.exists(path):
        message = f"shared data not found: {path} (clone the repository beside ../shared or set LIIF_SHARED)"
        if in_ci():
            pytest.fail(f"{message}; CI=true requires it", pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
