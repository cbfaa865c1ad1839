"""SwinIR encoder: the authors' encoder output (lte-parity vectors), their state-dict layout and buffers."""
import copy
import json
import os

import pytest
import torch

import models
from inference.bounded import recommended_test_time, upscale
from models import swinir
from models.swinir import SwinBlock, shift_mask
from models.tiling import receptive_radius
from tests.conftest import shared_path
from tests.helpers import max_scaled_error, one_thread  # noqa: F401
from utils.errors import UserError
from utils.testtime import TestTime

pytestmark = pytest.mark.usefixtures('one_thread')  # see tests/helpers.py

LTE_PARITY = ('reference', 'lte-parity')
WS, SHIFT = 8, 4


def small_checkpoint():
    """lte-swinir-small's LTE spec and state dict, and its vectors."""
    folder = shared_path(*LTE_PARITY)
    ckpt = torch.load(os.path.join(folder, 'lte-swinir-small.pth'), map_location='cpu', weights_only=True)['model']
    vectors = torch.load(os.path.join(folder, 'lte-swinir-small.vectors.pt'), map_location='cpu', weights_only=True)
    return ckpt, vectors


def small_encoder():
    """The encoder of lte-swinir-small through models.make, its weights the checkpoint's 'encoder.' entries."""
    ckpt, vectors = small_checkpoint()
    spec = copy.deepcopy(ckpt['args']['encoder_spec'])
    spec['sd'] = {k[len('encoder.'):]: v for k, v in ckpt['sd'].items() if k.startswith('encoder.')}
    return models.make(spec, load_sd=True).eval(), spec['sd'], vectors


def reflect_indices(n: int, padded: int):
    """Row (or column) indices of a bottom/right mirror without repeating the edge, as the doc defines it."""
    return list(range(n)) + [n - 2 - k for k in range(padded - n)]


