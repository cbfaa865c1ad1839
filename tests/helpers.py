"""Helpers for the evaluation and demo tests: tiny checkpoints and running the scripts as a user would."""
import importlib.util
import json
import os
import subprocess
import sys
from typing import Any, Dict, List

import numpy as np
import pytest
import torch
from PIL import Image

import models
from tests.conftest import shared_path
from utils.checkpoint import model_spec, save_checkpoint
from utils.coord import make_cell, make_coord
from utils.imresize import imresize
from utils.metrics import max_scaled_error  # noqa: F401  (re-exported for the tests that import it from here)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY_LIIF = {'name': 'liif', 'args': {
    'encoder_spec': {'name': 'edsr-baseline', 'args': {'n_resblocks': 1, 'n_feats': 8, 'no_upsampling': True}},
    'imnet_spec': {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': [16]}}}}
# without an MLP LIIF returns the nearest feature vector: 3 features make a very cheap RGB model
NEAREST_LIIF = {'name': 'liif', 'args': {
    'encoder_spec': {'name': 'edsr-baseline', 'args': {'n_resblocks': 1, 'n_feats': 3, 'no_upsampling': True}}}}
ENCODER_ONLY = {'name': 'edsr-baseline', 'args': {'n_resblocks': 1, 'n_feats': 8, 'no_upsampling': True}}


# three different values per entry: a model trained with this must be run with exactly this
PER_CHANNEL_NORM = {'inp': {'sub': [0.45, 0.5, 0.35], 'div': [0.2, 0.3, 0.25]},
                    'gt': {'sub': [0.4, 0.55, 0.6], 'div': [0.3, 0.2, 0.5]}}
FIRST_VALUE_NORM = {'inp': {'sub': [0.45], 'div': [0.2]}, 'gt': {'sub': [0.4], 'div': [0.3]}}


def save_model(path, spec: Dict[str, Any], **extra: Any) -> str:
    """Build `spec` with fresh (seeded by the caller) weights and save it in the released format (+ extra keys)."""
    save_checkpoint(path, model_spec(models.make(spec), spec['name'], spec['args']), **extra)
    return str(path)


def manual_upscale(model: torch.nn.Module, lr: np.ndarray, size, data_norm: Dict[str, Any]) -> np.ndarray:
    """The model's [0, 1] output (3, H, W) for an 8-bit LR (h, w, 3): one whole-grid forward, normalised
    by hand per channel with numpy (independent of utils.norm), clamped, not rounded."""
    def col(part, key, shape):
        return np.array(data_norm[part][key], dtype=np.float32).reshape(shape)
    x = lr.astype(np.float32).transpose(2, 0, 1) / 255
    x = (x - col('inp', 'sub', (-1, 1, 1))) / col('inp', 'div', (-1, 1, 1))
    coord = make_coord(size).unsqueeze(0)
    with torch.no_grad():
        pred = model(torch.from_numpy(x).unsqueeze(0), coord, make_cell(coord, size))[0].numpy()
    rgb = pred * col('gt', 'div', (1, -1)) + col('gt', 'sub', (1, -1))
    return np.clip(rgb, 0, 1).reshape(size[0], size[1], 3).transpose(2, 0, 1)


def np_psnr(pred: np.ndarray, hr: np.ndarray, shave: int, y: bool) -> float:
    """Textbook PSNR (peak 1) of (3, H, W) images, written independently of utils.metrics."""
    pred, hr = pred.astype(np.float64), hr.astype(np.float64)
    if y:
        w = np.array([65.481, 128.553, 24.966]).reshape(3, 1, 1) / 255
        pred, hr = (pred * w).sum(0), (hr * w).sum(0)
    d = pred - hr
    if shave:
        d = d[..., shave:-shave, shave:-shave]
    return float(10 * np.log10(1 / np.mean(d ** 2)))


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


def write_small_pairs(src_dir: str, root, scale: int = 2, names=('bird.png', 'head.png'), hr_size: int = 48):
    """HR crops (hr_size px) of src_dir's images and their MATLAB-bicubic 8-bit LR: (lr_dir, hr_dir) under root."""
    lr_dir, hr_dir = os.path.join(root, 'LR'), os.path.join(root, 'HR')
    os.makedirs(lr_dir, exist_ok=True)
    os.makedirs(hr_dir, exist_ok=True)
    for name in names:
        hr = np.asarray(Image.open(os.path.join(src_dir, name)).convert('RGB'))[:hr_size, :hr_size]
        Image.fromarray(hr).save(os.path.join(hr_dir, name))
        lr = imresize(torch.from_numpy(hr.copy()).permute(2, 0, 1), size=(hr_size // scale,) * 2)
        Image.fromarray(lr.permute(1, 2, 0).numpy()).save(os.path.join(lr_dir, name))
    return lr_dir, hr_dir


EXTRA_PARITY = ('reference', 'liif-extra-parity')


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


def check_released_layout(name: str, folder=EXTRA_PARITY) -> None:
    """models.make(spec) of folder/state_dict_keys.json[name] has its keys, shapes and parameter counts."""
    released = json.load(open(shared_path(*folder, 'state_dict_keys.json')))[name]
    model = models.make(released['spec'])
    assert [[k, list(v.shape)] for k, v in model.state_dict().items()] == released['state_dict']
    assert sum(p.numel() for p in model.parameters()) == released['num_params_all']
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == released['num_params_trainable']


def load_script(rel: str):
    """A script of the repository (path relative to the root) as a module, its main() not run."""
    spec = importlib.util.spec_from_file_location(os.path.basename(rel)[:-3], os.path.join(ROOT, rel))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
