"""LTE and LTE+ (models/lte.py) against the authors' vectors (lte-parity), in their layout and the framework's."""
import copy
import json
import math
import os

import pytest
import torch
import yaml

import models
import train_liif
from inference.bounded import batched_predict, upscale
from inference.loading import load_model
from models.fast_query import query_mode
from models.lte import LTE, window_of
from utils.checkpoint import load_checkpoint
from utils.testtime import TestTime
from tests.helpers import check_released_layout, max_scaled_error, one_thread  # noqa: F401
from tests.conftest import ROOT, shared_path

PARITY = ('reference', 'lte-parity')
TOL = 1e-5
MODES = ('reference', 'fast')
# on a small shared machine two intra-op threads thrash
pytestmark = pytest.mark.usefixtures('one_thread')
SMALL_ENCODER = {'name': 'edsr-baseline', 'args': {'n_resblocks': 1, 'n_feats': 8, 'no_upsampling': True}}
SMALL = {
    'lte': {'name': 'lte', 'args': {'encoder_spec': SMALL_ENCODER, 'hidden_dim': 16, 'imnet_spec': {
        'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': [12, 12]}}}},
    'lte-fast': {'name': 'lte-fast', 'args': {'encoder_spec': SMALL_ENCODER, 'num_layer': 2, 'hidden_dim': 16}},
}


def _load(name):
    """(model in eval mode with the checkpoint's weights, vectors) of lte-parity/NAME."""
    ckpt = torch.load(shared_path(*PARITY, name + '.pth'), map_location='cpu', weights_only=True)['model']
    vectors = torch.load(shared_path(*PARITY, name + '.vectors.pt'), map_location='cpu', weights_only=True)
    return models.make(ckpt, load_sd=True).eval(), vectors


def _cases(name):
    keys = ('24x24', '30x41', 'x8-cellclip')
    return [(name, key, mode) for key in keys for mode in MODES]


@pytest.fixture(scope='module')
def lte_edsr():
    return _load('lte-edsr-baseline')


@pytest.fixture(scope='module')
def lte_fast_edsr():
    return _load('lte-fast-edsr-baseline')


@pytest.mark.parametrize('channels_last', (True, False))
def test_features_match_the_authors_encoder(lte_edsr, lte_fast_edsr, channels_last):
    for model, vectors in (lte_edsr, lte_fast_edsr):
        model.channels_last = channels_last
        try:
            with torch.no_grad():
                assert max_scaled_error(model.features(vectors['input']), vectors['feat']) <= TOL
        finally:
            model.channels_last = True


@pytest.mark.parametrize('name, key, mode', _cases('lte-edsr-baseline'))
def test_lte_matches_the_authors_vectors(lte_edsr, name, key, mode):
    """The authors' forward, their stateful pair, and encode + query: every case within 1e-5."""
    model, vectors = lte_edsr
    case = vectors['cases'][key]
    with torch.no_grad(), query_mode(model, mode):
        out = model(vectors['input'], case['coord'], case['cell'])
        assert out.shape == case['output'].shape
        assert max_scaled_error(out, case['output']) <= TOL
        if mode == 'reference':
            return  # the other entry points dispatch alike: the default mode is enough for them
        state = model.encode(vectors['input'])
        assert max_scaled_error(model.query(state, case['coord'], case['cell']), case['output']) <= TOL
        model.gen_feat(vectors['input'])
        assert max_scaled_error(model.query_rgb(case['coord'], case['cell']), case['output']) <= TOL


@pytest.mark.parametrize('name, key, mode', _cases('lte-fast-edsr-baseline'))
def test_lte_fast_matches_the_authors_vectors_in_their_grid_layout_and_on_points(lte_fast_edsr, name, key, mode):
    model, vectors = lte_fast_edsr
    case = vectors['cases'][key]
    n, h, w, _ = case['coord'].shape
    with torch.no_grad(), query_mode(model, mode):
        out = model(vectors['input'], case['coord'], case['cell'])
        assert out.shape == case['output'].shape == (n, 3, h, w)
        assert max_scaled_error(out, case['output']) <= TOL
        if mode == 'reference':
            return  # the other entry points dispatch alike: the default mode is enough for them
        model.gen_feat(vectors['input'])
        assert max_scaled_error(model.query_rgb(case['coord'], case['cell']), case['output']) <= TOL
        # the framework's layout: points (N, Q, 2) with a cell per query, (N, Q, 3) out
        points = case['coord'].reshape(n, h * w, 2)
        cells = case['cell'].unsqueeze(1).expand(n, h * w, 2)
        flat = model.query(model.encode(vectors['input']), points, cells)
        want = case['output'].permute(0, 2, 3, 1).reshape(n, h * w, 3)
        assert max_scaled_error(flat, want) <= TOL


