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


def shared_path(*parts: str) -> str:
    """Path under ../shared/data, skipping the calling test with a reason when it is absent."""
    path = os.path.join(DATA, *parts)
    if not os.path.exists(path):
        pytest.skip(f"shared data not found: {path} (clone the repository beside ../shared)")
    return path


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
