"""LMF (models/lmf.py): the authors' vectors through their forward and through encode + query; keys, quirks, training."""
import json
import os

import pytest
import torch
import yaml

import models
import train_liif
from inference.bounded import batched_predict, upscale
from tests.conftest import ROOT, shared_path
from tests.helpers import max_scaled_error, one_thread  # noqa: F401  (fixture)
from utils.checkpoint import load_checkpoint
from utils.errors import UserError
from utils.coord import make_coord
from utils.testtime import TestTime

PARITY = ('reference', 'lmf-parity')
NAMES = ['lmliif-edsr-baseline', 'lmlte-edsr-baseline']
CASES = {'24x24', '30x41', 'x8-cellclip'}
TOL = 1e-5  # max |got - want| / max(1, |want|)

# small ops on a small shared CPU: one intra-op thread (tests/helpers.py)
pytestmark = pytest.mark.usefixtures('one_thread')


def _load(name):
    ckpt = torch.load(shared_path(*PARITY, name + '.pth'), weights_only=True)['model']
    vectors = torch.load(shared_path(*PARITY, name + '.vectors.pt'), weights_only=True)
    assert set(vectors['cases']) == CASES
    return models.make(ckpt, load_sd=True).eval(), vectors


def _latent_pixels(vectors):
    return vectors['feat'].shape[-2] * vectors['feat'].shape[-1]


# ---- the authors' forward (eval mode, what the vectors record) -------------------------------------

@pytest.mark.parametrize('name', NAMES)
def test_authors_forward_meets_the_vectors(name):
    model, vectors = _load(name)
    for channels_last in (True, False):  # the encoder's memory format; the head is the same code either way
        model.channels_last = channels_last
        with torch.no_grad():
            assert max_scaled_error(model.features(vectors['input']), vectors['feat']) <= TOL
            for key, case in vectors['cases'].items():
                if channels_last or key == 'x8-cellclip':
                    out = model(vectors['input'], case['coord'], case['cell'])
                    assert out.shape == case['output'].shape
                    assert max_scaled_error(out, case['output']) <= TOL, (key, channels_last)
    assert model(vectors['input']) is None  # the authors' encoder-only call
    case = vectors['cases']['24x24']
    h, w = vectors['feat'].shape[-2:]
    centres = make_coord((h, w), flatten=False).unsqueeze(0)
    with torch.no_grad():  # inp_coord: the latent centres the offsets are measured from
        assert torch.equal(model(vectors['input'], case['coord'], case['cell'], inp_coord=centres),
                           model(vectors['input'], case['coord'], case['cell']))
        moved = model(vectors['input'], case['coord'], case['cell'], inp_coord=centres + 0.05)
    assert (moved - case['output']).abs().max() > 1e-3


@pytest.mark.parametrize('name', NAMES)
def test_authors_forward_needs_hw_queries_and_lmlte_batches_exactly_hw(name):
    model, vectors = _load(name)
    inp, case = vectors['input'], vectors['cases']['24x24']
    hw = _latent_pixels(vectors)
    with torch.no_grad(), pytest.raises(ValueError, match=rf"h\*w = {hw} query cells .* got {hw - 1}"):
        model(inp, case['coord'][:, :hw - 1], case['cell'][:, :hw - 1])
    pair = torch.cat([inp, inp.flip(-1)])
    coord, cell = case['coord'][:, :hw + 1].expand(2, -1, -1), case['cell'][:, :hw + 1].expand(2, -1, -1)
    with torch.no_grad():
        if name.startswith('lmlte'):
            with pytest.raises(ValueError, match=rf"batch of 2 only with exactly h\*w = {hw} queries, got {hw + 1}"):
                model(pair, coord, cell)
            coord, cell = coord[:, :hw], cell[:, :hw]
        together = model(pair, coord, cell)
        for i in range(2):
            assert torch.allclose(together[i:i + 1], model(pair[i:i + 1], coord[:1], cell[:1]), atol=1e-6, rtol=0)
    assert max_scaled_error(together[:1], case['output'][:, :coord.shape[1]]) <= TOL