def _points(case):
    """A case's coord and cell as points (N, Q, 2), whatever the model's layout."""
    coord, cell = case['coord'], case['cell']
    if coord.dim() == 4:
        n, h, w, _ = coord.shape
        coord = coord.reshape(n, h * w, 2)
        cell = cell.unsqueeze(1).expand_as(coord)
    return coord, cell


def _as_points(output):
    return output.permute(0, 2, 3, 1).flatten(1, 2) if output.dim() == 4 else output


@pytest.mark.parametrize('name', ('lte-edsr-baseline', 'lte-fast-edsr-baseline'))
def test_batched_predict_and_upscale_match_the_vectors(lte_edsr, lte_fast_edsr, name):
    """inference.bounded in chunks of 999 queries (every case, the cell exactly as stored) and as a banded grid."""
    model, vectors = lte_edsr if name == 'lte-edsr-baseline' else lte_fast_edsr
    with query_mode(model, 'fast'):
        for key, case in vectors['cases'].items():
            coord, cell = _points(case)
            pred = batched_predict(model, vectors['input'], coord, cell, bsize=999)
            assert max_scaled_error(pred, _as_points(case['output'])) <= TOL, key
        # upscale makes its own cells (2/H, 2/W): the cases without the clip
        for key in ('24x24', '30x41'):
            size = tuple(int(s) for s in key.split('x'))
            img = upscale(model, vectors['input'], size, bsize=size[1] * 5)
            want = case_grid(vectors['cases'][key]['output'], size)
            assert max_scaled_error(img, want) <= TOL, key


@pytest.mark.parametrize('name', ('lte-edsr-baseline', 'lte-fast-edsr-baseline'))
def test_upscale_with_the_recommended_test_time_options_matches_the_cell_clip_case(lte_edsr, lte_fast_edsr, name):
    model, vectors = lte_edsr if name == 'lte-edsr-baseline' else lte_fast_edsr
    assert model.test_time() == TestTime(cell_max_scale=4, window=None)
    img = upscale(model, vectors['input'], (96, 96), bsize=96 * 17, test_time=model.test_time())
    assert max_scaled_error(img, case_grid(vectors['cases']['x8-cellclip']['output'], (96, 96))) <= TOL


def test_swinir_encoders_are_evaluated_with_window_padding():
    assert window_of('swinir') == 8
    assert window_of('edsr-baseline') is None and window_of('rdn') is None


def case_grid(output, size):
    """A case's output as an image (N, 3, H, W)."""
    if output.dim() == 4:
        return output
    return output.view(output.shape[0], *size, 3).permute(0, 3, 1, 2)


@pytest.mark.parametrize('mode', MODES)
def test_swinir_quirk_offsets_from_the_input_grid_on_the_padded_features(mode):
    """lte-swinir-small's own feature map (16 x 16 from a 12 x 10 input) through prepare + query.

    Only the head's weights are needed: the encoder is not run. The offsets come from the 12 x 10
    input grid while the codes, the radius and the scaling use the 16 x 16 feature grid (LTE.md).
    """
    ckpt = torch.load(shared_path(*PARITY, 'lte-swinir-small.pth'), map_location='cpu', weights_only=True)['model']
    vectors = torch.load(shared_path(*PARITY, 'lte-swinir-small.vectors.pt'), map_location='cpu',
                         weights_only=True)
    spec = copy.deepcopy(ckpt)
    spec['args']['encoder_spec'] = {'name': 'edsr-baseline', 'args': {'n_resblocks': 1, 'no_upsampling': True}}
    model = models.make(spec).eval()
    head = {k: v for k, v in ckpt['sd'].items() if not k.startswith('encoder.')}
    model.load_state_dict({**model.state_dict(), **head})
    assert vectors['input'].shape[-2:] == (12, 10) and vectors['feat'].shape[-2:] == (16, 16)
    with torch.no_grad(), query_mode(model, mode):
        state = model.prepare(vectors['feat'], vectors['input'])
        for key in ('24x20', '31x45'):
            case = vectors['cases'][key]
            assert max_scaled_error(model.query(state, case['coord'], case['cell']), case['output']) <= TOL, key


