"""demo.py: any PIL image to any size, bounded memory, one-line errors and no output on failure."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

import demo
from tests.conftest import shared_path
from tests.helpers import (ENCODER_ONLY, PER_CHANNEL_NORM, TINY_LIIF, error_lines,  # noqa: F401
                           load_script, manual_upscale, one_thread, run_script, save_model)
from models import fast_query
from utils.coord import make_cell, make_coord
from utils.amp import Precision
from utils.errors import UserError
from utils.imresize import imresize
from inference.loading import BUNDLED_MODEL, load_sr_model
from inference.thin import OriginalFrameQueries, pad_thin_input

pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture
def files(tmp_path):
    """A 30x40 crop of Set5's bird in several modes, and a tiny LIIF checkpoint."""
    src = Image.open(shared_path('benchmark', 'Set5', 'HR', 'bird.png')).convert('RGB').crop((100, 100, 140, 130))
    rgb = np.asarray(src)
    src.save(tmp_path / 'rgb.png')
    src.convert('L').save(tmp_path / 'gray.png')
    Image.fromarray(np.asarray(src.convert('L')).astype(np.uint16) * 257).save(tmp_path / 'g16.png')
    alpha = np.tile(np.linspace(0, 255, 40).astype(np.uint8), (30, 1))
    Image.fromarray(np.dstack([rgb, alpha])).save(tmp_path / 'rgba.png')
    src.convert('P', palette=Image.ADAPTIVE, colors=16).save(tmp_path / 'pal.png')
    return {'dir': tmp_path, 'model': save_model(tmp_path / 'tiny.pth', TINY_LIIF)}


def _whole_grid(model_path, rgb: np.ndarray, h: int, w: int) -> np.ndarray:
    """The model's output on the whole grid at once (no bands), as 8-bit RGB (h, w, 3)."""
    model = load_sr_model(model_path, torch.device('cpu'))
    inp = (torch.from_numpy(rgb.copy()).permute(2, 0, 1).float().unsqueeze(0) / 255 - 0.5) / 0.5
    coord = make_coord((h, w)).unsqueeze(0)
    with torch.no_grad():
        pred = model(inp, coord, make_cell(coord, (h, w)))
    return (pred * 0.5 + 0.5).clamp(0, 1).mul(255).round().view(h, w, 3).numpy().astype(np.uint8)


def test_rgb_non_integer_scale_matches_whole_grid_query(files):
    out = files['dir'] / 'out.png'
    demo.main(['--input', str(files['dir'] / 'rgb.png'), '--model', files['model'], '--scale', '2.5',
               '--output', str(out), '--bsize', '1000'])  # many small bands
    got = np.asarray(Image.open(out))
    assert Image.open(out).mode == 'RGB' and got.shape == (75, 100, 3)
    ref = _whole_grid(files['model'], np.asarray(Image.open(files['dir'] / 'rgb.png')), 75, 100)
    diff = np.abs(got.astype(int) - ref)
    assert diff.max() <= 1 and diff.mean() < 0.01  # banding changes float rounding at most
    assert [p.name for p in files['dir'].iterdir() if p.name.startswith('.')] == []


