"""Helpers for the evaluation and demo tests: tiny checkpoints and running the scripts as a user would."""
import os
import subprocess
import sys
from typing import Any, Dict, List

import pytest
import torch

import models
from utils.checkpoint import model_spec, save_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY_LIIF = {'name': 'liif', 'args': {
    'encoder_spec': {'name': 'edsr-baseline', 'args': {'n_resblocks': 1, 'n_feats': 8, 'no_upsampling': True}},
    'imnet_spec': {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': [16]}}}}
# without an MLP LIIF returns the nearest feature vector: 3 features make a very cheap RGB model
NEAREST_LIIF = {'name': 'liif', 'args': {
    'encoder_spec': {'name': 'edsr-baseline', 'args': {'n_resblocks': 1, 'n_feats': 3, 'no_upsampling': True}}}}
ENCODER_ONLY = {'name': 'edsr-baseline', 'args': {'n_resblocks': 1, 'n_feats': 8, 'no_upsampling': True}}


def save_model(path, spec: Dict[str, Any]) -> str:
    """Build `spec` with fresh (seeded by the caller) weights and save it in the released format."""
    save_checkpoint(path, model_spec(models.make(spec), spec['name'], spec['args']))
    return str(path)


def run_script(script: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a repository script in a fresh interpreter; one thread, since the test machines are small and shared."""
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def error_lines(proc: subprocess.CompletedProcess) -> List[str]:
    """stderr lines that are not log records."""
    return [ln for ln in proc.stderr.splitlines() if ln and not ln.startswith(('INFO', 'WARNING'))]


@pytest.fixture
def one_thread():
    """Run a test on one intra-op thread: on a small shared machine two threads thrash (measured 25x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
