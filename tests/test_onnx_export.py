"""scripts/export_onnx.py and inference/onnx_runner.py: ONNX graphs run by onnxruntime give PyTorch's outputs."""
import logging
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import demo
from datasets.matlab_lr import matlab_lr
from inference import onnx_runner
from inference.bounded import bytes_per_query, iter_upscale_bands, upscale
from inference.loading import load_sr
from inference.onnx_export import export_onnx, map_centres, map_code_corners, map_corner_shifts
from models.sampling import corner_shifts
from inference.onnx_runner import OnnxSR
from tests.conftest import shared_path
from tests.helpers import ROOT, error_lines, load_script, one_thread, run_script  # noqa: F401
from utils.checkpoint import load_checkpoint
from utils.coord import make_coord
from utils.errors import UserError
from utils.norm import DEMO

onnxruntime = pytest.importorskip('onnxruntime')  # requirements.txt installs it

pytestmark = pytest.mark.usefixtures('one_thread')

export_script = load_script('scripts/export_onnx.py')

BUNDLED = os.path.join(ROOT, 'weights', 'liif-edsr-baseline.pth')
PARITY = ('edsr-baseline-liif', 'metasr-edsr-baseline', 'liif-plain')


@pytest.fixture(scope='module')
def bundled(tmp_path_factory):
    """The bundled model exported by the script, and the PyTorch model (fast path) it came from."""
    out = str(tmp_path_factory.mktemp('onnx') / 'bundled')
    torch.set_num_threads(1)
    export_script.main(['--model', BUNDLED, '--out', out])
    return {'dir': out, 'runner': OnnxSR.load(out, threads=1),
            'loaded': load_sr(BUNDLED, torch.device('cpu'), DEMO, 'test')}


def _set5_lr(names, scale: int, side: int) -> torch.Tensor:
    """(N, 3, side, side) [0, 1] LR crops: MATLAB bicubic of the top-left side * scale px of each Set5 HR image."""
    crops = []
    for name in names:
        hr = np.asarray(Image.open(shared_path('benchmark', 'Set5', 'HR', name)).convert('RGB'))
        hr = torch.from_numpy(hr[:side * scale, :side * scale].copy()).permute(2, 0, 1)
        crops.append(matlab_lr(hr, scale).float() / 255)
    return torch.stack(crops)


@pytest.mark.parametrize('scale, side, names', [(2, 48, ('bird.png', 'butterfly.png')), (4, 32, ('baby.png',)),
                                                (12, 16, ('head.png',))])
def test_onnxruntime_matches_pytorch_on_set5(bundled, scale, side, names):
    # image sizes, batch sizes and query counts all differ from the example the graphs were traced with
    norm = bundled['loaded'].norm
    inp = norm.inp(_set5_lr(names, scale, side))
    size = (side * scale, side * scale)
    ref = norm.output(upscale(bundled['loaded'].model, inp, size), channel_dim=-3).clamp(0, 1)
    got = norm.output(upscale(bundled['runner'], inp, size, bsize=5000), channel_dim=-3).clamp(0, 1)
    assert got.shape == ref.shape == (len(names), 3, *size)
    assert (got - ref).abs().max().item() <= 1e-4


def test_manifest_records_model_norm_and_query_memory(bundled):
    manifest = onnx_runner.read_manifest(bundled['dir'])
    spec = load_checkpoint(BUNDLED)['model']
    assert manifest.model == {'name': spec['name'], 'args': spec['args']}  # no weights
    assert manifest.norm == bundled['loaded'].norm and manifest.opset >= 16
    model = bundled['loaded'].model
    model.query_mode = 'reference'
    try:
        assert manifest.query_bytes == bytes_per_query(model) > 10000  # the reference query's working memory
    finally:
        model.query_mode = 'fast'


def test_bands_bound_the_onnx_query(bundled):
    seen = []
    runner = bundled['runner']

    class Counting:
        query_bytes = runner.query_bytes

        def encode(self, inp):
            return runner.encode(inp)

        def query(self, feat, coord, cell, **options):
            seen.append(coord.shape[1])
            return runner.query(feat, coord, cell, **options)

    inp = torch.zeros(1, 3, 8, 8)
    bands = list(iter_upscale_bands(Counting(), inp, (64, 64), max_mem_mb=16))
    # 16 MB at ~27 KB per reference query: the 1024-query floor, i.e. 16 rows of 64 per call
    assert seen == [1024] * 4 and [r0 for r0, _ in bands] == [0, 16, 32, 48]


@pytest.mark.parametrize('name', PARITY)
def test_exported_graphs_meet_the_authors_parity_vectors(tmp_path, name):
    ckpt_path = shared_path('reference', 'liif-parity', f'{name}.pth')
    vectors = torch.load(shared_path('reference', 'liif-parity', f'{name}.vectors.pt'))
    loaded = load_sr(ckpt_path, torch.device('cpu'), DEMO, 'test')
    export_onnx(loaded.model, load_checkpoint(ckpt_path)['model'], loaded.norm, str(tmp_path), 1 << 10)
    runner = OnnxSR.load(str(tmp_path), threads=1)
    feat = runner.encode(vectors['input'])
    if 'feat' in vectors:
        assert (feat - vectors['feat']).abs().max().item() <= 1e-5
    for key, case in vectors['cases'].items():
        out = runner.query(feat, case['coord'], case['cell'])
        assert out.shape == case['output'].shape
        assert (out - case['output']).abs().max().item() <= 1e-5, key


