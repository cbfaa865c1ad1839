"""Every registered model through the one interface: build, forward, backward, checkpoint, bounded upscale.

A model registered without an entry here fails test_every_registered_model_has_a_tiny_spec, so a
new model cannot skip these checks.
"""
import json
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

import demo
import models
from inference.bounded import encoder_tile, recommended_test_time, upscale, upscale_to_uint8
from inference.loading import load_sr_model
from models.implicit import ImplicitSR
from utils.checkpoint import save_checkpoint
from tests.conftest import ROOT, shared_path
from tests.helpers import load_script, save_model
from utils.coord import make_cell, make_coord

EDSR = {'name': 'edsr-baseline', 'args': {'n_resblocks': 1, 'n_feats': 8, 'no_upsampling': True}}
MLP = {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': [16, 16]}}

# modules that are not queried at coordinates (encoders, MLPs): their args, input shape and output shape
MODULES = {
    'edsr-baseline': ({'n_resblocks': 1, 'n_feats': 8, 'no_upsampling': True}, (1, 3, 6, 5), (1, 8, 6, 5)),
    'edsr': ({'n_resblocks': 1, 'n_feats': 8, 'scale': 2}, (1, 3, 6, 5), (1, 3, 12, 10)),
    'rdn': ({'G0': 4, 'RDNconfig': 'A', 'no_upsampling': True}, (1, 3, 6, 5), (1, 4, 6, 5)),
    'rcan': ({'n_resgroups': 1, 'n_resblocks': 1, 'n_feats': 8, 'reduction': 4, 'no_upsampling': True},
             (1, 3, 6, 5), (1, 8, 6, 5)),
    'mlp': ({'in_dim': 4, 'out_dim': 3, 'hidden_list': [8]}, (7, 4), (7, 3)),
    # no drop-path, so that two training-mode forwards agree; 6x5 is mirrored to 8x8 (window 4), 64 channels out
    'swinir': ({'embed_dim': 8, 'depths': [2], 'num_heads': [2], 'window_size': 4, 'img_size': 8,
                'drop_path_rate': 0.0}, (1, 3, 6, 5), (1, 64, 8, 8)),
    'lmmlp': ({'in_dim': 4, 'out_dim': 3, 'hidden_dim': 4, 'hidden_depth': 2}, (7, 4), (7, 3)),
}
LMMLP = {'name': 'lmmlp', 'args': {'out_dim': 3, 'hidden_dim': 4, 'hidden_depth': 2}}
HYPERNET = {'name': 'mlp', 'args': {'out_dim': 1, 'hidden_list': [8]}}
# SR models: tiny args
SR_MODELS = {
    'liif': {'encoder_spec': EDSR, 'imnet_spec': MLP},
    'metasr': {'encoder_spec': EDSR},
    'lte': {'encoder_spec': EDSR, 'imnet_spec': MLP, 'hidden_dim': 16},
    'lte-fast': {'encoder_spec': EDSR, 'num_layer': 2, 'hidden_dim': 16},
    'sronet': {'encoder_spec': EDSR, 'width': 16, 'blocks': 4},
    'lmliif': {'encoder_spec': EDSR, 'imnet_spec': LMMLP, 'hypernet_spec': HYPERNET, 'mod_input': True},
    'lmlte': {'encoder_spec': EDSR, 'imnet_spec': LMMLP, 'hypernet_spec': HYPERNET, 'hidden_dim': 8,
              'mod_input': True},
}
# the authors' lmlte forward takes a batch only with exactly h*w queries (LMF.md, quirks): one image a call
ONE_IMAGE_PER_CALL = {'lmlte'}


def build(name):
    torch.manual_seed(0)
    return models.make({'name': name, 'args': SR_MODELS[name]})


def authors_call(model, inp, size, cell_factor=1.0):
    """model(inp, coord, cell) in the model's own query layout on the whole H x W grid: (N, 3, H, W)."""
    n = inp.shape[0]
    if n > 1 and type(model).__name__.lower() in ONE_IMAGE_PER_CALL:
        return torch.cat([authors_call(model, inp[i:i + 1], size, cell_factor) for i in range(n)])
    if model.query_layout == 'grid':
        coord = make_coord(size, flatten=False).expand(n, *size, 2)
        cell = torch.tensor([2 / size[0], 2 / size[1]]).expand(n, 2) * cell_factor
        return model(inp, coord, cell)
    coord = make_coord(size).expand(n, -1, -1)
    out = model(inp, coord, make_cell(coord, size) * cell_factor)
    return out.view(n, *size, 3).permute(0, 3, 1, 2)


def test_every_registered_model_has_a_tiny_spec():
    assert set(models.list_models()) == set(MODULES) | set(SR_MODELS)
    for name in SR_MODELS:
        assert issubclass(models.model_factory(name), ImplicitSR), name


@pytest.mark.parametrize('name', sorted(MODULES))
def test_module_forward_backward_and_state_dict_round_trip(name):
    args, shape, out_shape = MODULES[name]
    torch.manual_seed(0)
    m = models.make({'name': name, 'args': args})
    x = torch.rand(shape, requires_grad=True)
    out = m(x)
    assert out.shape == out_shape and (len(out_shape) == 2 or out_shape[1] == m.out_dim)
    out.square().mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    copy = models.make({'name': name, 'args': args, 'sd': m.state_dict()}, load_sd=True)
    with torch.no_grad():
        assert torch.equal(copy(x.detach()), m(x.detach()))


@pytest.mark.parametrize('name, args', [
    ('edsr-baseline', {'n_resblocks': 1, 'n_feats': 8}),
    ('rdn', {'G0': 4, 'RDNconfig': 'A'}),
    ('rcan', {'n_resgroups': 1, 'n_resblocks': 1, 'n_feats': 8, 'reduction': 4}),
])
def test_encoders_with_their_upsampling_heads(name, args):
    torch.manual_seed(0)
    for scale in (2, 3):
        m = models.make({'name': name, 'args': {**args, 'scale': scale}})
        x = torch.rand(2, 3, 6, 5, requires_grad=True)
        out = m(x)
        assert out.shape == (2, 3, 6 * scale, 5 * scale) and m.out_dim == 3
        out.square().mean().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize('name', sorted(SR_MODELS))
def test_forward_in_the_authors_layout_and_backward(name):
    model = build(name).train()
    inp = (torch.rand(2, 3, 6, 5) * 2 - 1).requires_grad_()
    out = authors_call(model, inp, (9, 11))
    assert out.shape == (2, 3, 9, 11) and torch.isfinite(out).all()
    out.abs().mean().backward()
    assert inp.grad is not None and (inp.grad[0].abs().sum() > 0) and (inp.grad[1].abs().sum() > 0)
    head = [p for n, p in model.named_parameters() if not n.startswith('encoder.')]
    enc = [p for n, p in model.named_parameters() if n.startswith('encoder.')]
    assert head and all(p.grad is not None for p in head), "every head parameter gets a gradient"
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in enc), "gradients reach the encoder"


