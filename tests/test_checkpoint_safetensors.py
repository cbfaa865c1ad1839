"""utils/checkpoint.py's .safetensors format: the released checkpoint dict, bit for bit, and one-line errors."""
import json
import os
import struct

import numpy as np
import pytest
import safetensors
import safetensors.torch
import torch
from PIL import Image

import demo
import models
import utils.checkpoint as checkpoint
from inference.loading import load_model
from tests.conftest import shared_path
from tests.helpers import PER_CHANNEL_NORM, ROOT, TINY_LIIF, error_lines, one_thread, run_script  # noqa: F401
from utils.checkpoint import load_checkpoint, model_spec, save_checkpoint, save_safetensors
from utils.errors import UserError

BUNDLED = os.path.join(ROOT, 'weights', 'liif-edsr-baseline.pth')


def _tiny_ckpt(**extra):
    torch.manual_seed(0)
    return {'model': model_spec(models.make(TINY_LIIF), TINY_LIIF['name'], TINY_LIIF['args']), **extra}


def _assert_same_checkpoint(got, want):
    """Same keys, same non-tensor values, and a state dict equal bit for bit, in dtype and key order."""
    assert got.keys() == want.keys()
    assert {k: v for k, v in got.items() if k != 'model'} == {k: v for k, v in want.items() if k != 'model'}
    assert {k: v for k, v in got['model'].items() if k != 'sd'} == {k: v for k, v in want['model'].items()
                                                                     if k != 'sd'}
    assert list(got['model']['sd']) == list(want['model']['sd'])
    for k, v in want['model']['sd'].items():
        g = got['model']['sd'][k]
        assert g.dtype == v.dtype and g.shape == v.shape and torch.equal(g, v), k


@pytest.fixture(scope='module')
def bundled_st(tmp_path_factory):
    """The bundled model's checkpoint, as loaded from its .pth and written as .safetensors."""
    ckpt = load_checkpoint(BUNDLED)
    path = tmp_path_factory.mktemp('st') / 'liif-edsr-baseline.safetensors'
    save_safetensors(path, ckpt)
    return ckpt, path


def test_bundled_model_round_trip_is_bit_identical(bundled_st):
    ckpt, path = bundled_st
    back = load_checkpoint(path)
    _assert_same_checkpoint(back, ckpt)
    assert back['meta']['global_step'] == 12012  # the metadata made it, not just empty dicts
    x = (torch.rand(1, 3, 8, 8), torch.rand(1, 30, 2) * 2 - 1, torch.full((1, 30, 2), 2 / 16))
    with torch.no_grad():
        assert torch.equal(load_model(path)(*x), load_model(BUNDLED)(*x))
    assert sorted(os.listdir(path.parent)) == [path.name]  # written atomically: no temporary left


def test_file_is_plain_safetensors_for_other_loaders(bundled_st):
    """Any safetensors reader sees the state dict's tensors and the checkpoint as JSON metadata."""
    ckpt, path = bundled_st
    with safetensors.safe_open(str(path), framework='pt') as f:
        meta = f.metadata()
        assert set(f.keys()) == set(ckpt['model']['sd'])
        name = next(iter(ckpt['model']['sd']))
        assert torch.equal(f.get_tensor(name), ckpt['model']['sd'][name])
    assert meta['format'] == 'pt' and meta['liif_version'] == '1'
    doc = json.loads(meta['liif'])
    assert doc['model']['name'] == 'liif' and doc['model']['args'] == ckpt['model']['args']
    assert doc['meta'] == ckpt['meta'] and doc['model']['sd'] == list(ckpt['model']['sd'])


def test_demo_gives_the_same_image_from_either_format(bundled_st, tmp_path, one_thread):  # noqa: F811
    _, path = bundled_st
    src = Image.open(shared_path('benchmark', 'Set5', 'HR', 'bird.png')).convert('RGB').crop((100, 100, 116, 112))
    src.save(tmp_path / 'in.png')
    outs = {}
    for model in (BUNDLED, str(path)):
        out = tmp_path / (os.path.basename(model) + '.png')
        demo.main(['--input', str(tmp_path / 'in.png'), '--model', model, '--scale', '2.5', '--output', str(out)])
        outs[model] = out.read_bytes()
    assert outs[BUNDLED] == outs[str(path)]
    assert np.asarray(Image.open(tmp_path / 'liif-edsr-baseline.pth.png')).shape == (30, 40, 3)