def test_per_channel_data_norm_of_the_checkpoint(files, caplog):
    """A model trained with a 3-value data_norm runs on its own normalisation, not the demo's 0.5 / 0.5."""
    ckpt = save_model(files['dir'] / 'norm.pth', TINY_LIIF, data_norm=PER_CHANNEL_NORM)
    out = files['dir'] / 'out.png'
    demo.main(['--input', str(files['dir'] / 'rgb.png'), '--model', ckpt, '--scale', '2', '--output', str(out)])
    got = np.asarray(Image.open(out)).astype(int)
    rgb = np.asarray(Image.open(files['dir'] / 'rgb.png'))
    model = load_sr_model(ckpt, torch.device('cpu'))
    ref = np.round(manual_upscale(model, rgb, (60, 80), PER_CHANNEL_NORM) * 255).transpose(1, 2, 0)
    assert np.abs(got - ref).max() <= 1
    demo_norm = {'inp': {'sub': [0.5], 'div': [0.5]}, 'gt': {'sub': [0.5], 'div': [0.5]}}
    wrong = np.round(manual_upscale(model, rgb, (60, 80), demo_norm) * 255).transpose(1, 2, 0)
    assert np.abs(got - wrong).mean() > 10  # the 0.5 / 0.5 convention gives another picture
    # a released file stores no norm: the demo convention, and the log says so
    caplog.clear()
    with caplog.at_level('INFO', logger='inference.loading'):
        demo.main(['--input', str(files['dir'] / 'rgb.png'), '--model', files['model'], '--scale', '1',
                   '--output', str(out)])
    assert "tiny.pth stores none, using the authors' demo convention (inp sub 0.5 div 0.5" in caplog.text


def test_resolution_and_alpha(files):
    out = files['dir'] / 'out.png'
    demo.main(['--input', str(files['dir'] / 'rgba.png'), '--model', files['model'], '--resolution', '47,33',
               '--output', str(out), '--bsize', '500'])
    got = np.asarray(Image.open(out))
    assert Image.open(out).mode == 'RGBA' and got.shape == (47, 33, 4)
    # alpha is upscaled on its own with (MATLAB) bicubic
    alpha = np.array(Image.open(files['dir'] / 'rgba.png'))[..., 3]
    ref = imresize(torch.from_numpy(alpha).double() / 255, size=(47, 33)).clamp(0, 1).mul(255).round().numpy()
    assert np.abs(got[..., 3] - ref).max() <= 1
    rgb = _whole_grid(files['model'], np.asarray(Image.open(files['dir'] / 'rgba.png'))[..., :3], 47, 33)
    assert np.abs(got[..., :3].astype(int) - rgb).max() <= 1


def test_gray_sixteen_bit_and_palette(files):
    d = files['dir']
    for name in ('gray', 'g16', 'pal'):
        demo.main(['--input', str(d / f'{name}.png'), '--model', files['model'], '--scale', '1.5',
                   '--output', str(d / f'out_{name}.png')])
    gray, g16, pal = (Image.open(d / f'out_{n}.png') for n in ('gray', 'g16', 'pal'))
    assert (gray.mode, gray.size) == ('L', (60, 45)) and pal.mode == 'RGB' and g16.mode.startswith('I;16')
    g8, g16 = np.asarray(gray).astype(int), np.asarray(g16).astype(int)
    assert g16.max() > 255  # the 16-bit input is read as 16-bit, not clipped at 255
    assert np.abs(g16 / 257 - g8).max() <= 1  # same picture: 8-bit * 257 gives the same model input


@pytest.mark.parametrize('precision', ['fp32', 'bf16'])
def test_memory_is_bounded_by_the_output(tmp_path, precision):
    """A x40 upscale (1920 x 1920) of a LIIF with an MLP, through the default fast query path, needs
    little more than its 8-bit output in every precision: no whole-image float tensors."""
    Image.open(shared_path('benchmark', 'Set5', 'HR', 'bird.png')).crop((0, 0, 48, 48)).save(tmp_path / 'in.png')
    model = save_model(tmp_path / 'tiny.pth', TINY_LIIF)
    loaded = load_sr_model(model, torch.device('cpu'))
    assert loaded.query_mode == 'fast' and fast_query.mlp_layers(loaded.imnet)  # the path measured below
    # demo_memory's child: demo.py in a fresh interpreter that prints its own peak RSS
    run_demo = load_script('benchmarks/demo_memory.py').run_demo
    peaks = {}
    for scale in (1, 40):
        result = run_demo(str(tmp_path / 'in.png'), scale, precision, model, str(tmp_path / f'x{scale}.bmp'), 1)
        assert 'error' not in result, result
        peaks[scale] = result['rss_mb'] * 2 ** 20  # exactly ru_maxrss KiB x 1024
    assert Image.open(tmp_path / 'x40.bmp').size == (1920, 1920)
    pixels = 1920 * 1920
    # measured 8.0 bytes per output pixel: the uint8 output (3) and PIL's copy of it while saving.
    # A float32 RGB copy of the output alone is 12 B/px; querying the whole grid at once measured
    # 38 B/px (55 B/px through demo.py with one band, --bsize 1e8)
    assert peaks[40] - peaks[1] < 10 * pixels, peaks