@pytest.mark.parametrize('name', ('edsr-baseline-lte', 'rdn-lte', 'edsr-baseline-lte-fast'))
def test_released_state_dict_layout(name):
    check_released_layout(name, PARITY)


@pytest.mark.parametrize('name', sorted(SMALL))
def test_fast_path_equals_reference_on_a_batch_with_varied_cells_and_border_queries(name):
    """Two images of different sizes' worth of queries, cells per query, coordinates on and beyond the borders."""
    model = models.make(SMALL[name]).eval()
    inp = torch.rand(2, 3, 7, 9) * 2 - 1
    coord = torch.rand(2, 5000, 2) * 2.2 - 1.1
    coord[:, :4] = torch.tensor([[-1., -1.], [1., 1.], [-1., 1.], [0., 0.]])
    cell = torch.rand(2, 5000, 2) * 0.5
    with torch.no_grad():
        state = model.encode(inp)
        with query_mode(model, 'reference'):
            ref = model.query(state, coord, cell)
            # each image alone: the batch index of the fast path's gathers must not mix images
            alone = torch.cat([model.query(model.encode(inp[i:i + 1]), coord[i:i + 1], cell[i:i + 1])
                               for i in range(2)])
        with query_mode(model, 'fast'):
            fast = model.query(state, coord, cell)
    assert (ref - alone).abs().max() <= 1e-6
    assert max_scaled_error(fast, ref) <= 1e-6
    assert ref.abs().max() > 0.1


@pytest.mark.parametrize('name', sorted(SMALL))
def test_gradients_reach_every_weight_and_agree_between_paths(name):
    torch.manual_seed(1)
    model = models.make(SMALL[name])
    inp = torch.rand(2, 3, 6, 5) * 2 - 1
    coord = torch.rand(2, 300, 2) * 2 - 1
    cell = torch.full((2, 300, 2), 0.1)
    grads = {}
    for path in MODES:
        model.zero_grad()
        with query_mode(model, path):
            model.query(model.encode(inp), coord, cell).square().sum().backward()
        grads[path] = {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}
    for k, ref in grads['reference'].items():
        assert ref.abs().max() > 0, k
        assert (grads['fast'][k] - ref).abs().max() <= 1e-5 * max(1, ref.abs().max().item()), k


def test_authors_grid_forward_on_a_training_batch_backpropagates():
    """lte-fast's training call: coord (N, H, W, 2), one cell per sample."""
    model = models.make(SMALL['lte-fast'])
    coord = torch.rand(2, 4, 6, 2) * 2 - 1
    out = model(torch.rand(2, 3, 6, 6), coord, torch.full((2, 2), 0.2))
    assert out.shape == (2, 3, 4, 6)
    out.mean().backward()
    assert model.layers[0].weight.grad.abs().max() > 0


def test_encode_and_forward_store_nothing():
    model = models.make(SMALL['lte']).eval()
    inp, coord = torch.rand(1, 3, 5, 5), torch.rand(1, 10, 2) * 2 - 1
    with torch.no_grad():
        a = model(inp, coord, torch.full_like(coord, 0.1))
        assert model.feat is None
        state = model.encode(inp)
        assert model.feat is None
        model.coef.weight.mul_(2)  # a query follows the state it is given, nothing cached on the module
        b = model.query(model.encode(inp), coord, torch.full_like(coord, 0.1))
        c = model.query(state, coord, torch.full_like(coord, 0.1))
    assert not torch.allclose(a, b) and torch.equal(a, c)