@pytest.mark.parametrize('name', NAMES)
def test_authors_forward_modulates_latent_pixel_k_with_query_cell_k(name):
    """Only the first h*w cells feed the modulations: changing them moves every output, changing a later one only its own."""
    model, vectors = _load(name)
    case = vectors['cases']['30x41']
    hw = _latent_pixels(vectors)
    with torch.no_grad():
        first = case['cell'].clone()
        first[:, :hw] *= 2
        moved = model(vectors['input'], case['coord'], first)
        later = case['cell'].clone()
        later[:, hw + 5] *= 2
        one = model(vectors['input'], case['coord'], later)
    assert ((moved - case['output'])[:, hw:].abs().amax(dim=-1) > 1e-4).all()
    changed = (one - case['output']).abs().amax(dim=-1)[0] > 1e-6
    assert changed.nonzero().flatten().tolist() == [hw + 5]


@pytest.mark.parametrize('name', NAMES)
def test_authors_forward_cell_k_reaches_exactly_the_queries_around_latent_pixel_k(name):
    model, vectors = _load(name)
    case = vectors['cases']['30x41']
    h, w = vectors['feat'].shape[-2:]
    i, j = 5, 7
    k = i * w + j
    cell = case['cell'].clone()
    cell[:, k] *= 3
    with torch.no_grad():
        out = model(vectors['input'], case['coord'], cell)
    changed = (out - case['output']).abs().amax(dim=-1)[0] > 1e-7
    changed[k] = False  # query k's own render also sees its cell
    centre = torch.tensor([-1 + (2 * i + 1) / h, -1 + (2 * j + 1) / w])
    dist = ((case['coord'][0] - centre) * torch.tensor([h, w]) / 2).abs()  # in latent pixels
    inside = (dist < 0.5).all(dim=-1)
    assert inside.sum() >= 4 and changed[inside].all()  # queries in the pixel read it at one corner at least
    assert not changed[(dist >= 1).any(dim=-1)].any()  # and no corner reaches it from a pixel away


# ---- the framework's path: encode once, then query any queries -----------------------------------

