import copy
import itertools
import pickle
import threading

import pytest
import torch

import models
from models import fast_query
from models.fast_query import query_mode
from models.sampling import corner_shifts, nearest_index, sample_nearest
from tests.conftest import shared_path
from tests.helpers import one_thread  # noqa: F401  (fixture)
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


@pytest.mark.parametrize('flags', [FLAGS[0], FLAGS[-1]], ids=['111', '000'])
def test_fast_row_blocks_of_a_chunk_equal_reference(flags, monkeypatch):
    """CPU chunks run their MLP in row blocks (here 37 per thread, the last one of a chunk short)."""
    monkeypatch.setattr(fast_query, 'ROWS_PER_PASS', 400)
    monkeypatch.setattr(fast_query, 'BLOCK_ROWS_PER_THREAD', 37)
    assert fast_query.block_rows() % 37 == 0 and 400 % fast_query.block_rows() != 0
    model = tiny(**flags).eval()
    inp = torch.rand(2, 3, 6, 9) * 2 - 1
    coord, cell = queries(2, 6, 9, (17, 22))
    ref, fast = both_paths(model, inp, coord, cell)
    assert (fast - ref).abs().max() <= 1e-6 * max(1.0, ref.abs().max().item())


def test_ones_column_kept_across_reuse_and_width_changes():
    """The ones column is filled once per buffer and width, and is 1 in every view handed out."""
    scratch, like = fast_query.Scratch(), torch.empty(0)
    for rows, cols in [(10, 5), (12, 4), (3, 4), (20, 5), (6, 5)]:  # same size, new width, smaller, larger
        buf = fast_query.ones_buffer(scratch, 'a', rows, cols, like)
        assert buf.shape == (rows, cols + 1) and torch.equal(buf[:, -1], torch.ones(rows))
        buf[:, :-1] = 3.0  # what a layer writes beside the column


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
def test_row_windows_of_a_small_table_budget_give_the_same_result(name, monkeypatch):
    model = tiny(name).eval()
    inp = torch.rand(2, 3, 16, 5) * 2 - 1
    coord = make_coord((50, 11)).expand(2, -1, -1)
    cell = make_cell(coord, (50, 11))
    channels = 16 + 1 if name == 'liif' else 3 * 256 + 3  # LIIF: one more for the ones column
    built = []
    real_build = fast_query.build_table

    def spy(feat, conv, r0, r1):
        built.append((r0, r1))
        return real_build(feat, conv, r0, r1)

    monkeypatch.setattr(fast_query, 'build_table', spy)
    monkeypatch.setattr(fast_query, 'ROWS_PER_PASS', 64)  # many chunks per call, each within 3 rows
    with torch.no_grad():
        feat = model.encode(inp)
        whole = model.query(feat, coord, cell)
        assert built == [(0, 16)]  # one table per call, all rows reached
        built.clear()
        small = model.query(feat, coord, cell, table_mb=3 * 2 * 5 * channels * 4 / 2 ** 20)  # three rows
    assert (small - whole).abs().max() <= 1e-6
    assert max(r1 - r0 for r0, r1 in built) <= 3 and len(built) >= 5
    assert built == sorted(built) and built[0][0] == 0 and built[-1][1] == 16  # moving down the map


