import itertools

import pytest
import torch

import models
from models import fast_query
from models.fast_query import query_mode
from models.sampling import nearest_index, sample_nearest
from tests.conftest import shared_path
from utils.coord import make_cell, make_coord

PARITY = ('reference', 'liif-parity')
TINY_EDSR = {'name': 'edsr-baseline', 'args': {'n_resblocks': 1, 'n_feats': 8, 'no_upsampling': True}}
MLP = {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': [16, 16, 16]}}
FLAGS = [dict(zip(('local_ensemble', 'feat_unfold', 'cell_decode'), v))
         for v in itertools.product([True, False], repeat=3)]


def tiny(name='liif', imnet=MLP, **flags):
    args = {'encoder_spec': TINY_EDSR}
    if name == 'liif':
        args.update(imnet_spec=imnet, **flags)
    return models.make({'name': name, 'args': args})


def queries(n, h, w, size):
    """Every pixel centre of a `size` target (non-integer scale) plus points exactly on code borders."""
    coord = make_coord(size)
    cell = make_cell(coord, size)
    edges = torch.tensor([[-1 + 2 * i / h, -1 + 2 * j / w] for i in range(h + 1) for j in range(0, w + 1, 3)])
    coord = torch.cat([coord, edges.clamp(-1, 1)]).expand(n, -1, -1).clone()
    cell = torch.cat([cell, torch.full_like(edges, 0.07)]).expand(n, -1, -1).clone()
    return coord, cell


def both_paths(model, *args):
    outs = []
    for mode in ('reference', 'fast'):
        with query_mode(model, mode), torch.no_grad():
            outs.append(model(*args))
    return outs


@pytest.mark.parametrize('name', ['edsr-baseline-liif', 'metasr-edsr-baseline', 'liif-plain'])
def test_parity_vectors_both_paths(name):
    ckpt = torch.load(shared_path(*PARITY, name + '.pth'), weights_only=True)
    vectors = torch.load(shared_path(*PARITY, name + '.vectors.pt'), weights_only=True)
    model = models.make(ckpt['model'], load_sd=True).eval()
    # MetaSR: the authors' own float32 rounding is ~8e-6 at |output| ~ 8 (float64 gives 8.3e-6), either path
    tol = 1e-5 if name.startswith('metasr') else 1e-6
    with torch.no_grad():
        model.gen_feat(vectors['input'])
        for mode in ('reference', 'fast'):
            with query_mode(model, mode):
                for key, case in vectors['cases'].items():
                    err = (model.query_rgb(case['coord'], case['cell']) - case['output']).abs().max().item()
                    assert err <= tol, f"{name} {mode} {key}: {err}"


def test_nearest_index_is_sample_nearests_choice():
    h, w = 5, 8
    feat = torch.randn(2, 3, h, w)
    coord = torch.rand(2, 3000, 2) * 2.4 - 1.2
    coord[0, :h + 1, 0] = torch.linspace(-1, 1, h + 1)  # exact code borders, +-1 and beyond
    coord[1, :w + 1, 1] = torch.linspace(-1, 1, w + 1)
    row, col = nearest_index(coord, h, w)
    inside = row >= 0
    n = torch.arange(2).view(2, 1).expand_as(row)
    got = feat.permute(0, 2, 3, 1)[n, row.clamp(min=0), col.clamp(min=0)] * inside.unsqueeze(-1)
    assert torch.equal(got, sample_nearest(feat, coord))
    assert torch.equal(inside, (col >= 0)) and 0 < inside.sum() < inside.numel()


@pytest.mark.parametrize('rows_per_pass', [8192, 50])
@pytest.mark.parametrize('flags', FLAGS, ids=lambda f: ''.join(str(int(v)) for v in f.values()))
def test_fast_equals_reference_liif(flags, rows_per_pass, monkeypatch):
    monkeypatch.setattr(fast_query, 'ROWS_PER_PASS', rows_per_pass)  # 50: many chunks, odd last one
    model = tiny(**flags).eval()
    h, w = 6, 9
    inp = torch.rand(2, 3, h, w) * 2 - 1
    coord, cell = queries(2, h, w, (17, 22))  # x2.83 and x2.44
    ref, fast = both_paths(model, inp, coord, cell)
    assert fast.shape == ref.shape == (2, coord.shape[1], 3)
    assert (fast - ref).abs().max() <= 1e-6 * max(1.0, ref.abs().max().item())


def test_fast_equals_reference_without_imnet_and_with_a_single_layer():
    inp = torch.rand(2, 3, 5, 7) * 2 - 1
    coord, cell = queries(2, 5, 7, (9, 13))
    coord[:, :5] *= 1.1  # outside the map: zeros, as grid_sample's padding gives
    ref, fast = both_paths(tiny(imnet=None).eval(), inp, coord, cell)
    assert torch.equal(ref, fast) and ref.shape[-1] == 8
    single = {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': []}}
    ref, fast = both_paths(tiny(imnet=single).eval(), inp, coord, cell)
    assert (fast - ref).abs().max() <= 1e-6


@pytest.mark.parametrize('rows_per_pass', [8192, 50])
def test_fast_equals_reference_metasr(rows_per_pass, monkeypatch):
    monkeypatch.setattr(fast_query, 'ROWS_PER_PASS', rows_per_pass)
    model = tiny('metasr').eval()
    inp = torch.rand(3, 3, 7, 5) * 2 - 1
    coord, cell = queries(3, 7, 5, (20, 13))
    ref, fast = both_paths(model, inp, coord, cell)
    assert (fast - ref).abs().max() <= 1e-6 * max(1.0, ref.abs().max().item())


@pytest.mark.parametrize('rows_per_pass', [8192, 50])
@pytest.mark.parametrize('name,flags', [('liif', {}), ('liif', FLAGS[-1]), ('liif', FLAGS[2]), ('metasr', {})])
def test_fast_gradients_equal_reference(name, flags, rows_per_pass, monkeypatch):
    monkeypatch.setattr(fast_query, 'ROWS_PER_PASS', rows_per_pass)  # 50: the row-block path of training
    model = tiny(name, **flags).train()
    inp = (torch.rand(2, 3, 6, 7) * 2 - 1).requires_grad_()
    coord = torch.rand(2, 40, 2) * 2 - 1
    cell = torch.full_like(coord, 0.1)
    target = torch.rand(2, 40, 3)
    grads = []
    for mode in ('reference', 'fast'):
        model.zero_grad()
        inp.grad = None
        with query_mode(model, mode):
            (model(inp, coord, cell) - target).abs().mean().backward()
        grads.append([inp.grad.clone()] + [p.grad.clone() for p in model.parameters() if p.requires_grad])
    for g_ref, g_fast in zip(*grads):
        assert g_ref.abs().sum() > 0
        assert (g_ref - g_fast).abs().max() <= 1e-5 * max(1.0, g_ref.abs().max().item())


@pytest.mark.parametrize('name', ['liif', 'metasr'])
def test_row_windows_of_a_small_table_budget_give_the_same_result(name):
    model = tiny(name).eval()
    inp = torch.rand(2, 3, 16, 5) * 2 - 1
    coord = make_coord((50, 11)).expand(2, -1, -1)
    cell = make_cell(coord, (50, 11))
    channels = 16 if name == 'liif' else 3 * 256 + 3
    with torch.no_grad():
        whole = model(inp, coord, cell)
        model._codes.budget_mb = 3 * 2 * 5 * channels * 4 / 2 ** 20  # three feature rows of the table
        model._codes.clear()
        windows = set()
        for i in range(0, coord.shape[1], 33):  # band by band, the window moves down the map
            part = model.query_rgb(coord[:, i:i + 33], cell[:, i:i + 33])
            assert (part - whole[:, i:i + 33]).abs().max() <= 1e-6, i
            windows.add((model._codes.r0, model._codes.r1))
    assert max(r1 - r0 for r0, r1 in windows) <= 3 and len(windows) >= 5


def test_training_only_a_later_layer_still_records_gradients():
    model = tiny().train()
    for p in model.parameters():
        p.requires_grad_(False)
    model.imnet.layers[-1].weight.requires_grad_(True)
    coord, cell = queries(1, 4, 4, (8, 8))
    model(torch.rand(1, 3, 4, 4), coord, cell).sum().backward()
    assert model.imnet.layers[-1].weight.grad.abs().sum() > 0


def test_table_follows_weight_updates_and_new_features():
    model = tiny().eval()
    coord, cell = queries(1, 4, 4, (8, 8))
    with torch.no_grad():
        model.gen_feat(torch.rand(1, 3, 4, 4))
        first = model.query_rgb(coord, cell)
        model.imnet.layers[0].weight.mul_(2)  # in place, as an optimizer step does
        model.imnet.layers[0].bias.add_(1)
        second = model.query_rgb(coord, cell)
        with query_mode(model, 'reference'):
            assert (second - model.query_rgb(coord, cell)).abs().max() <= 1e-6
        model.gen_feat(torch.rand(1, 3, 4, 4))
        third = model.query_rgb(coord, cell)
        with query_mode(model, 'reference'):
            assert (third - model.query_rgb(coord, cell)).abs().max() <= 1e-6
    assert not torch.allclose(first, second) and not torch.allclose(second, third)


def test_query_mode_is_checked_restored_and_not_saved():
    model = tiny()
    with query_mode(model, 'reference'):
        assert model.query_mode == 'reference'
    assert model.query_mode == 'fast'
    model.query_mode = 'quick'
    with pytest.raises(ValueError, match='query_mode'):
        model(torch.rand(1, 3, 4, 4), torch.zeros(1, 1, 2), torch.zeros(1, 1, 2))
    assert not any('codes' in k or 'mode' in k for k in model.state_dict())


@pytest.mark.parametrize('device', ['cpu'] + (['cuda'] if torch.cuda.is_available() else []))
def test_fast_equals_reference_on_device(device):
    model = tiny().to(device).train()
    inp = (torch.rand(2, 3, 9, 7) * 2 - 1).to(device)
    coord, cell = queries(2, 9, 7, (31, 20))
    coord, cell = coord.to(device), cell.to(device)
    ref, fast = both_paths(model.eval(), inp, coord, cell)
    assert (fast - ref).abs().max() <= 1e-6 * max(1.0, ref.abs().max().item())
    grads = []
    for mode in ('reference', 'fast'):
        model.zero_grad()
        with query_mode(model, mode):
            model(inp, coord, cell).square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.requires_grad])
    for g_ref, g_fast in zip(*grads):
        assert (g_ref - g_fast).abs().max() <= 1e-5 * max(1.0, g_ref.abs().max().item())
