import os
import subprocess
import sys
import json

import pytest
import torch

import models
from tests.conftest import shared_path
from utils.coord import make_cell, make_coord
from utils.errors import UserError
from inference.bounded import batched_predict

PARITY = ('reference', 'liif-parity')
TINY_EDSR = {'name': 'edsr-baseline', 'args': {'n_resblocks': 2, 'n_feats': 16, 'no_upsampling': True}}
MLP = {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': [32, 32]}}


def tiny_liif(**flags):
    return models.make({'name': 'liif', 'args': {'encoder_spec': TINY_EDSR, 'imnet_spec': MLP, **flags}}).eval()


# ---- parity with the authors' implementation -------------------------------------------------

@pytest.mark.parametrize('name', ['edsr-baseline-liif', 'metasr-edsr-baseline', 'liif-plain'])
def test_parity_vectors(name):
    ckpt = torch.load(shared_path(*PARITY, name + '.pth'), weights_only=True)
    vectors = torch.load(shared_path(*PARITY, name + '.vectors.pt'), weights_only=True)
    model = models.make(ckpt['model'], load_sd=True).eval()
    with torch.no_grad():
        if 'feat' in vectors:
            assert (model.gen_feat(vectors['input']) - vectors['feat']).abs().max() <= 1e-5
        assert len(vectors['cases']) >= 2
        for key, case in vectors['cases'].items():
            out = model(vectors['input'], case['coord'], case['cell'])
            assert out.shape == case['output'].shape
            err = (out - case['output']).abs().max().item()
            assert err <= 1e-5, f"{name} {key}: max abs error {err}"


def test_state_dict_keys_and_shapes_of_released_configs():
    released = json.load(open(shared_path(*PARITY, 'state_dict_keys.json')))
    assert {'edsr-baseline-liif', 'rdn-liif', 'edsr', 'edsr-liif', 'metasr'} <= set(released)
    for name, entry in released.items():
        model = models.make(entry['spec'])
        got = [[k, list(v.shape)] for k, v in model.state_dict().items()]
        assert got == entry['state_dict'], name
        assert sum(p.numel() for p in model.parameters()) == entry['num_params_all'], name
        assert sum(p.numel() for p in model.parameters() if p.requires_grad) == entry['num_params_trainable'], name


# ---- registry -----------------------------------------------------------------------------------

def test_registry_lists_every_model():
    assert {'edsr-baseline', 'edsr', 'rdn', 'mlp', 'liif', 'metasr'} <= set(models.list_models())


def test_registry_unknown_name_lists_registered():
    with pytest.raises(UserError, match=r"unknown model 'edsr-huge'; registered: .*edsr-baseline.*liif"):
        models.make({'name': 'edsr-huge', 'args': {}})


def test_registry_rejects_duplicates_and_bad_args():
    with pytest.raises(ValueError, match='twice'):
        models.register('mlp')(lambda: None)
    with pytest.raises(UserError, match="bad arguments for model 'mlp'"):
        models.make({'name': 'mlp', 'args': {'in_dim': 3, 'out_dim': 3, 'hidden_list': [], 'depth': 2}})


def test_make_args_override_and_load_sd():
    spec = {'name': 'mlp', 'args': {'in_dim': 4, 'out_dim': 3, 'hidden_list': [8]}}
    m = models.make(spec, args={'in_dim': 5})
    assert m.layers[0].in_features == 5 and spec['args']['in_dim'] == 4  # spec untouched
    spec['sd'] = m.state_dict()
    m2 = models.make(spec, args={'in_dim': 5}, load_sd=True)
    assert torch.equal(m2.layers[0].weight, m.layers[0].weight)
    with pytest.raises(UserError, match='does not fit'):
        models.make(spec, load_sd=True)  # in_dim 4 vs the saved 5


# ---- what the paper claims -----------------------------------------------------------------------

def _query_at(model, feat_hw, coords):
    coord = torch.tensor(coords, dtype=torch.float32).view(1, -1, 2)
    cell = torch.full_like(coord, 2 / (4 * feat_hw))
    with torch.no_grad():
        return model.query_rgb(coord, cell)[0]


@pytest.mark.parametrize('ensemble', [True, False])
def test_continuity_across_code_boundaries(ensemble):
    h = 8
    model = tiny_liif(local_ensemble=ensemble)
    with torch.no_grad():
        for p in model.imnet.parameters():
            p.mul_(4)  # larger weights make a jump between neighbouring codes obvious
        model.gen_feat(torch.rand(1, 3, h, h) * 2 - 1)
    jumps = []
    for k in range(1, h):
        b = -1 + 2 * k / h  # boundary between feature pixels k-1 and k (the nearest code changes)
        for y in (-0.3, 0.55):
            for axis in (0, 1):
                lo, hi = [y, y], [y, y]
                lo[axis], hi[axis] = b - 1e-6, b + 1e-6
                out = _query_at(model, h, [lo, hi])
                jumps.append((out[0] - out[1]).abs().max().item())
    if ensemble:
        assert max(jumps) < 1e-4
    else:
        assert min(jumps) > 1e-3


@pytest.mark.parametrize('name', ['liif', 'metasr'])
def test_chunked_query_equals_whole(name):
    if name == 'liif':
        model = tiny_liif()
    else:
        model = models.make({'name': 'metasr', 'args': {'encoder_spec': TINY_EDSR}}).eval()
    inp = torch.rand(2, 3, 7, 9) * 2 - 1
    coord = make_coord((23, 31)).expand(2, -1, -1)
    cell = make_cell(coord, (23, 31))
    with torch.no_grad():
        whole = model(inp, coord, cell)
    for bsize in (1, 37, 500, 10 ** 6):
        # a call per query is slow (each builds its table): the first 30 queries suffice
        q = 30 if bsize == 1 else coord.shape[1]
        part = batched_predict(model, inp, coord[:, :q], cell[:, :q], bsize=bsize)
        # float rounding only: a chunk of one query takes other BLAS kernels
        assert (part - whole[:, :q]).abs().max() <= 1e-6 * whole.abs().max(), bsize


@pytest.mark.parametrize('flags', [{}, {'local_ensemble': False, 'feat_unfold': False, 'cell_decode': False}])
def test_batch_elements_are_independent(flags):
    model = tiny_liif(**flags)
    inp = torch.rand(3, 3, 10, 12) * 2 - 1
    coord = torch.rand(3, 50, 2) * 2 - 1
    cell = torch.rand(3, 50, 2) * 0.1
    with torch.no_grad():
        together = model(inp, coord, cell)
        for i in range(3):
            alone = model(inp[i:i + 1], coord[i:i + 1], cell[i:i + 1])
            assert torch.allclose(alone, together[i:i + 1], atol=1e-6, rtol=0)
        changed = inp.clone()
        changed[1] = torch.rand(3, 10, 12)
        again = model(changed, coord, cell)
    assert torch.equal(again[0], together[0]) and torch.equal(again[2], together[2])
    assert not torch.allclose(again[1], together[1])


def test_python_m_models_lists_every_model_with_its_parameters():
    proc = subprocess.run([sys.executable, '-m', 'models'], capture_output=True, text=True, timeout=120,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == 0, proc.stderr
    heads = [line.split()[0] for line in proc.stdout.splitlines() if line and not line.startswith(' ')]
    assert heads == models.list_models()
    assert '    encoder_spec (required)' in proc.stdout and '    hidden_list (required)' in proc.stdout
    assert 'liif  (SR model, query layout points)' in proc.stdout
    bad = subprocess.run([sys.executable, '-m', 'models', 'nope'], capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown model 'nope'")
