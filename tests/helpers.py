"""Helpers for the evaluation and demo tests: tiny checkpoints and running the scripts as a user would."""
import json
import os
import subprocess
import sys
from typing import Any, Dict, List

import pytest
import torch

import models
from tests.conftest import shared_path
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


EXTRA_PARITY = ('reference', 'liif-extra-parity')


def max_scaled_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max(1, |want|): absolute error for values up to 1, relative above."""
    return ((got - want).abs() / want.abs().clamp(min=1)).max().item()


def check_extra_parity(path: str, tol: float = 1e-5) -> None:
    """Build liif-extra-parity's NAME.pth through models.make from its stored spec and meet NAME.vectors.pt.

    `feat` (the encoder's output) and every case's output must be within `tol` (max_scaled_error), on
    the default encoder memory format (channels_last) and on the plain one.
    """
    ckpt = torch.load(path + '.pth', map_location='cpu', weights_only=True)['model']
    vectors = torch.load(path + '.vectors.pt', map_location='cpu', weights_only=True)
    model = models.make(ckpt, load_sd=True).eval()
    assert vectors['cases'], path
    for channels_last in (True, False):
        model.channels_last = channels_last
        with torch.no_grad():
            feat = model.gen_feat(vectors['input'])
            assert feat.shape == vectors['feat'].shape
            assert max_scaled_error(feat, vectors['feat']) <= tol, ('feat', channels_last)
            for key, case in vectors['cases'].items():
                out = model(vectors['input'], case['coord'], case['cell'])
                assert out.shape == case['output'].shape
                assert max_scaled_error(out, case['output']) <= tol, (key, channels_last)


def check_released_layout(name: str) -> None:
    """models.make(spec) of liif-extra-parity/state_dict_keys.json[name] has its keys, shapes and parameter counts."""
    released = json.load(open(shared_path(*EXTRA_PARITY, 'state_dict_keys.json')))[name]
    model = models.make(released['spec'])
    assert [[k, list(v.shape)] for k, v in model.state_dict().items()] == released['state_dict']
    assert sum(p.numel() for p in model.parameters()) == released['num_params_all']
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == released['num_params_trainable']