def test_extras_shared_and_strided_tensors_round_trip(tmp_path):
    """Views, transposes and tensors sharing storage (which safetensors refuses as such) are stored as copies."""
    ckpt = _tiny_ckpt(data_norm=PER_CHANNEL_NORM, epoch=3, meta={'note': 'ü', 'psnr': 31.25, 'cfg': None})
    sd = ckpt['model']['sd']
    base = torch.arange(12.).view(3, 4)
    sd['a.t'], sd['a.view'], sd['a.same'] = base.t(), base[1:], base
    sd['steps'] = torch.tensor(5, dtype=torch.int64)
    save_safetensors(tmp_path / 'x.safetensors', ckpt)
    _assert_same_checkpoint(load_checkpoint(tmp_path / 'x.safetensors'), ckpt)


def test_fp16_weights_keep_their_dtype(tmp_path):
    ckpt = _tiny_ckpt()
    ckpt['model']['sd'] = {k: v.half() for k, v in ckpt['model']['sd'].items()}
    save_safetensors(tmp_path / 'h.safetensors', ckpt)
    _assert_same_checkpoint(load_checkpoint(tmp_path / 'h.safetensors'), ckpt)


def test_format_is_told_by_content_whatever_the_name(tmp_path):
    """A safetensors file named .pth, and a torch.save file named .safetensors, both load."""
    ckpt = _tiny_ckpt(epoch=2)
    save_safetensors(tmp_path / 'st.pth', ckpt)
    _assert_same_checkpoint(load_checkpoint(tmp_path / 'st.pth'), ckpt)
    save_checkpoint(tmp_path / 'torch.safetensors', ckpt['model'], epoch=2)
    _assert_same_checkpoint(load_checkpoint(tmp_path / 'torch.safetensors'), ckpt)


def test_only_plain_data_is_saved(tmp_path):
    """What JSON would change (tuples, int keys, objects, tensors outside the state dict) is refused up front."""
    cases = {'optimizer': {'state': {0: {'step': torch.tensor(1.)}}}, 'steps': (1, 2), 'obj': UserError('x')}
    for key, value in cases.items():
        with pytest.raises(UserError, match=f"checkpoint entry {key!r} is not plain JSON data") as e:
            save_safetensors(tmp_path / 'x.safetensors', _tiny_ckpt(**{key: value}))
        assert '\n' not in str(e.value)
    ckpt = _tiny_ckpt()
    ckpt['model']['sd']['_extra_state'] = {'a': 1}
    with pytest.raises(UserError, match="'_extra_state' is not a tensor"):
        save_safetensors(tmp_path / 'x.safetensors', ckpt)
    with pytest.raises(UserError, match='only a LIIF checkpoint'):
        save_safetensors(tmp_path / 'x.safetensors', {'weights': {}})
    assert os.listdir(tmp_path) == []


@pytest.fixture
def good(tmp_path):
    """A tiny model's checkpoint as .safetensors, and its bytes."""
    path = tmp_path / 'good.safetensors'
    save_safetensors(path, _tiny_ckpt(data_norm=PER_CHANNEL_NORM))
    return path, path.read_bytes()


def _header(data: bytes):
    (n,) = struct.unpack('<Q', data[:8])
    return n, json.loads(data[8:8 + n])


def _with_header(data: bytes, header) -> bytes:
    """The file with another header (tensor bytes unchanged)."""
    n, _ = _header(data)
    raw = json.dumps(header).encode()
    return struct.pack('<Q', len(raw)) + raw + data[8 + n:]


def _one_line_error(path, match):
    with pytest.raises(UserError, match=match) as e:
        load_checkpoint(path)
    assert '\n' not in str(e.value) and str(path) in str(e.value)
    return str(e.value)


@pytest.mark.parametrize('cut', [0, 5, 8, 9, 100, 0.5, -1])
def test_truncated_file_is_one_line_error(tmp_path, good, cut):
    _, data = good
    n = int(len(data) * cut) if isinstance(cut, float) else (cut if cut >= 0 else len(data) + cut)
    bad = tmp_path / 'bad.safetensors'
    bad.write_bytes(data[:n])
    _one_line_error(bad, 'truncated')


def _tampered(data: bytes, how: str) -> bytes:
    n, header = _header(data)
    meta = header['__metadata__']
    name = next(k for k in header if k != '__metadata__')
    if how == 'header json':
        return data[:8] + b'[' + data[9:]  # the header's opening brace, damaged
    if how == 'header body':
        return data[:8 + n - 1] + b'x' + data[8 + n:]  # its closing brace
    if how == 'header length':
        return struct.pack('<Q', n + 10 ** 9) + data[8:]
    if how == 'liif json':
        meta['liif'] = meta['liif'][:-5]
    elif how == 'no spec':
        del meta['liif']
    elif how == 'liif not a string':
        meta['liif'] = 5
    elif how == 'names not strings':
        doc = json.loads(meta['liif'])
        doc['model']['sd'][0] = {'a': 1}
        meta['liif'] = json.dumps(doc)
    elif how == 'spec without model':
        meta['liif'] = json.dumps({'data_norm': None})
    elif how == 'version':
        meta['liif_version'] = '99'
    elif how in ('tensor unlisted', 'tensor listed twice'):
        doc = json.loads(meta['liif'])
        if how == 'tensor listed twice':
            doc['model']['sd'].append(name)
        else:
            doc['model']['sd'].remove(name)
        meta['liif'] = json.dumps(doc)
    elif how == 'tensor removed':
        del header[name]
    elif how == 'offsets':
        header[name]['data_offsets'] = 'x'
    elif how == 'dtype':
        header[name]['dtype'] = 'F64'  # the byte count no longer fits the shape
    return _with_header(data, header)