@pytest.mark.parametrize('name', ['liif', 'metasr'])
def test_a_call_builds_the_table_of_exactly_the_rows_its_queries_reach(name, monkeypatch):
    model = tiny(name).eval()
    h, w = 12, 7
    feat = model.encode(torch.rand(1, 3, h, w) * 2 - 1).detach()
    coord, cell = queries(1, h, w, (40, 23))
    spans = []
    monkeypatch.setattr(fast_query, 'build_table', lambda f, conv, r0, r1: spans.append((r0, r1)) or
                        fast_query.CodeTable(torch.zeros(f.shape[0] * (r1 - r0) * w, conv.channels), r0, r1, w))
    for lo, hi in ((-1, -0.8), (-0.24, 0.3), (0.5, 1), (1 / 6, 1 / 6 + 1e-7)):  # (1 / 6: a code border)
        band = (coord[..., 0] >= lo) & (coord[..., 0] <= hi)
        crd, cll = coord[band].view(1, -1, 2), cell[band].view(1, -1, 2)
        if name == 'liif':
            chosen = (crd + corner_shifts(h, w, True, crd).view(-1, 1, 1, 2)).clamp(-1 + 1e-6, 1 - 1e-6)
        else:
            chosen = (crd - cll / 2 + 1e-6).clamp(-1 + 1e-6, 1 - 1e-6)
        rows = nearest_index(chosen, h, w)[0]
        spans.clear()
        with torch.no_grad():
            model.query(feat, crd, cll)
        assert spans == [(rows.min().item(), rows.max().item() + 1)], (lo, hi)


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


# ---- every way PyTorch runs a model: a query keeps no state between calls -------------------------

PARITY_MODELS = ['edsr-baseline-liif', 'liif-plain', 'metasr-edsr-baseline']


def parity_model(name):
    ckpt = torch.load(shared_path(*PARITY, name + '.pth'), weights_only=True)
    vectors = torch.load(shared_path(*PARITY, name + '.vectors.pt'), weights_only=True)
    return models.make(ckpt['model'], load_sd=True).eval(), vectors


def parity_tol(name, out):
    # MetaSR: the authors' own float32 rounding is ~8e-6 at |output| ~ 8
    return (1e-5 if name.startswith('metasr') else 1e-6) * max(1.0, out.abs().max().item())


@pytest.mark.parametrize('grad_mode', ['no_grad', 'inference_mode'])
@pytest.mark.parametrize('name', PARITY_MODELS)
def test_model_call_matches_the_authors_vectors_in_each_grad_mode(name, grad_mode):
    model, vectors = parity_model(name)
    context = torch.no_grad if grad_mode == 'no_grad' else torch.inference_mode
    for key, case in vectors['cases'].items():
        outs = []
        for mode in ('reference', 'fast'):
            with query_mode(model, mode), context():
                outs.append(model(vectors['input'], case['coord'], case['cell']))
                assert model.feat is None  # forward stores nothing
            err = (outs[-1] - case['output']).abs().max().item()
            assert err <= parity_tol(name, case['output']), f"{mode} {key}: {err}"
        assert (outs[0] - outs[1]).abs().max() <= parity_tol(name, outs[0])
    with context():  # the authors' stateful pair
        model.gen_feat(vectors['input'])
        case = next(iter(vectors['cases'].values()))
        assert (model.query_rgb(case['coord'], case['cell']) - case['output']).abs().max() \
            <= parity_tol(name, case['output'])


@pytest.mark.parametrize('name', PARITY_MODELS)
def test_gradients_of_both_paths_agree_on_the_parity_models(name):
    model, vectors = parity_model(name)
    case = {k: v[:, ::17] for k, v in next(iter(vectors['cases'].values())).items()}  # a spread-out subset
    inp = vectors['input'].clone().requires_grad_()
    target = torch.rand_like(case['output'])
    grads = []
    for mode in ('reference', 'fast'):
        model.zero_grad()
        inp.grad = None
        with query_mode(model, mode):
            out = model(inp, case['coord'], case['cell'])
            assert (out - case['output']).abs().max() <= parity_tol(name, case['output'])
            (out - target).abs().mean().backward()
        grads.append([inp.grad.clone()] + [p.grad.clone() for p in model.imnet.parameters()])
    for g_ref, g_fast in zip(*grads):
        assert g_ref.abs().sum() > 0
        assert (g_ref - g_fast).abs().max() <= 1e-5 * max(1.0, g_ref.abs().max().item())


