import os

import numpy as np
import pytest
from PIL import Image

from utils.errors import UserError
from utils.image_io import output_format, read_image, save_atomic


def _rgb(h=6, w=5):
    return np.random.RandomState(0).randint(0, 256, (h, w, 3)).astype(np.uint8)


def test_modes(tmp_path):
    rgb = _rgb()
    Image.fromarray(rgb).save(tmp_path / 'rgb.png')
    img = read_image(str(tmp_path / 'rgb.png'))
    assert img.size == (6, 5) and not img.gray and img.alpha is None and img.bits == 8
    assert np.array_equal((img.rgb.permute(1, 2, 0).numpy() * 255).round(), rgb)

    Image.fromarray(rgb[..., 0]).save(tmp_path / 'l.png')
    img = read_image(str(tmp_path / 'l.png'))
    assert img.gray and img.rgb.shape == (3, 6, 5) and bool((img.rgb[0] == img.rgb[2]).all())

    rgba = np.dstack([rgb, np.arange(30, dtype=np.uint8).reshape(6, 5) * 8])
    Image.fromarray(rgba).save(tmp_path / 'rgba.png')
    img = read_image(str(tmp_path / 'rgba.png'))
    assert not img.gray and np.array_equal((img.alpha[0].numpy() * 255).round(), rgba[..., 3])

    Image.fromarray(rgba[..., [0, 3]]).save(tmp_path / 'la.png')
    img = read_image(str(tmp_path / 'la.png'))
    assert img.gray and img.alpha is not None

    pal = Image.fromarray(rgb).convert('P', palette=Image.ADAPTIVE, colors=8)
    pal.save(tmp_path / 'p.png')
    img = read_image(str(tmp_path / 'p.png'))
    assert not img.gray and img.alpha is None and img.rgb.shape == (3, 6, 5)
    pal.save(tmp_path / 'pt.png', transparency=0)
    assert read_image(str(tmp_path / 'pt.png')).alpha is not None


def test_sixteen_bit_is_not_clipped(tmp_path):
    g16 = np.linspace(0, 65535, 30).astype(np.uint16).reshape(5, 6)
    Image.fromarray(g16).save(tmp_path / 'g16.png')
    img = read_image(str(tmp_path / 'g16.png'))
    assert img.gray and img.bits == 16
    np.testing.assert_allclose(img.rgb[1].numpy() * 65535, g16, atol=0.01)


def test_unreadable_inputs(tmp_path):
    with pytest.raises(UserError, match='not found'):
        read_image(str(tmp_path / 'missing.png'))
    (tmp_path / 'text.png').write_text('not an image')
    with pytest.raises(UserError, match='cannot read image'):
        read_image(str(tmp_path / 'text.png'))
    Image.fromarray(_rgb(64, 64)).save(tmp_path / 'full.png')
    (tmp_path / 'cut.png').write_bytes((tmp_path / 'full.png').read_bytes()[:200])
    with pytest.raises(UserError, match='cannot read image') as e:
        read_image(str(tmp_path / 'cut.png'))
    assert '\n' not in str(e.value)


def test_output_paths_and_atomic_save(tmp_path):
    assert output_format(str(tmp_path / 'a.PNG')) == 'PNG'
    assert output_format(str(tmp_path / 'a.jpg')) == 'JPEG'
    with pytest.raises(UserError, match='extension'):
        output_format(str(tmp_path / 'a.xyz'))
    with pytest.raises(UserError, match='folder does not exist'):
        output_format(str(tmp_path / 'no' / 'a.png'))
    save_atomic(_rgb(), str(tmp_path / 'ok.png'), 'PNG')
    assert np.array_equal(np.asarray(Image.open(tmp_path / 'ok.png')), _rgb())
    with pytest.raises(UserError, match='cannot write'):
        save_atomic(np.zeros((4, 4, 4), np.uint8), str(tmp_path / 'bad.jpg'), 'JPEG')  # no RGBA in JPEG
    assert sorted(os.listdir(tmp_path)) == ['ok.png']