@pytest.mark.parametrize('name', sorted(SR_MODELS))
def test_checkpoint_round_trip_gives_the_same_outputs(name, tmp_path):
    model = build(name).eval()
    path = tmp_path / f'{name}.pth'
    save_checkpoint(path, {'name': name, 'args': SR_MODELS[name], 'sd': model.state_dict()})
    loaded = load_sr_model(str(path), torch.device('cpu'))
    inp = torch.rand(1, 3, 6, 5) * 2 - 1
    with torch.no_grad():
        assert torch.equal(authors_call(loaded, inp, (12, 10)), authors_call(model, inp, (12, 10)))


@pytest.mark.parametrize('name', sorted(SR_MODELS))
def test_bounded_upscale_equals_one_full_forward(name):
    model = build(name).eval()
    inp = torch.rand(2, 3, 6, 5) * 2 - 1
    size = (15, 13)  # x2.5, not integer
    with torch.no_grad():
        whole = authors_call(model, inp, size)
    for bsize in (13 * 4, 13 * 7 + 5, None):  # bands of 4 and 7 rows, and the default
        got = upscale(model, inp, size, bsize=bsize)
        assert (got - whole).abs().max() <= 1e-5, bsize


@pytest.mark.parametrize('name', sorted(SR_MODELS))
def test_recommended_test_time_options_are_what_bounded_upscale_applies(name):
    model = build(name).eval()
    tt = recommended_test_time(model)
    inp = torch.rand(1, 3, 6, 6) * 2 - 1
    size = (48, 48)  # x8: beyond a cell limit of 4
    assert not tt.window  # the tiny specs use EDSR encoders; window padding is pinned in test_inference_bounded
    with torch.no_grad():
        want = authors_call(model, inp, size, tt.cell_factor(8))
    assert (upscale(model, inp, size, bsize=48 * 10, test_time=tt) - want).abs().max() <= 1e-5