@pytest.mark.parametrize('name', NAMES)
def test_encode_query_meets_the_vectors_on_any_subset_and_chunking(name):
    model, vectors = _load(name)
    hw = _latent_pixels(vectors)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        state = model.encode(vectors['input'])
        for key, case in vectors['cases'].items():
            coord, cell, want = case['coord'], case['cell'], case['output']
            q = coord.shape[1]
            assert max_scaled_error(model.query(state, coord, cell), want) <= TOL, key
            few = torch.randperm(q, generator=gen)[:hw // 3]  # fewer than h*w, in random order
            assert max_scaled_error(model.query(state, coord[:, few], cell[:, few]), want[:, few]) <= TOL, key
            cuts = [0, 1, 7, 100, q // 2 + 3, q]
            parts = [model.query(state, coord[:, a:b], cell[:, a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
            assert max_scaled_error(torch.cat(parts, dim=1), want) <= TOL, key
        # one output row per call: each call's modulation window is a narrow band of the latent map
        case = vectors['cases']['x8-cellclip']
        got = batched_predict(model, vectors['input'], case['coord'], case['cell'], bsize=97)
        assert max_scaled_error(got, case['output']) <= TOL


@pytest.mark.parametrize('name', NAMES)
def test_upscale_with_the_recommended_test_time_options_meets_the_vectors(name):
    """The x8-cellclip case is upscale's x8 with the cell enlarged by max(8 / 4, 1) (the model's own recommendation)."""
    model, vectors = _load(name)
    tt = model.test_time()
    assert tt == TestTime(cell_max_scale=4, window=None)
    inp = vectors['input']
    h, w = inp.shape[-2:]
    for key, size in (('x8-cellclip', (8 * h, 8 * w)), ('30x41', (30, 41))):
        want = vectors['cases'][key]['output'].view(1, *size, 3).permute(0, 3, 1, 2)
        assert max_scaled_error(upscale(model, inp, size, bsize=size[1] * 5, test_time=tt), want) <= TOL, key
    plain = upscale(model, inp, (8 * h, 8 * w))  # without the enlargement: another cell, other values
    assert (plain - vectors['cases']['x8-cellclip']['output'].view(1, 8 * h, 8 * w, 3).permute(0, 3, 1, 2)
            ).abs().max() > 1e-3


@pytest.mark.parametrize('head', ['lmliif', 'lmlte'])
def test_a_swinir_encoder_recommends_window_padding(head):
    spec = json.load(open(shared_path(*PARITY, 'state_dict_keys.json')))[f'swinir-{head}']['spec']
    with torch.device('meta'):
        model = models.make(spec)
    assert model.test_time() == TestTime(cell_max_scale=4, window=8)


@pytest.mark.parametrize('name', NAMES)
def test_query_over_the_table_budget_splits_and_stays_exact(name, monkeypatch):
    model, vectors = _load(name)
    case = vectors['cases']['x8-cellclip']  # 9216 queries: more than one pass, so the call may split
    windows = []
    latent_map = model._latent_map
    monkeypatch.setattr(model, '_latent_map', lambda state, window, rc: windows.append(window) or
                        latent_map(state, window, rc))
    with torch.no_grad():
        state = model.encode(vectors['input'])
        out = model.query(state, case['coord'], case['cell'], table_mb=1e-3)
    assert max_scaled_error(out, case['output']) <= TOL
    h, w = vectors['feat'].shape[-2:]
    assert len(windows) == 2 and all(r1 - r0 < h for r0, r1, _, _ in windows), windows
    assert windows[0][0] == 0 and windows[1][1] == h and all(c0 == 0 and c1 == w for _, _, c0, c1 in windows)


@pytest.mark.parametrize('name', NAMES)
def test_query_takes_each_querys_own_cell(name):
    """Queries of two cases (two cells) interleaved in one call: each meets its own case's vector."""
    model, vectors = _load(name)
    a, b = vectors['cases']['24x24'], vectors['cases']['x8-cellclip']
    q = a['coord'].shape[1]
    coord = torch.stack([a['coord'][:, :q], b['coord'][:, 7:7 + q]], dim=2).view(1, 2 * q, 2)
    cell = torch.stack([a['cell'][:, :q], b['cell'][:, 7:7 + q]], dim=2).view(1, 2 * q, 2)
    want = torch.stack([a['output'][:, :q], b['output'][:, 7:7 + q]], dim=2).view(1, 2 * q, 3)
    with torch.no_grad():
        out = model.query(model.encode(vectors['input']), coord, cell)
    assert max_scaled_error(out, want) <= TOL


@pytest.mark.parametrize('name', NAMES)
def test_query_on_a_batch_with_a_cell_per_image_and_fewer_than_hw_queries(name):
    model, vectors = _load(name)
    inp = vectors['input']
    cases = [vectors['cases'][k] for k in ('30x41', 'x8-cellclip')]
    few = _latent_pixels(vectors) // 2
    idx = [torch.arange(3, 3 + few), torch.arange(500, 500 + 3 * few, 3)]
    coord = torch.cat([c['coord'][:, i] for c, i in zip(cases, idx)])
    cell = torch.cat([c['cell'][:, i] for c, i in zip(cases, idx)])
    third = inp.flip(-1) * 0.5
    before = dict(vars(model))
    with torch.no_grad():
        out = model.query(model.encode(torch.cat([inp, inp, third])), torch.cat([coord, coord[:1]]),
                          torch.cat([cell, cell[:1]]))
        alone = model.query(model.encode(third), coord[:1], cell[:1])
    for i, (c, ix) in enumerate(zip(cases, idx)):
        assert max_scaled_error(out[i:i + 1], c['output'][:, ix]) <= TOL, i
    assert torch.allclose(out[2:], alone, atol=1e-6, rtol=0)
    assert (out[2:] - out[:1]).abs().max() > 1e-2
    assert vars(model).keys() == before.keys() and model.feat is None  # nothing kept between calls
    with torch.no_grad():
        assert model.query(model.encode(inp), coord[:1, :0], cell[:1, :0]).shape == (1, 0, 3)


@pytest.mark.parametrize('name', NAMES)
def test_query_at_borders_outside_and_on_code_boundaries_matches_the_authors_forward(name):
    model, vectors = _load(name)
    h, w = vectors['feat'].shape[-2:]
    gen = torch.Generator().manual_seed(5)
    rand = torch.rand(1, 400, 2, generator=gen) * 2.4 - 1.2
    edges = torch.tensor([-1 + 2 * k / h for k in range(h + 1)])
    bound = torch.stack([edges.repeat_interleave(9), torch.linspace(-1, 1, 9).repeat(h + 1)], dim=-1)
    coord = torch.cat([rand, bound.unsqueeze(0), bound.flip(-1).unsqueeze(0)], dim=1)
    coord = coord[:, coord[0, :, 0].argsort()]  # raster-like order: narrow windows per chunk
    cell = torch.full_like(coord, 2 / (3 * h))
    with torch.no_grad():
        want = model(vectors['input'], coord, cell)
        got = batched_predict(model, vectors['input'], coord, cell, bsize=60)
    assert max_scaled_error(got, want) <= 1e-6


@pytest.mark.parametrize('head', ['lmliif', 'lmlte'])
def test_flags_off_give_the_single_nearest_code_without_cell_or_latent_code(head):
    """local_ensemble, cell_decode, mod_input (and feat_unfold) off, written out by hand for one nearest pixel."""
    encoder = {'name': 'edsr-baseline', 'args': {'n_resblocks': 1, 'n_feats': 6, 'no_upsampling': True}}
    args = {'encoder_spec': encoder, 'local_ensemble': False, 'cell_decode': False, 'mod_input': False,
            'imnet_spec': {'name': 'lmmlp', 'args': {'out_dim': 3, 'hidden_dim': 4, 'hidden_depth': 2}},
            'hypernet_spec': {'name': 'mlp', 'args': {'out_dim': 1, 'hidden_list': [10]}}}
    args.update({'feat_unfold': False} if head == 'lmliif' else {'hidden_dim': 8})
    model = models.make({'name': head, 'args': args}).eval()
    inp = torch.rand(1, 3, 5, 7) * 2 - 1
    coord = torch.rand(1, 40, 2) * 2 - 1
    with torch.no_grad():
        feat = model.features(inp)
        h, w = feat.shape[-2:]
        i = ((coord[0, :, 0] + 1) * h / 2).floor().long().clamp(0, h - 1)
        j = ((coord[0, :, 1] + 1) * w / 2).floor().long().clamp(0, w - 1)
        centre = torch.stack([-1 + (2 * i + 1) / h, -1 + (2 * j + 1) / w], dim=-1)
        rel = (coord[0] - centre) * torch.tensor([h, w])
        if head == 'lmliif':
            code = feat[0, :, i, j].T
            want = model.imnet(torch.cat([code, rel], dim=-1), model.hypernet(code))
        else:
            amp, freq = model.coef(feat)[0, :, i, j].T, model.freq(feat)[0, :, i, j].T
            g = freq[:, 0::2] + freq[:, 1::2]
            mod = model.hypernet(amp * torch.cat([torch.cos(torch.pi * g), torch.sin(torch.pi * g)], dim=-1))
            g = freq[:, 0::2] * rel[:, :1] + freq[:, 1::2] * rel[:, 1:]
            skip = torch.nn.functional.grid_sample(inp, coord.flip(-1).unsqueeze(1), mode='bilinear',
                                                   padding_mode='border', align_corners=False)[0, :, 0].T
            want = model.imnet(amp * torch.cat([torch.cos(torch.pi * g), torch.sin(torch.pi * g)], dim=-1), mod) + skip
        assert torch.allclose(model.query(model.encode(inp), coord[:, :11], None), want[None, :11], atol=1e-5, rtol=0)
        assert torch.allclose(model(inp, coord), want[None], atol=1e-5, rtol=0)


# ---- training mode ---------------------------------------------------------------------------------

@pytest.mark.parametrize('name', NAMES)
def test_training_mode_is_the_same_mathematics_in_one_piece_and_trains_every_weight(name, monkeypatch):
    model, vectors = _load(name)
    inp, case = vectors['input'], vectors['cases']['30x41']
    pieces = []
    render = model._render
    monkeypatch.setattr(model, '_render', lambda state, latent, window, coord, *rest: pieces.append(coord.shape[1])
                        or render(state, latent, window, coord, *rest))
    with torch.no_grad():
        evaluated = model(inp, case['coord'], case['cell'], bsize=500)
    assert pieces == [410, 410, 410]  # the authors' equal chunks: ceil(1230 / ceil(1230 / 500))
    model.train()
    pieces.clear()
    out = model(inp, case['coord'], case['cell'], bsize=500)
    assert pieces == [1230]
    assert torch.equal(out.detach(), evaluated)  # LMF.md: the authors' two routines differ by 0.0
    assert max_scaled_error(out.detach(), case['output']) <= TOL
    (out - case['output']).abs().mean().backward()
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any(n.startswith('encoder.') for n in trained) and 'imnet.layers.0.weight' in trained
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, n


# ---- the render MLP -----------------------------------------------------------------------------

def test_lmmlp_modulates_each_hidden_layer_as_one_plus_scale_then_shift():
    m = models.make({'name': 'lmmlp', 'args': {'in_dim': 2, 'out_dim': 1, 'hidden_dim': 3, 'hidden_depth': 2}})
    assert [k for k in m.state_dict()] == [f'layers.{i}.{p}' for i in (0, 2, 4) for p in ('weight', 'bias')]
    assert m.mod_dim == 12
    x, mod = torch.randn(5, 2), torch.randn(5, 12)
    (w0, b0), (w1, b1), (w2, b2) = [(m.layers[i].weight, m.layers[i].bias) for i in (0, 2, 4)]
    h = torch.relu((x @ w0.T + b0) * (1 + mod[:, 0:3]) + mod[:, 6:9])
    h = torch.relu((h @ w1.T + b1) * (1 + mod[:, 3:6]) + mod[:, 9:12])
    with torch.no_grad():
        assert torch.allclose(m(x, mod), h @ w2.T + b2, atol=1e-6, rtol=0)
        plain = torch.relu(torch.relu(x @ w0.T + b0) @ w1.T + b1) @ w2.T + b2
        assert torch.allclose(m(x), plain, atol=1e-6, rtol=0)
    shifts_only = models.make({'name': 'lmmlp', 'args': {'in_dim': 2, 'out_dim': 1, 'hidden_dim': 3,
                                                         'hidden_depth': 2, 'mod_scale': False}})
    shifts_only.load_state_dict(m.state_dict())
    assert shifts_only.mod_dim == 6
    with torch.no_grad():
        h = torch.relu(torch.relu(x @ w0.T + b0 + mod[:, 0:3]) @ w1.T + b1 + mod[:, 3:6])
        assert torch.allclose(shifts_only(x, mod[:, :6]), h @ w2.T + b2, atol=1e-6, rtol=0)
    conv = models.make({'name': 'lmmlp', 'args': {'in_dim': 2, 'out_dim': 1, 'hidden_dim': 3, 'hidden_depth': 2,
                                                  'use_conv': True}})
    assert conv.layers[0].weight.shape == (3, 2, 1, 1)
    conv.load_state_dict({k: v.view(*v.shape, 1, 1) if k.endswith('weight') else v for k, v in m.state_dict().items()})
    with torch.no_grad():
        assert torch.equal(conv(x, mod), m(x, mod))
    with pytest.raises(UserError, match='mod_up_merge'):
        models.make({'name': 'lmmlp', 'args': {'in_dim': 2, 'out_dim': 1, 'hidden_dim': 3, 'hidden_depth': 2,
                                               'mod_up_merge': True}})


# ---- the released configurations ------------------------------------------------------------------

RELEASED = ['edsr-baseline-lmliif', 'edsr-baseline-lmlte', 'rdn-lmliif', 'rdn-lmlte', 'swinir-lmliif', 'swinir-lmlte']


@pytest.mark.parametrize('name', RELEASED)
def test_state_dict_keys_and_shapes_of_the_released_configs(name):
    released = json.load(open(shared_path(*PARITY, 'state_dict_keys.json')))
    assert sorted(released) == sorted(RELEASED)
    entry = released[name]
    with torch.device('meta'):  # shapes only
        model = models.make(entry['spec'])
    assert [[k, list(v.shape)] for k, v in model.state_dict().items()] == entry['state_dict']
    assert sum(p.numel() for p in model.parameters()) == entry['num_params_all']
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == entry['num_params_trainable']


def test_hypernet_out_dim_is_the_models_and_bad_specs_are_user_errors():
    encoder = {'name': 'edsr-baseline', 'args': {'n_resblocks': 1, 'n_feats': 8, 'no_upsampling': True}}
    lmmlp = {'name': 'lmmlp', 'args': {'out_dim': 3, 'hidden_dim': 4, 'hidden_depth': 1}}
    hypernet = {'name': 'mlp', 'args': {'out_dim': 1, 'hidden_list': [8]}}
    # LMF.md: the config's out_dim is replaced by 2 * hd * depth (+ the latent code), its hidden_list kept
    liif = models.make({'name': 'lmliif', 'args': {'encoder_spec': encoder, 'imnet_spec': lmmlp,
                                                   'hypernet_spec': hypernet, 'mod_input': True}})
    assert [tuple(p.shape) for p in liif.hypernet.parameters()] == [(8, 8 * 9 + 2), (8,), (2 * 4 + 4, 8), (12,)]
    assert tuple(liif.imnet.layers[0].weight.shape) == (4, 4 + 2 + 2)
    lte = models.make({'name': 'lmlte', 'args': {'encoder_spec': encoder, 'imnet_spec': lmmlp, 'hidden_dim': 6,
                                                 'hypernet_spec': hypernet, 'mod_input': True, 'cell_decode': False}})
    assert [tuple(p.shape) for p in lte.hypernet.parameters()] == [(8, 6), (8,), (2 * 4 + 8, 8), (16,)]
    assert tuple(lte.phase.weight.shape) == (3, 2) and tuple(lte.imphase.weight.shape) == (2, 2)
    with pytest.raises(UserError, match='needs both imnet_spec and hypernet_spec'):
        models.make({'name': 'lmliif', 'args': {'encoder_spec': encoder, 'imnet_spec': lmmlp}})
    with pytest.raises(UserError, match="must be an 'lmmlp'"):
        models.make({'name': 'lmlte', 'args': {'encoder_spec': encoder, 'hypernet_spec': hypernet,
                                               'imnet_spec': {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': []}}}})
    with pytest.raises(UserError, match='CMSR'):
        models.make({'name': 'lmliif', 'args': {'encoder_spec': encoder, 'imnet_spec': lmmlp,
                                                'hypernet_spec': hypernet, 'cmsr_spec': {}}})


# ---- training through train_liif.py -----------------------------------------------------------------

SHORT = os.path.join(ROOT, 'configs', 'train-local', 'train_edsr-baseline-lmliif-short.yaml')


def test_short_config_trains_through_train_liif(tmp_path):
    """The short lmliif config, shrunk (one block, 16 px crops, h*w = 256 queries), runs train_liif.py for 2 epochs."""
    with open(SHORT) as f:
        cfg = yaml.safe_load(f)
    assert cfg['model']['name'] == 'lmliif'
    cfg['device'] = 'cpu'
    train = cfg['train_dataset']
    for ds in train['dataset']['args']['datasets']:
        ds['args'].update(root_path=shared_path('train', os.path.basename(ds['args']['root_path'])), repeat=1,
                          first_k=4)
    train['wrapper']['args'].update(inp_size=16, sample_q=256)
    train['batch_size'] = 4
    val = cfg['val_dataset']
    val['dataset']['args'].update(root_path=shared_path('benchmark', 'Set5', 'HR'), repeat=1)
    val['wrapper']['args'].update(inp_size=16, sample_q=256)
    val['batch_size'] = 5
    cfg['model']['args']['encoder_spec']['args'].update(n_resblocks=1, n_feats=16)
    cfg.update(epoch_max=2, epoch_save=1)
    path = tmp_path / 'short.yaml'
    path.write_text(yaml.safe_dump(cfg))
    assert train_liif.main(['--config', str(path), '--tag', 't', '--save-root', str(tmp_path / 'save')]) == 0
    run = next((tmp_path / 'save').iterdir())
    records = [json.loads(line) for line in (run / 'metrics.jsonl').read_text().splitlines()]
    assert [r['epoch'] for r in records] == [1, 2]
    assert all(r['train_loss'] > 0 and r['val_psnr'] > 5 for r in records)
    first = load_checkpoint(run / 'epoch-1.pth')['model']
    last = load_checkpoint(run / 'epoch-last.pth')['model']
    assert last['name'] == 'lmliif' and last['args'] == cfg['model']['args']
    assert any(not torch.equal(first['sd'][k], last['sd'][k]) for k in last['sd'] if k.startswith('hypernet.'))