def mask_by_definition(h: int, w: int, ws: int, s: int) -> torch.Tensor:
    """The shifted-window mask of SWINIR.md built with plain loops: (nW, ws^2, ws^2) of 0 / -100."""
    def band(i, n):
        return 0 if i < n - ws else (1 if i < n - s else 2)
    windows = []
    for wr in range(h // ws):
        for wc in range(w // ws):
            labels = [3 * band(wr * ws + p // ws, h) + band(wc * ws + p % ws, w) for p in range(ws * ws)]
            windows.append([[0.0 if a == b else -100.0 for b in labels] for a in labels])
    return torch.tensor(windows, dtype=torch.float32)


def index_by_definition(ws: int) -> torch.Tensor:
    """SWINIR.md's relative position index with plain loops."""
    return torch.tensor([[(p // ws - q // ws + ws - 1) * (2 * ws - 1) + (p % ws - q % ws + ws - 1)
                          for q in range(ws * ws)] for p in range(ws * ws)], dtype=torch.int64)


@pytest.fixture(scope='module')
def default_swinir():
    # set up before the per-test one_thread fixture: two threads on the shared machine take 20x longer
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = models.make({'name': 'swinir', 'args': {'no_upsampling': True}}).eval()
    torch.set_num_threads(before)
    return model


@pytest.mark.parametrize('channels_last', [False, True])
def test_feat_matches_the_authors_vectors(channels_last):
    # 12x10 input, mirrored to 16x16 and not cropped: the shifted blocks recompute their mask for 16x16
    enc, _, vectors = small_encoder()
    inp = vectors['input'].contiguous(memory_format=torch.channels_last) if channels_last else vectors['input']
    assert enc.out_dim == 64
    with torch.no_grad():
        feat = enc(inp)
    assert feat.shape == vectors['feat'].shape == (1, 64, 16, 16)
    assert max_scaled_error(feat, vectors['feat']) <= 1e-5


def test_padding_mirrors_bottom_right_without_the_edge_and_is_not_cropped():
    enc, _, vectors = small_encoder()
    inp = vectors['input']
    padded = inp[:, :, reflect_indices(12, 16)][:, :, :, reflect_indices(10, 16)]
    with torch.no_grad():
        feat, again = enc(inp), enc(padded)
        assert torch.equal(feat, again)
        # test.py's window case: its own 16x16 input (a multiple of the window) is used as it is
        window_inp = vectors['cases']['test-window8-x6']['input']
        assert torch.equal(window_inp[:, :, :12, :10], inp)
        assert enc(window_inp).shape == (1, 64, 16, 16)
        assert enc(window_inp[:, :, :8, :16]).shape == (1, 64, 8, 16)


def test_inputs_too_small_to_mirror_are_one_line_errors():
    enc, _, _ = small_encoder()
    with pytest.raises(UserError, match='input 4x10 is too small for swinir'):
        enc(torch.zeros(1, 3, 4, 10))
    assert enc(torch.zeros(1, 3, 5, 8)).shape == (1, 64, 8, 8)


def test_default_layout_matches_the_released_keys(default_swinir):
    released = json.load(open(shared_path(*LTE_PARITY, 'state_dict_keys.json')))['swinir-lte']
    assert released['spec']['args']['encoder_spec'] == {'name': 'swinir', 'args': {'no_upsampling': True}}
    want = [[k[len('encoder.'):], shape] for k, shape in released['state_dict'] if k.startswith('encoder.')]
    sd = default_swinir.state_dict()
    assert [[k, list(v.shape)] for k, v in sd.items()] == want
    assert len(want) == 544
    buffers = dict(default_swinir.named_buffers())
    assert sorted(buffers) == sorted(k for k, _ in want if k.endswith(('attn_mask', 'relative_position_index')))
    assert all(k.split('.')[4] in ('1', '3', '5') for k in buffers if k.endswith('attn_mask'))
    assert {str(v.dtype) for k, v in buffers.items() if k.endswith('attn_mask')} == {'torch.float32'}
    assert {str(v.dtype) for k, v in buffers.items() if k.endswith('index')} == {'torch.int64'}
    head = sum(torch.Size(shape).numel() for k, shape in released['state_dict'] if not k.startswith('encoder.'))
    assert sum(p.numel() for p in default_swinir.parameters()) + head == released['num_params_all'] == 12096871


def test_buffers_match_the_definition_and_the_authors_checkpoint(default_swinir):
    mask, index = mask_by_definition(48, 48, WS, SHIFT), index_by_definition(WS)
    assert mask.shape == (36, 64, 64) and int(index.max()) == 224
    for name, buf in default_swinir.named_buffers():
        assert torch.equal(buf, mask if name.endswith('attn_mask') else index), name
    _, sd, _ = small_encoder()  # the authors' own buffers, as their code saved them
    for name, buf in sd.items():
        if name.endswith(('attn_mask', 'relative_position_index')):
            assert torch.equal(buf, mask if name.endswith('attn_mask') else index), name


def test_mask_recomputed_for_other_sizes_follows_the_definition():
    # at 16 rows the bands n - ws and ws coincide: a non-square map where they do not
    assert torch.equal(shift_mask(24, 40, WS, SHIFT), mask_by_definition(24, 40, WS, SHIFT))


def test_design_size_uses_the_stored_mask_other_sizes_recompute_it():
    enc, _, _ = small_encoder()
    x48, x16 = torch.rand(1, 3, 48, 48) * 2 - 1, torch.rand(1, 3, 16, 16) * 2 - 1
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    attrs = [sorted(vars(m)) for m in enc.modules()]
    with torch.no_grad():
        ref48, ref16 = enc(x48), enc(x16)
        assert {k: v for k, v in enc.state_dict().items() if not torch.equal(v, before[k])} == {}
        assert [sorted(vars(m)) for m in enc.modules()] == attrs  # nothing kept from the 16x16 call
        for name, buf in enc.named_buffers():
            if name.endswith('attn_mask'):
                buf.zero_()
        assert torch.equal(enc(x16), ref16)
        assert (enc(x48) - ref48).abs().max() > 1e-3


def test_other_sizes_make_each_shift_mask_once_per_forward(monkeypatch):
    enc, _, _ = small_encoder()
    shifted = sum(1 for m in enc.modules() if isinstance(m, SwinBlock) and m.shift)
    made = []
    real = swinir.shift_mask
    monkeypatch.setattr(swinir, 'shift_mask', lambda *a, **k: made.append(a[:4]) or real(*a, **k))
    with torch.no_grad():
        enc(torch.rand(1, 3, 16, 16))
        enc(torch.rand(1, 3, 16, 16))
    assert shifted > 1 and made == [(16, 16, WS, SHIFT)] * 2   # once per forward, not once per shifted block


def test_registered_builder_and_its_arguments():
    plain = models.make({'name': 'swinir', 'args': {}})
    released = models.make({'name': 'swinir', 'args': {'no_upsampling': False}})
    assert [(k, v.shape) for k, v in plain.state_dict().items()] == \
        [(k, v.shape) for k, v in released.state_dict().items()]
    assert plain.out_dim == released.out_dim == 64
    small = {'embed_dim': 8, 'depths': [1], 'num_heads': [2]}
    with pytest.raises(ValueError, match="only upsampler 'none'"):
        models.make({'name': 'swinir', 'args': {**small, 'upsampler': 'pixelshuffle'}})
    with pytest.raises(ValueError, match='not divisible by num_heads'):
        models.make({'name': 'swinir', 'args': {**small, 'num_heads': [3]}})
    with pytest.raises(UserError, match="unexpected keyword argument 'embed_dims'"):
        models.make({'name': 'swinir', 'args': {'embed_dims': 8}})
    three = models.make({'name': 'swinir', 'args': {**small, 'resi_connection': '3conv'}})
    assert [k for k in three.state_dict() if k.startswith('conv_after_body')] == \
        ['conv_after_body.0.weight', 'conv_after_body.0.bias', 'conv_after_body.2.weight',
         'conv_after_body.2.bias', 'conv_after_body.4.weight', 'conv_after_body.4.bias']


def test_drop_path_is_identity_in_eval_and_checkpointing_changes_no_gradient():
    small = {'embed_dim': 8, 'depths': [2], 'num_heads': [2], 'window_size': 4, 'img_size': 8}
    torch.manual_seed(1)
    enc = models.make({'name': 'swinir', 'args': {**small, 'drop_path_rate': 0.5}})
    plain = models.make({'name': 'swinir', 'args': {**small, 'drop_path_rate': 0.0, 'use_checkpoint': True}})
    plain.load_state_dict(enc.state_dict())
    x = torch.rand(2, 3, 8, 12)
    with torch.no_grad():
        assert not torch.equal(enc(x), enc(x))  # training: whole residual branches dropped at random
        assert torch.equal(enc.eval()(x), plain.eval()(x))
    enc.train()
    enc.layers[0].residual_group.blocks[0].drop_path.p = enc.layers[0].residual_group.blocks[1].drop_path.p = 0.0
    plain.train()
    enc(x).square().sum().backward()
    plain(x).square().sum().backward()
    for (name, a), b in zip(enc.named_parameters(), plain.parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-5, atol=1e-7), name


def test_tiling_cannot_be_exact_for_attention(default_swinir):
    assert receptive_radius(default_swinir) is None


@pytest.mark.parametrize('query_mode', ['fast', 'reference'])
def test_lte_with_swinir_matches_the_authors_end_to_end(query_mode):
    # 24x20 / 31x45: the 12x10 input (16x16 features, LTE.md's SwinIR quirk); test-window8-x6: its own
    # 16x16 input, mirror-padded as the authors' test.py does
    ckpt, vectors = small_checkpoint()
    model = models.make(ckpt, load_sd=True).eval()
    model.query_mode = query_mode
    assert sorted(vectors['cases']) == ['24x20', '31x45', 'test-window8-x6']
    for key, case in vectors['cases'].items():
        with torch.no_grad():
            out = model(case.get('input', vectors['input']), case['coord'], case['cell'])
        assert out.shape == case['output'].shape
        assert max_scaled_error(out, case['output']) <= 1e-5, key


def test_bounded_upscale_with_the_recommended_options_is_the_authors_window_evaluation():
    # test.py --window 8 at x6: mirror-pad 12x10 to 16x16, query the 96x96 grid, crop the top-left 72x60
    ckpt, vectors = small_checkpoint()
    model = models.make(ckpt, load_sd=True).eval()
    tt = recommended_test_time(model)
    assert tt == TestTime(cell_max_scale=4, window=8)
    want = vectors['cases']['test-window8-x6']['output'].view(1, 96, 96, 3).permute(0, 3, 1, 2)[:, :, :72, :60]
    got = upscale(model, vectors['input'], (72, 60), bsize=60 * 25, test_time=tt)
    assert got.shape == want.shape
    assert max_scaled_error(got, want) <= 1e-5


def block_by_definition(blk, x: torch.Tensor, h: int, w: int, ws: int, s: int) -> torch.Tensor:
    """One Swin block as SWINIR.md's steps say, in float64 with index arithmetic instead of views."""
    p = {k: v.double() for k, v in blk.state_dict().items() if v.is_floating_point()}
    nh = blk.attn.num_heads
    c = x.shape[-1]
    d = c // nh
    x = x[0].double()

    def ln(t, name):
        return torch.nn.functional.layer_norm(t, (c,), p[name + '.weight'], p[name + '.bias'], 1e-5)
    a = ln(x, 'norm1').view(h, w, c)
    rolled = a[[(r + s) % h for r in range(h)]][:, [(col + s) % w for col in range(w)]]
    labels = [[3 * (0 if r < h - ws else 1 if r < h - s else 2) + (0 if col < w - ws else 1 if col < w - s else 2)
               for col in range(w)] for r in range(h)]
    out = torch.zeros(h, w, c, dtype=torch.float64)
    for r0 in range(0, h, ws):
        for c0 in range(0, w, ws):
            cells = [(r0 + t // ws, c0 + t % ws) for t in range(ws * ws)]
            z = torch.stack([rolled[r, col] for r, col in cells])
            qkv = z @ p['attn.qkv.weight'].T + p['attn.qkv.bias']
            idx = torch.tensor([[(ri - rj + ws - 1) * (2 * ws - 1) + (ci - cj + ws - 1) for rj, cj in cells]
                                for ri, ci in cells])
            mask = torch.tensor([[-100.0 if s and labels[ri][ci] != labels[rj][cj] else 0.0 for rj, cj in cells]
                                 for ri, ci in cells], dtype=torch.float64)
            heads = []
            for m in range(nh):
                q = qkv[:, m * d:(m + 1) * d] * d ** -0.5
                k = qkv[:, c + m * d:c + (m + 1) * d]
                v = qkv[:, 2 * c + m * d:2 * c + (m + 1) * d]
                logits = q @ k.T + p['attn.relative_position_bias_table'][idx, m] + mask
                heads.append(logits.softmax(-1) @ v)
            o = torch.cat(heads, 1) @ p['attn.proj.weight'].T + p['attn.proj.bias']
            for i, (r, col) in enumerate(cells):
                out[(r + s) % h, (col + s) % w] = o[i]
    x = x + out.view(h * w, c)
    hid = ln(x, 'norm2') @ p['mlp.fc1.weight'].T + p['mlp.fc1.bias']
    hid = 0.5 * hid * (1 + torch.erf(hid / 2 ** 0.5))
    return (x + hid @ p['mlp.fc2.weight'].T + p['mlp.fc2.bias']).unsqueeze(0)


@pytest.mark.parametrize('shift', [0, SHIFT])
def test_block_with_large_weights_follows_the_definition(shift):
    # the authors' vectors use their small initial weights, under which attention is nearly uniform and
    # GELU nearly linear; large weights make the scale, bias, mask and layout decisive
    torch.manual_seed(3)
    blk = SwinBlock(12, (48, 48), 3, WS, shift, 2.0, True, None, 0.0, 0.0, 0.0).eval()
    with torch.no_grad():
        for t in blk.parameters():
            t.normal_(0, 0.6)
    h, w = 16, 24
    x = torch.randn(1, h * w, 12)
    with torch.no_grad():
        got = blk(x, h, w)
    want = block_by_definition(blk, x, h, w, WS, shift)
    assert (got.double() - want).abs().max() <= 1e-5 * max(1, want.abs().max().item())