def _in_two_threads(jobs):
    """Run two callables concurrently without autograd, each twice; their last results, or the first error."""
    results, errors = [None, None], []
    start = threading.Barrier(2)

    def work(i):
        try:
            start.wait()
            for _ in range(2):
                with torch.no_grad():  # grad mode is per thread
                    results[i] = jobs[i]()
        except Exception as e:  # noqa: BLE001  (re-raised in the test's thread)
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


@pytest.mark.parametrize('how', ['forward', 'replicas-forward', 'replicas-query_rgb'])
@pytest.mark.parametrize('name', PARITY_MODELS)
def test_concurrent_queries_from_two_threads_equal_serial_ones(name, how, monkeypatch, one_thread):
    monkeypatch.setattr(fast_query, 'ROWS_PER_PASS', 1024)  # many chunks per call: long, interleaved queries
    model, vectors = parity_model(name)
    # nn.DataParallel's replicate() builds its replicas with this: they share the original's __dict__ objects
    runners = [model._replicate_for_data_parallel() for _ in range(2)] if how.startswith('replicas') else [model] * 2
    inputs = [vectors['input'], vectors['input'].flip(-1)]
    cases = list(vectors['cases'].values())
    with torch.no_grad():
        serial = [model(inputs[i], cases[i]['coord'], cases[i]['cell']) for i in range(2)]
        if how == 'replicas-query_rgb':  # the authors' API: each replica keeps its own feature map
            for runner, inp in zip(runners, inputs):
                runner.gen_feat(inp)
            jobs = [lambda i=i: runners[i].query_rgb(cases[i]['coord'], cases[i]['cell']) for i in range(2)]
        else:
            jobs = [lambda i=i: runners[i](inputs[i], cases[i]['coord'], cases[i]['cell']) for i in range(2)]
        together = _in_two_threads(jobs)
    for i in range(2):
        assert (together[i] - serial[i]).abs().max() <= 1e-6 * max(1.0, serial[i].abs().max().item()), i
    assert (together[0] - cases[0]['output']).abs().max() <= parity_tol(name, cases[0]['output'])


def _edit_by_data_mul(model):
    for p in model.imnet.parameters():
        p.data.mul_(1.5)


def _edit_by_vector_to_parameters(model):
    params = list(model.imnet.parameters())
    vec = torch.nn.utils.parameters_to_vector(params)
    torch.nn.utils.vector_to_parameters(vec * 0.5 + 0.01, params)


@pytest.mark.parametrize('edit', [_edit_by_data_mul, _edit_by_vector_to_parameters], ids=['data-mul', 'vector'])
@pytest.mark.parametrize('name', ['liif', 'metasr'])
def test_queries_follow_weights_edited_outside_autograd(name, edit):
    model = tiny(name).eval()
    inp = torch.rand(1, 3, 6, 5) * 2 - 1
    coord, cell = queries(1, 6, 5, (13, 11))
    with torch.no_grad():
        model.gen_feat(inp)
        before = model.query_rgb(coord, cell)
        edit(model)  # neither way bumps the parameters' version counters
        after = model.query_rgb(coord, cell)
        fresh = tiny(name).eval()
        fresh.load_state_dict(model.state_dict())
        expected = fresh(inp, coord, cell)
    assert (after - expected).abs().max() <= 1e-6 * max(1.0, expected.abs().max().item())
    assert (after - before).abs().max() > 1e-2


@pytest.mark.parametrize('name', ['liif', 'metasr'])
def test_copies_and_pickles_after_a_query_give_the_same_outputs(name, tmp_path):
    model = tiny(name).eval()
    inp = torch.rand(1, 3, 6, 5) * 2 - 1
    coord, cell = queries(1, 6, 5, (13, 11))
    with torch.no_grad():
        model.gen_feat(inp)
        want = model.query_rgb(coord, cell)
        assert torch.equal(model(inp, coord, cell), want)
    torch.save(model, tmp_path / 'model.pt')
    copies = [copy.deepcopy(model), pickle.loads(pickle.dumps(model)),
              torch.load(tmp_path / 'model.pt', weights_only=False)]
    for other in copies:
        with torch.no_grad():
            assert torch.equal(other.query_rgb(coord, cell), want)
            assert torch.equal(other(inp, coord, cell), want)