@pytest.mark.parametrize('case', ['missing', 'not-image', 'zero-scale', 'huge', 'wrong-model'])
def test_cli_errors(files, case):
    d = files['dir']
    (d / 'text.png').write_text('hello')
    args = {'missing': ['--input', d / 'nope.png', '--scale', '2'],
            'not-image': ['--input', d / 'text.png', '--scale', '2'],
            'zero-scale': ['--input', d / 'rgb.png', '--scale', '0'],
            'huge': ['--input', d / 'rgb.png', '--resolution', '70000,10'],
            'wrong-model': ['--input', d / 'rgb.png', '--scale', '2']}[case]
    model = save_model(d / 'enc.pth', ENCODER_ONLY) if case == 'wrong-model' else files['model']
    proc = run_script('demo.py', *args, '--model', model, '--output', d / 'out.png')
    assert proc.returncode == 2
    errors = error_lines(proc)
    assert len(errors) == 1 and errors[0].startswith('error: '), proc.stderr
    assert {'missing': 'image not found', 'not-image': 'cannot read image', 'zero-scale': 'positive',
            'huge': 'beyond the limits', 'wrong-model': 'not an arbitrary-scale SR model'}[case] in errors[0]
    assert not os.path.exists(d / 'out.png')


@pytest.mark.parametrize('args,match', [
    (['--scale', '-2'], 'positive'), (['--scale', 'nan'], 'positive'), (['--scale', '0.001'], 'at least 1x1'),
    (['--resolution', '0,5'], 'at least 1x1'), (['--resolution', '40000,40000'], 'beyond the limits'),
    (['--resolution', '5'], 'H,W'), (['--scale', '1e300'], 'limit')])
def test_bad_sizes(files, args, match):
    out = files['dir'] / 'out.png'
    with pytest.raises(UserError, match=match):
        demo.main(['--input', str(files['dir'] / 'rgb.png'), '--model', files['model'], *args, '--output', str(out)])
    assert not out.exists()


def test_bundled_model(files):
    out = files['dir'] / 'out.png'
    argv = ['--input', str(files['dir'] / 'rgb.png'), '--scale', '1', '--output', str(out)]
    if os.path.isfile(BUNDLED_MODEL):
        demo.main(argv)
        assert out.exists()
    else:
        with pytest.raises(UserError, match='no bundled model.*--model'):
            demo.main(argv)
        assert not out.exists()