@pytest.mark.parametrize('how, match', [
    ('header json', 'not a safetensors file'),
    ('header body', r'damaged safetensors header \(not a JSON object\)'),
    ('header length', r'truncated \(header length'),
    ('liif not a string', "damaged safetensors checkpoint: its 'liif' metadata is not valid JSON"),
    ('names not strings', r"its 'liif' metadata needs a 'model' entry with 'name', 'args' and 'sd' \(the list"),
    ('liif json', "damaged safetensors checkpoint: its 'liif' metadata is not valid JSON"),
    ('no spec', "is not a LIIF checkpoint: its safetensors header has no 'liif' metadata"),
    ('spec without model', "is not a LIIF checkpoint: its 'liif' metadata needs a 'model' entry"),
    ('version', "layout version '99', this code reads 1"),
    ('tensor unlisted', r'damaged safetensors checkpoint: 1 tensor\(s\) not listed \(encoder\.[\w.]+\)$'),
    ('tensor listed twice', r'damaged safetensors checkpoint: weights listed twice$'),
    ('tensor removed', r'damaged safetensors checkpoint: 1 listed weight\(s\) missing \(encoder\.[\w.]+\)$'),
    ('offsets', r'damaged safetensors header \(bad tensor entries\)'),
    ('dtype', r'damaged safetensors checkpoint \('),
])
def test_tampered_file_is_one_line_error(tmp_path, good, how, match):
    _, data = good
    bad = tmp_path / 'bad.safetensors'
    bad.write_bytes(_tampered(data, how))
    _one_line_error(bad, match)


def test_trailing_bytes_are_damage(tmp_path, good):
    _, data = good
    (tmp_path / 'long.safetensors').write_bytes(data + b'\0')
    _one_line_error(tmp_path / 'long.safetensors', r'damaged \(the header describes')


def test_garbage_and_foreign_files(tmp_path):
    (tmp_path / 'text.safetensors').write_text('hello, this is not a checkpoint')
    _one_line_error(tmp_path / 'text.safetensors', 'not a safetensors file')
    # a safetensors file of someone else's model: tensors, no spec
    safetensors.torch.save_file({'w': torch.zeros(2)}, str(tmp_path / 'foreign.safetensors'))
    _one_line_error(tmp_path / 'foreign.safetensors', "no 'liif' metadata")


def test_weights_missing_from_the_spec_are_summarised(tmp_path):
    ckpt = _tiny_ckpt()
    ckpt['model']['sd'] = {k: v for k, v in ckpt['model']['sd'].items() if k.startswith('imnet')}
    save_safetensors(tmp_path / 'part.safetensors', ckpt)
    with pytest.raises(UserError, match=r"state dict does not fit model 'liif': \d+ of \d+ weights missing"):
        load_model(tmp_path / 'part.safetensors')


def test_missing_package_is_a_one_line_hint(tmp_path, good, monkeypatch):
    path, _ = good
    monkeypatch.setattr(checkpoint, 'safetensors_torch', None)
    hint = 'safetensors files need the safetensors package: pip install safetensors'
    assert _one_line_error(path, 'pip install safetensors') == f"cannot read checkpoint {path}: {hint}"
    with pytest.raises(UserError) as e:
        save_safetensors(tmp_path / 'x.safetensors', _tiny_ckpt())
    assert str(e.value) == f"cannot write {tmp_path / 'x.safetensors'}: {hint}"
    save_checkpoint(tmp_path / 'still.pth', _tiny_ckpt()['model'])  # .pth files need no safetensors
    assert load_checkpoint(tmp_path / 'still.pth')['model']['name'] == 'liif'


def test_script_reports_a_truncated_file_in_one_line(tmp_path, good):
    _, data = good
    (tmp_path / 'cut.safetensors').write_bytes(data[:len(data) // 2])
    proc = run_script('demo.py', '--input', shared_path('benchmark', 'Set5', 'HR', 'bird.png'),
                      '--model', tmp_path / 'cut.safetensors', '--scale', '2', '--output', tmp_path / 'o.png')
    assert proc.returncode == 2
    lines = error_lines(proc)
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot read checkpoint {tmp_path / 'cut.safetensors'}: "
                                                   f"truncated (the header describes")
    assert not (tmp_path / 'o.png').exists()