def test_encode_and_query_are_the_pure_interface():
    model = tiny().eval()
    inp = torch.rand(2, 3, 6, 5) * 2 - 1
    coord, cell = queries(2, 6, 5, (13, 11))
    with torch.no_grad():
        feat = model.encode(inp)
        out = model.query(feat, coord, cell)
        assert model.feat is None and torch.equal(model(inp, coord, cell), out)
        assert torch.equal(model.gen_feat(inp), feat) and torch.equal(model.query_rgb(coord, cell), out)
        other = model.query(model.encode(inp.flip(-1)), coord, cell)  # does not disturb the stored map
        assert torch.equal(model.query_rgb(coord, cell), out) and not torch.allclose(other, out)
    with pytest.raises(RuntimeError, match='gen_feat'):
        tiny().query_rgb(coord, cell)


def test_int8_query_is_close_to_the_fast_query_and_only_for_inference():
    torch.manual_seed(0)
    model = tiny(imnet={'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': [64, 64, 64]}}).eval()
    inp = torch.rand(1, 3, 7, 9) * 2 - 1
    coord, cell = queries(1, 7, 9, (17, 23))
    with torch.no_grad():
        feat = model.encode(inp)
        want = model.query(feat, coord, cell)
        got = model.query_int8(feat, coord, cell)
    err = (got - want).abs()
    # int8 weights and activations: ~1% of the output's spread, not float rounding and not garbage
    assert 1e-4 < err.mean() / want.std() < 0.02 and err.max() / want.std() < 0.1, (err.mean(), err.max(), want.std())
    assert model.has_int8_query() and not tiny('metasr').has_int8_query()
    with pytest.raises(ValueError, match='inference'):
        model.query_int8(model.encode(inp), coord, cell)          # autograd on
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16), pytest.raises(ValueError, match='autocast'):
        model.query_int8(feat, coord, cell)


def test_int8_query_needs_a_hidden_layer_to_quantise():
    for hidden, expected in (([], False), ([16], False), ([16, 16], True)):
        model = tiny(imnet={'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': hidden}})
        assert model.has_int8_query() is expected, hidden
    with torch.no_grad(), pytest.raises(NotImplementedError, match='hidden layers'):
        model = tiny(imnet={'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': []}})
        model.query_int8(model.encode(torch.rand(1, 3, 4, 4)), *queries(1, 4, 4, (5, 5)))


def test_int8_layers_keep_a_relu_after_the_last_linear():
    torch.manual_seed(0)
    modules = [torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3), torch.nn.ReLU()]
    layers = fast_query.Int8Layers.of(modules)
    x = torch.randn(50, 8)
    with torch.no_grad():
        want = torch.nn.Sequential(*modules)(x)
        got = layers.run(x.clone(), None)
        got_t = layers.run(x.clone(), None, torch.empty(3, 50))
    assert want.min() == 0 and got.min() == 0 and got_t.min() == 0
    assert (got - want).abs().max() < 0.05 and torch.equal(got_t, got)


def test_int8_layers_quantise_every_linear_but_the_last_and_fuse_their_relus():
    torch.manual_seed(0)
    modules = [torch.nn.Linear(16, 32), torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3)]
    layers = fast_query.Int8Layers.of(modules)
    assert [kind for kind, _ in layers.steps] == ['int8', 'int8_relu', 'fp32']
    x = torch.randn(300, 16)
    with torch.no_grad():
        want = torch.nn.Sequential(*modules)(x)
        got = layers.run(x.clone(), None)
        got_t = layers.run(x.clone(), None, torch.empty(3, 300))   # the last layer written transposed
    assert (got - want).abs().max() / want.std() < 0.05
    torch.testing.assert_close(got_t, got, rtol=0, atol=1e-5)