def _blocks(h=16, w=24):
    img = np.zeros((h, w, 3), np.uint8)
    img[:h // 2, :w // 2] = (220, 30, 30)
    img[h // 2:, w // 2:] = (30, 30, 220)
    return img


def test_exif_orientation_gives_an_upright_output(files, caplog):
    """A phone JPEG stored sideways (orientation 6) is upscaled upright; the output has no tag to rotate it again."""
    caplog.set_level('INFO')
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_blocks()).save(files['dir'] / 'phone.jpg', quality=100, exif=exif.tobytes())
    out = files['dir'] / 'out.png'
    demo.main(['--input', str(files['dir'] / 'phone.jpg'), '--model', files['model'], '--scale', '2',
               '--output', str(out)])
    assert Image.open(out).size == (32, 48)  # (width, height): stored 24 wide and 16 tall, shown 16 x 24
    assert 0x0112 not in Image.open(out).getexif()
    assert any('EXIF orientation 6 applied (rotated 90 clockwise)' in r.message for r in caplog.records)


def test_output_that_is_the_input_needs_overwrite(files):
    src = files['dir'] / 'rgb.png'
    before = src.read_bytes()
    with pytest.raises(UserError, match=r'--output .*rgb\.png is the input file: .* pass --overwrite'):
        demo.main(['--input', str(src), '--model', files['model'], '--scale', '2', '--output',
                   str(files['dir'] / '.' / 'rgb.png')])
    assert src.read_bytes() == before
    demo.main(['--input', str(src), '--model', files['model'], '--scale', '2', '--output', str(src), '--overwrite'])
    assert Image.open(src).size == (80, 60)


def test_output_folder_fails_before_the_model_is_loaded(files):
    (files['dir'] / 'out.png').mkdir()
    # the checkpoint does not exist either: the folder must be what is reported
    with pytest.raises(UserError, match=r'^output path .*out\.png is a folder: give a file name'):
        demo.main(['--input', str(files['dir'] / 'rgb.png'), '--model', str(files['dir'] / 'none.pth'),
                   '--scale', '2', '--output', str(files['dir'] / 'out.png')])


@pytest.mark.parametrize('args, message', [
    (['--resolution', '-5,5'], r'^output size 5x-5 must be at least 1x1 pixel$'),
    (['--resolution', '-5'], r"^--resolution takes H,W in pixels, not '-5'$"),
    (['--scale', '-2.5'], r'^--scale must be a positive number, not -2.5$')])
def test_negative_sizes_are_one_line_errors_not_usage(files, args, message):
    with pytest.raises(UserError, match=message):
        demo.main(['--input', str(files['dir'] / 'rgb.png'), '--model', files['model'], *args,
                   '--output', str(files['dir'] / 'o.png')])


def test_sizes_are_written_width_by_height(files, caplog, capsys):
    caplog.set_level('INFO')
    demo.main(['--input', str(files['dir'] / 'rgb.png'), '--model', files['model'], '--resolution', '47,33',
               '--output', str(files['dir'] / 'o.png')])
    assert capsys.readouterr().out == f"wrote {files['dir'] / 'o.png'} (33x47, width x height)\n"
    assert any('40x30 -> 33x47 (width x height)' in r.message for r in caplog.records)


def test_downscale_is_antialiased_not_point_sampled(files, caplog):
    """--scale 0.5 of fine stripes: MATLAB's antialiased imresize (gray, no moire), not LIIF's point samples."""
    caplog.set_level('INFO')
    stripes = np.tile(np.array([0, 255, 255], np.uint8), (40, 14))[:, :40]
    Image.fromarray(np.dstack([stripes] * 3)).save(files['dir'] / 'stripes.png')
    out = files['dir'] / 'small.png'
    demo.main(['--input', str(files['dir'] / 'stripes.png'), '--model', files['model'], '--scale', '0.5',
               '--output', str(out)])
    got = np.asarray(Image.open(out)).astype(int)
    ref = imresize(torch.from_numpy(stripes).double() / 255, size=(20, 20)).clamp(0, 1).mul(255).round().numpy()
    assert got.shape == (20, 20, 3) and np.abs(got - ref[..., None]).max() <= 1
    assert any('antialiased bicubic downscale' in r.message for r in caplog.records)
    # one side smaller, the other larger: the model runs, with a warning about the smaller side
    demo.main(['--input', str(files['dir'] / 'stripes.png'), '--model', files['model'], '--resolution', '80,20',
               '--output', str(out)])
    assert [r.message for r in caplog.records if r.levelname == 'WARNING'] == [
        "the output is smaller than the input in width: LIIF samples without a low-pass filter, so detail finer "
        "than the output grid aliases (moire) along it"]


@pytest.mark.parametrize('hw', [(1, 40), (2, 40), (40, 1)])
def test_thin_inputs_keep_their_colour(tmp_path, hw):
    """A uniform red line 1 px tall came out about (165, 44, 41) at its centre and up to 88 levels off."""
    if not os.path.isfile(BUNDLED_MODEL):
        pytest.skip("the bundled model is needed: a random one has no colour to keep")
    Image.fromarray(np.tile(np.array([200, 10, 10], np.uint8), (*hw, 1))).save(tmp_path / 'line.png')
    demo.main(['--input', str(tmp_path / 'line.png'), '--scale', '4', '--output', str(tmp_path / 'out.png')])
    got = np.asarray(Image.open(tmp_path / 'out.png')).astype(int)
    assert got.shape == (hw[0] * 4, hw[1] * 4, 3)
    assert np.abs(got - [200, 10, 10]).max() <= 3


def test_thin_padding_keeps_the_output_grid():
    """Queries of the padded image land on the original pixel centres, with the original cells."""
    rgb = torch.rand(3, 2, 3)
    padded = pad_thin_input(None, rgb)
    assert padded.rgb.shape == (3, 2 + 16, 3 + 16) and padded.rows == padded.cols == 8
    assert torch.equal(padded.rgb[:, 8:10, 8:11], rgb) and torch.equal(padded.rgb[:, 0, 8:11], rgb[:, 0])
    assert pad_thin_input(None, torch.rand(3, 4, 4)) is None
    seen = []

    class Probe:
        def query(self, feat, coord, cell, **options):
            seen.append((coord, cell))

        def query_int8(self, feat, coord, cell, **options):
            seen.append((coord, cell))

    coord = make_coord((2, 3))
    wrapped = OriginalFrameQueries(Probe(), padded.model.factors)
    wrapped.query(None, coord, make_cell(coord, (2, 3)))
    wrapped.query_int8(None, coord, make_cell(coord, (2, 3)))   # the viewer's int8 tiles: the same points
    big = make_coord((18, 19)).view(18, 19, 2)[8:10, 8:11].reshape(-1, 2)
    assert len(seen) == 2
    for got_coord, got_cell in seen:
        np.testing.assert_allclose(got_coord, big, atol=1e-6)
        np.testing.assert_allclose(got_cell, make_cell(big, (18, 19)), atol=1e-6)


def test_gpu_without_cuda_stops(files, monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with pytest.raises(UserError, match=r'^--gpu 0: CUDA is not available here'):
        demo.main(['--input', str(files['dir'] / 'rgb.png'), '--model', files['model'], '--scale', '2',
                   '--output', str(files['dir'] / 'o.png'), '--gpu', '0'])
    assert not (files['dir'] / 'o.png').exists()


def test_untrusted_checkpoint_names_the_flag(files):
    ckpt = torch.load(files['model'], weights_only=True)
    ckpt['extra'] = UserError('x')
    torch.save(ckpt, files['dir'] / 'objects.pth')
    argv = ['--input', str(files['dir'] / 'rgb.png'), '--model', str(files['dir'] / 'objects.pth'), '--scale', '2',
            '--output', str(files['dir'] / 'o.png')]
    with pytest.raises(UserError, match='if you trust its source, pass --trust-checkpoint'):
        demo.main(argv)
    demo.main(argv + ['--trust-checkpoint'])
    assert Image.open(files['dir'] / 'o.png').size == (80, 60)


def test_animated_input_warns_once(files, caplog):
    frames = [Image.fromarray(np.full((6, 5, 3), v, np.uint8)) for v in (10, 128, 250)]
    frames[0].save(files['dir'] / 'anim.gif', save_all=True, append_images=frames[1:], duration=50)
    demo.main(['--input', str(files['dir'] / 'anim.gif'), '--model', files['model'], '--scale', '2',
               '--output', str(files['dir'] / 'o.png')])
    assert [r.message for r in caplog.records if r.levelname == 'WARNING'] == [
        f"{files['dir'] / 'anim.gif'}: 3 frames: only frame 1 is used"]


def test_precision_bf16_stays_within_the_measured_bound(files, caplog):
    """bf16 changes a share of the 8-bit values by at most 2 levels (Set5 x2-x4 with the bundled model: max 2)."""
    caplog.set_level('INFO', logger='demo')
    out = {}
    for precision in ('fp32', 'bf16'):
        out[precision] = files['dir'] / f'{precision}.png'
        demo.main(['--input', str(files['dir'] / 'rgb.png'), '--scale', '2', '--output', str(out[precision]),
                   '--precision', precision])
    assert "precision bf16 (asked for)" in caplog.messages
    diff = np.abs(np.asarray(Image.open(out['bf16'])).astype(int) - np.asarray(Image.open(out['fp32'])))
    assert 0 < diff.max() <= 2  # bf16 really ran, and stays within the bound
    assert 0 < (diff > 0).mean() < 0.25


def test_precision_auto_logs_its_choice(files, caplog, monkeypatch):
    caplog.set_level('INFO', logger='demo')
    monkeypatch.setattr(demo, 'resolve_precision', lambda choice, device: Precision(None, f"auto: stub {choice}"))
    demo.main(['--input', str(files['dir'] / 'rgb.png'), '--model', files['model'], '--scale', '2',
               '--output', str(files['dir'] / 'o.png'), '--precision', 'auto'])
    assert "precision fp32 (auto: stub auto)" in caplog.messages


@pytest.mark.parametrize('extra,message', [
    (['--precision', 'fp16'], "error: --precision fp16 is for CUDA: on the CPU it is several times slower than fp32;"
                              " use fp32 or bf16"),
    (['--precision', 'fp64'], "error: --precision must be one of fp32, bf16, fp16, auto, not 'fp64'"),
])
def test_precision_refusals_are_one_line(files, extra, message):
    proc = run_script('demo.py', '--input', files['dir'] / 'rgb.png', '--model', files['model'], '--scale', '2',
                      '--output', files['dir'] / 'o.png', '--gpu', 'cpu', *extra)
    assert proc.returncode == 2 and error_lines(proc) == [message]
    assert not (files['dir'] / 'o.png').exists()


def test_test_time_flags_apply_the_authors_cell_enlargement(files):
    out = files['dir'] / 'x8.png'
    rgb = np.asarray(Image.open(files['dir'] / 'rgb.png'))
    demo.main(['--input', str(files['dir'] / 'rgb.png'), '--model', files['model'], '--scale', '8',
               '--cell-max-scale', '4', '--output', str(out)])
    model = load_sr_model(files['model'], torch.device('cpu'))
    inp = (torch.from_numpy(rgb.copy()).permute(2, 0, 1).float().unsqueeze(0) / 255 - 0.5) / 0.5
    coord = make_coord((240, 320)).unsqueeze(0)
    with torch.no_grad():
        pred = model(inp, coord, make_cell(coord, (240, 320)) * 2)  # max(8 / 4, 1)
    ref = (pred * 0.5 + 0.5).clamp(0, 1).mul(255).round().view(240, 320, 3).numpy().astype(np.uint8)
    diff = np.abs(np.asarray(Image.open(out)).astype(int) - ref)
    assert diff.max() <= 1 and diff.mean() < 0.01


@pytest.mark.parametrize('args, message', [
    (['--cell-max-scale', 'big'], "cell_max_scale must be a number or 'none'"),
    (['--window', '64'], 'window padding 64 needs an input of at least 64 x 64 px'),
])
def test_bad_test_time_flags_are_one_line_errors(files, args, message):
    out = files['dir'] / 'bad.png'
    with pytest.raises(UserError, match=message):
        demo.main(['--input', str(files['dir'] / 'rgb.png'), '--model', files['model'], '--scale', '2',
                   *args, '--output', str(out)])
    assert not out.exists()
