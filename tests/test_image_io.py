import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from utils.errors import UserError
from utils.image_io import ORIENTATIONS, decode, output_format, read_image, save_atomic


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


def _blocks(h=16, w=24):
    """Four flat quadrants: survives JPEG at quality 100 within a few levels, and shows any rotation."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:h // 2, :w // 2] = (220, 30, 30)
    img[:h // 2, w // 2:] = (30, 220, 30)
    img[h // 2:, :w // 2] = (30, 30, 220)
    img[h // 2:, w // 2:] = (220, 220, 30)
    return img


@pytest.mark.parametrize('orientation', [3, 6, 8])
def test_exif_orientation_is_applied(tmp_path, orientation):
    """A phone JPEG stored sideways with orientation 6 is read upright, as photo viewers show it."""
    src = _blocks()
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(src).save(tmp_path / 'phone.jpg', quality=100, exif=exif.tobytes())
    Image.fromarray(src).save(tmp_path / 'plain.jpg', quality=100)  # the same pixels, no tag
    stored = np.asarray(Image.open(tmp_path / 'plain.jpg'))
    img = read_image(str(tmp_path / 'phone.jpg'))
    upright = {3: np.rot90(stored, 2), 6: np.rot90(stored, -1), 8: np.rot90(stored, 1)}[orientation]
    assert img.size == upright.shape[:2]
    assert np.array_equal((img.rgb.permute(1, 2, 0).numpy() * 255).round(), upright)
    assert img.notes == [f"EXIF orientation {orientation} applied ({ORIENTATIONS[orientation]})"]


def test_float_images_are_read_by_their_range(tmp_path):
    """A 32-bit float TIFF in [0, 1] is [0, 1], not 1/255 of it (nearly black); [0, 255] floats are 8-bit-like."""
    values = np.linspace(0, 1, 30, dtype=np.float32).reshape(5, 6)
    Image.fromarray(values, mode='F').save(tmp_path / 'f.tif')
    img = read_image(str(tmp_path / 'f.tif'))
    assert img.gray and img.bits == 16
    np.testing.assert_allclose(img.rgb[0].numpy(), values, atol=1e-7)
    assert img.notes == ["mode F values in [0, 1] read as [0, 1]"]
    Image.fromarray(values * 200, mode='F').save(tmp_path / 'f255.tif')
    np.testing.assert_allclose(read_image(str(tmp_path / 'f255.tif')).rgb[0].numpy(), values * 200 / 255, atol=1e-6)
    Image.fromarray(values * 1e6, mode='F').save(tmp_path / 'huge.tif')
    with pytest.raises(UserError, match='values reach 1e.06, beyond any known range'):
        read_image(str(tmp_path / 'huge.tif'))
    nan = values.copy()
    nan[0, 0] = np.nan
    Image.fromarray(nan, mode='F').save(tmp_path / 'nan.tif')
    with pytest.raises(UserError, match='NaN'):
        read_image(str(tmp_path / 'nan.tif'))


def _png16(path, arr: np.ndarray) -> None:
    """Write a 16-bit RGB(A) PNG (PIL cannot), rows filtered with each of PNG's five filters in turn."""
    h, w, c = arr.shape
    bpp = 2 * c
    data = arr.astype('>u2').view(np.uint8).reshape(h, w * bpp).astype(np.int32)
    rows = []
    for y in range(h):
        x, kind = data[y], y % 5
        up = data[y - 1] if y else np.zeros_like(x)
        left = np.concatenate([np.zeros(bpp, np.int32), x[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.int32), up[:-bpp]])
        p = left + up - upleft
        pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
        paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
        pred = [np.zeros_like(x), left, up, (left + up) // 2, paeth][kind]
        rows.append(bytes([kind]) + ((x - pred) & 0xFF).astype(np.uint8).tobytes())

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack('>I', len(body)) + tag + body + struct.pack('>I', zlib.crc32(tag + body))

    ihdr = struct.pack('>IIBBBBB', w, h, 16, 2 if c == 3 else 6, 0, 0, 0)
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', zlib.compress(b''.join(rows)))
                     + chunk(b'IEND', b''))