def test_constructor_errors():
    with pytest.raises(ValueError, match='even'):
        models.make({'name': 'lte-fast', 'args': {'encoder_spec': SMALL_ENCODER, 'hidden_dim': 15}})
    with pytest.raises(ValueError, match='imnet_spec'):
        models.make({'name': 'lte', 'args': {'encoder_spec': SMALL_ENCODER}})


def _train_briefly(cfg, tmp_path, name):
    """Run train_liif.py on cfg for one epoch; check its metrics; return (reloaded model, fresh model, Adam state)."""
    path = tmp_path / f'{name}.yaml'
    path.write_text(yaml.safe_dump(cfg))
    torch.manual_seed(0)
    assert train_liif.main(['--config', str(path), '--save-root', str(tmp_path / 'save')]) == 0
    run = tmp_path / 'save' / name
    records = [json.loads(line) for line in (run / 'metrics.jsonl').read_text().splitlines()]
    assert len(records) == 1 and math.isfinite(records[0]['train_loss']) and math.isfinite(records[0]['val_psnr'])
    fresh = models.make(cfg['model'])
    adam = load_checkpoint(run / 'epoch-last.pth')['optimizer']['sd']['state']
    assert len(adam) == sum(p.requires_grad for p in fresh.parameters())  # every weight but the frozen mean shift
    return load_model(run / 'epoch-last.pth'), fresh, adam


def test_short_local_config_trains_through_train_liif(tmp_path):
    """configs/train-local/train_edsr-baseline-lte-short.yaml, shrunk to 4 steps: it trains every weight,
    validates and saves a checkpoint that loads as the released EDSR-baseline-LTE layout."""
    with open(os.path.join(ROOT, 'configs', 'train-local', 'train_edsr-baseline-lte-short.yaml')) as f:
        cfg = yaml.safe_load(f)
    train_sets = cfg['train_dataset']['dataset']['args']['datasets']
    for sub, folder in zip(train_sets, ('T91', 'BSD200')):
        sub['args'].update(root_path=shared_path('train', folder), first_k=4)
    cfg['val_dataset']['dataset']['args'].update(root_path=shared_path('benchmark', 'Set5', 'HR'), repeat=1)
    for section in ('train_dataset', 'val_dataset'):
        cfg[section]['wrapper']['args'].update(inp_size=16, sample_q=256)
        cfg[section]['batch_size'] = 2
    cfg.update(device='cpu', epoch_max=1, num_workers=0)
    model, fresh, adam = _train_briefly(cfg, tmp_path, 'short')
    assert isinstance(model, LTE)
    assert list(model.state_dict()) == list(fresh.state_dict())
    assert {int(s['step']) for s in adam.values()} == {4}  # 4 + 4 images in batches of 2


def test_lte_fast_config_trains_in_the_grid_layout_through_train_liif(tmp_path):
    """configs/train-div2k/train_edsr-baseline-lte-fast.yaml on T91 / Set5, shrunk to 2 steps: the grid
    wrapper feeds lte-fast's own layout, every weight trains, validation runs, the checkpoint reloads."""
    with open(os.path.join(ROOT, 'configs', 'train-div2k', 'train_edsr-baseline-lte-fast.yaml')) as f:
        cfg = yaml.safe_load(f)
    cfg['train_dataset']['dataset']['args'] = {'root_path': shared_path('train', 'T91'), 'first_k': 4,
                                               'cache': 'in_memory'}
    cfg['val_dataset']['dataset']['args'] = {'root_path': shared_path('benchmark', 'Set5', 'HR'), 'first_k': 2,
                                             'cache': 'in_memory'}
    cfg['model']['args']['encoder_spec']['args'].update(n_resblocks=2)
    for section in ('train_dataset', 'val_dataset'):
        cfg[section]['wrapper']['args'].update(inp_size=12)
        cfg[section]['batch_size'] = 2
    cfg.update(device='cpu', epoch_max=1, num_workers=0, multi_step_lr=None)
    model, fresh, adam = _train_briefly(cfg, tmp_path, 'fast')
    assert model.query_layout == 'grid'
    assert {int(s['step']) for s in adam.values()} == {2}  # 4 images in batches of 2