class MapGeometry(torch.nn.Module):
    """The numbers the query graphs derive from the map size, as one graph."""

    def forward(self, feat):
        return map_centres(feat), map_code_corners(feat), map_corner_shifts(feat, True)


def test_graph_map_geometry_is_bitwise_the_reference_s(tmp_path):
    # the reference forms these in double and rounds once; float32 arithmetic in the graph differs at
    # a few sizes (e.g. its pixel centres) by an ulp, which can flip a nearest-code choice on a tie
    path = str(tmp_path / 'geometry.onnx')
    torch.onnx.export(MapGeometry(), (torch.zeros(1, 1, 5, 7),), path, dynamo=False, input_names=['feat'],
                      dynamic_axes={'feat': {2: 'h', 3: 'w'}}, opset_version=17)
    session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
    for h in range(1, 600, 1):
        w = 601 - h
        centres, code_corners, shifts = session.run(None, {'feat': np.zeros((1, 1, h, w), np.float32)})
        ref = make_coord((h, w), flatten=False).permute(2, 0, 1).numpy()
        assert np.array_equal(centres[0], ref), (h, w)
        assert np.array_equal(code_corners[0], ref - np.array([1 / h, 1 / w], np.float32).reshape(2, 1, 1))
        assert np.array_equal(shifts, corner_shifts(h, w, True, torch.zeros(1)).numpy()), (h, w)


def test_demo_onnx_gives_the_model_s_image(bundled, tmp_path, caplog):
    src = Image.open(shared_path('benchmark', 'Set5', 'HR', 'bird.png')).convert('RGB').crop((100, 100, 140, 130))
    src.save(tmp_path / 'in.png')
    outs = {}
    caplog.set_level(logging.INFO, logger='demo')
    for flag, value in (('--onnx', bundled['dir']), ('--model', BUNDLED)):
        outs[flag] = tmp_path / f'out{flag}.png'
        demo.main(['--input', str(tmp_path / 'in.png'), flag, value, '--scale', '2.5', '--output',
                   str(outs[flag]), '--bsize', '1000'])
    assert f"running {bundled['dir']} with onnxruntime" in caplog.text
    got, ref = (np.asarray(Image.open(outs[f])).astype(int) for f in ('--onnx', '--model'))
    assert got.shape == ref.shape == (75, 100, 3)
    diff = np.abs(got - ref)
    assert diff.max() <= 1 and diff.mean() < 0.01


def test_demo_bad_onnx_folder_is_one_line_exit_2(tmp_path):
    img = tmp_path / 'in.png'
    Image.new('RGB', (8, 8)).save(img)
    proc = run_script('demo.py', '--input', img, '--onnx', tmp_path / 'missing', '--scale', '2',
                      '--output', tmp_path / 'out.png')
    assert proc.returncode == 2 and error_lines(proc) == [
        f"error: --onnx {tmp_path / 'missing'}: no such folder (make one with scripts/export_onnx.py)"]
    assert not (tmp_path / 'out.png').exists()


def test_bad_export_folders_are_user_errors(bundled, tmp_path):
    with pytest.raises(UserError, match='no manifest.json'):
        OnnxSR.load(str(tmp_path))
    (tmp_path / 'manifest.json').write_text('{"model": 1')
    with pytest.raises(UserError, match='unreadable manifest.json'):
        OnnxSR.load(str(tmp_path))
    manifest = open(os.path.join(bundled['dir'], 'manifest.json')).read()
    (tmp_path / 'manifest.json').write_text(manifest)
    with pytest.raises(UserError, match='encoder.onnx is missing'):
        OnnxSR.load(str(tmp_path))
    (tmp_path / 'encoder.onnx').write_bytes(b'not a graph')
    (tmp_path / 'query.onnx').write_bytes(b'not a graph')
    with pytest.raises(UserError, match='onnxruntime cannot load'):
        OnnxSR.load(str(tmp_path))


def test_missing_onnxruntime_is_a_one_line_hint(bundled, monkeypatch):
    monkeypatch.setattr(onnx_runner, 'onnxruntime', None)
    with pytest.raises(UserError) as e:
        OnnxSR.load(bundled['dir'])
    assert str(e.value) == "onnxruntime is not installed: pip install onnxruntime"


def test_export_without_onnx_is_a_one_line_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'onnx', None)  # import onnx now raises ImportError
    with pytest.raises(UserError) as e:
        export_script.main(['--model', BUNDLED, '--out', str(tmp_path / 'o')])
    assert str(e.value) == "the onnx package is not installed: pip install onnx"
    assert not (tmp_path / 'o').exists()


def test_export_refuses_old_opsets_and_file_outputs(tmp_path):
    with pytest.raises(UserError, match='opset 16'):
        export_script.main(['--model', BUNDLED, '--out', str(tmp_path / 'o'), '--opset', '13'])
    assert not (tmp_path / 'o' / 'manifest.json').exists()
    (tmp_path / 'f').write_text('')
    with pytest.raises(UserError, match='is a file'):
        export_script.main(['--model', BUNDLED, '--out', str(tmp_path / 'f')])


def test_demo_onnx_and_model_are_exclusive(capsys):
    with pytest.raises(SystemExit) as e:
        demo.parse_args(['--input', 'a.png', '--onnx', 'd', '--model', 'm.pth', '--scale', '2', '--output', 'b.png'])
    assert e.value.code == 2 and 'not allowed with' in capsys.readouterr().err