@pytest.mark.parametrize('name', sorted(SR_MODELS))
def test_tiled_encoder_and_bf16_autocast_work_as_for_liif(name):
    model = build(name).eval()
    inp = torch.rand(1, 3, 40, 36) * 2 - 1
    size = (60, 54)
    with torch.no_grad():
        whole = authors_call(model, inp, size)
    assert encoder_tile(model, inp, 0.05) is not None, "a tiny budget tiles the encoder"
    tiled = upscale(model, inp, size, max_mem_mb=0.05)
    assert (tiled - whole).abs().max() <= 1e-5
    low = upscale(model, inp, size, amp='bf16')
    assert low.dtype == torch.float32
    # bf16 keeps ~3 significant digits: errors of a few 1e-3 on outputs of magnitude ~1, not more
    err = (low - whole).abs().max().item()
    assert 0 < err <= 0.05, err


@pytest.mark.parametrize('name', sorted(SR_MODELS))
def test_demo_test_and_eval_suite_run_every_model(name, tmp_path, capsys):
    """demo.py, test.py and scripts/eval_suite.py take a checkpoint of each model; demo's pixels are upscale's."""
    torch.manual_seed(0)
    ckpt = save_model(tmp_path / f'{name}.pth', {'name': name, 'args': SR_MODELS[name]})
    model = load_sr_model(ckpt, torch.device('cpu'))
    img = Image.open(shared_path('benchmark', 'Set5', 'HR', 'bird.png')).convert('RGB').crop((60, 60, 84, 80))
    img.save(tmp_path / 'in.png')
    demo.main(['--input', str(tmp_path / 'in.png'), '--model', ckpt, '--scale', '2.5',
               '--output', str(tmp_path / 'out.png'), '--gpu', 'cpu'])
    inp = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)
    want = upscale_to_uint8(model, (inp - 0.5) / 0.5, (50, 60), test_time=recommended_test_time(model))
    got = np.asarray(Image.open(tmp_path / 'out.png'))
    assert got.shape == (50, 60, 3) and np.abs(got.astype(int) - want).max() <= 1
    # a one-image "Set5" (a 48 x 40 crop) in the layout the paper's test configs read
    hr = tmp_path / 'data' / 'benchmark' / 'Set5' / 'HR'
    hr.mkdir(parents=True)
    Image.open(shared_path('benchmark', 'Set5', 'HR', 'bird.png')).convert('RGB').crop((40, 40, 88, 80)).save(
        hr / 'bird.png')
    config = os.path.join(ROOT, 'configs', 'test', 'test-set5-2.yaml')
    load_script('test.py').main(['--config', config, '--model', ckpt, '--gpu', 'cpu',
                                 '--data-root', str(tmp_path / 'data'), '--lr-cache', str(tmp_path / 'lr')])
    psnr = float(capsys.readouterr().out.strip().split('psnr: ')[-1])
    assert math.isfinite(psnr) and psnr > 0
    load_script('scripts/eval_suite.py').main(['--model', ckpt, '--suite', 'benchmark', '--sets', 'Set5',
                                               '--scales', '2', '--data-root', str(tmp_path / 'data'),
                                               '--lr-cache', str(tmp_path / 'lr'), '--out', str(tmp_path / 'suite')])
    report = json.loads((tmp_path / 'suite' / 'benchmark.json').read_text())
    assert report['results']['Set5']['2']['psnr'] == pytest.approx(psnr, abs=5.1e-5)  # test.py prints 4 decimals