@pytest.mark.parametrize('channels', [3, 4])
def test_sixteen_bit_rgb_png_keeps_sixteen_bits(tmp_path, channels):
    """PIL reads 16-bit RGB PNGs as 8-bit RGB; here every filter type is undone and the 16 bits kept."""
    arr = np.random.RandomState(1).randint(0, 65536, (11, 7, channels)).astype(np.uint16)
    _png16(tmp_path / 'rgb16.png', arr)
    assert Image.open(tmp_path / 'rgb16.png').mode in ('RGB', 'RGBA')  # what PIL alone gives: 8 bits
    img = read_image(str(tmp_path / 'rgb16.png'))
    assert not img.gray and img.bits == 16 and img.size == (11, 7)
    np.testing.assert_allclose(img.rgb.permute(1, 2, 0).numpy() * 65535, arr[..., :3], atol=0.02)
    assert (img.alpha is None) == (channels == 3)
    if channels == 4:
        np.testing.assert_allclose(img.alpha[0].numpy() * 65535, arr[..., 3], atol=0.02)


def _gradient_rgb() -> Image.Image:
    y, x = np.mgrid[0:6, 0:8]
    return Image.fromarray(np.dstack([x * 30, y * 40, 255 - x * 20]).astype(np.uint8))


# every mode PIL can hand over (Image.MODES), as (mode, how to make it, expected [0, 1] gray or RGB)
@pytest.mark.parametrize('mode', sorted(set(Image.MODES) - {'LAB'}))
def test_every_pil_mode(mode):
    src = _gradient_rgb()
    gray8 = np.asarray(src.convert('L')).astype(np.float64)
    if mode == 'I':
        im = Image.fromarray((gray8 * 257).astype(np.int32))
        expected = gray8 / 255
    elif mode.startswith('I;16'):
        order = {'I;16': '<u2', 'I;16L': '<u2', 'I;16B': '>u2', 'I;16N': '=u2'}[mode]
        im = Image.frombytes(mode, src.size, (gray8 * 257).astype(order).tobytes())
        expected = gray8 / 255
    elif mode == 'F':
        im = Image.fromarray((gray8 / 255).astype(np.float32), mode='F')
        expected = gray8 / 255
    elif mode == 'La':
        im = src.convert('LA').convert('La')  # premultiplied by a full alpha: same gray
        expected = gray8 / 255
    else:
        im = src.convert(mode)
        expected = np.asarray(im.convert('RGB')).astype(np.float64) / 255
    img = decode(im)
    got = img.rgb.numpy()
    assert got.shape == (3, 6, 8) and got.dtype == np.float32
    if expected.ndim == 2:
        assert img.gray
        np.testing.assert_allclose(got[0], expected, atol=1 / 255 if mode == '1' else 1e-6)
    else:
        np.testing.assert_allclose(got.transpose(1, 2, 0), expected, atol=1e-6)
    assert (img.alpha is not None) == (mode in ('LA', 'La', 'PA', 'RGBA', 'RGBa'))


def test_lab_is_refused_with_one_line():
    with pytest.raises(UserError, match='CIELAB images are not supported'):
        decode(_gradient_rgb().convert('LAB'))


def test_one_bit_images(tmp_path):
    bits = (np.indices((5, 7)).sum(0) % 2).astype(bool)
    Image.fromarray(bits).save(tmp_path / 'b.png')
    assert Image.open(tmp_path / 'b.png').mode == '1'
    img = read_image(str(tmp_path / 'b.png'))
    assert img.gray and img.bits == 8 and np.array_equal(img.rgb[0].numpy(), bits.astype(np.float32))


def test_animated_image_says_only_frame_one_is_used(tmp_path):
    frames = [Image.fromarray(np.full((6, 5, 3), v, np.uint8)) for v in (10, 128, 250)]
    frames[0].save(tmp_path / 'anim.gif', save_all=True, append_images=frames[1:], duration=50)
    img = read_image(str(tmp_path / 'anim.gif'))
    assert img.notes == ["3 frames: only frame 1 is used"]
    assert abs(float(img.rgb.mean()) * 255 - 10) < 1.5
