"""The viewer's state: tile cache, view numbers, turns, tiles as crops of the upscale, saving, input checks."""
import io
import os
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

import models
from inference.bounded import upscale_to_uint8
from inference.region import Cancelled, RegionRenderer, tile_rect
from tests.helpers import TINY_LIIF, save_model
from utils.amp import Precision
from utils.errors import UserError
from utils.norm import DEMO
from viewer_server import app as viewer_app
from viewer_server.app import (Generations, ModelThread, RequestError, Superseded, TileCache, ViewerApp, build_app,
                               unused_path)


def tiny_app(tmp_path, h=10, w=14, tile=16) -> ViewerApp:
    """A ViewerApp of a random image and a tiny LIIF, saving into tmp_path."""
    model = models.make(TINY_LIIF).eval()
    rgb = torch.rand(3, h, w)
    inp = DEMO.inp(rgb.unsqueeze(0))
    return ViewerApp(RegionRenderer(model, inp, DEMO), rgb, 'img', str(tmp_path), {'model': 'tiny'}, inp, tile=tile)


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert('RGB'))


def test_tile_cache_drops_the_least_recently_used_beyond_its_bytes():
    cache = TileCache(max_bytes=10)
    cache.put('a', b'1234')
    cache.put('b', b'1234')
    assert cache.get('a') == b'1234'     # a is now the most recent
    cache.put('c', b'1234')              # 12 bytes > 10: b goes
    assert cache.get('b') is None and cache.get('a') and cache.get('c')
    assert cache.bytes == 8 and len(cache) == 2


def test_generations_grow_and_forget_old_clients():
    gens = Generations(max_clients=2)
    assert gens.announce('tab1', 3)
    assert gens.is_current('tab1', 3) and not gens.is_current('tab1', 2)
    assert not gens.announce('tab1', 2)  # an older view never wins back
    assert gens.is_current('tab1', 3)
    assert gens.announce('tab2', 1)      # another tab is independent
    assert gens.is_current('tab1', 3)
    gens.announce('tab3', 1)             # tab1 is forgotten: memory stays bounded
    assert len(gens._latest) == 2 and gens.is_current('tab1', 0)


def test_model_thread_jobs_go_in_arrival_order_on_one_thread_and_stale_waiters_leave():
    turns, order = ModelThread(), []
    gate = threading.Event()
    first = threading.Thread(target=turns.run, args=(lambda: (gate.wait(5), order.append('first')), lambda: False))
    first.start()
    time.sleep(0.05)
    stale = {'now': False}
    errors = []

    def waiter():
        try:
            turns.run(lambda: order.append('stale'), lambda: stale['now'])
        except Cancelled:
            errors.append('cancelled')

    second = threading.Thread(target=waiter)
    second.start()
    time.sleep(0.05)
    third = threading.Thread(target=turns.run, args=(lambda: order.append('third'), lambda: False))
    third.start()
    time.sleep(0.05)
    stale['now'] = True                  # the second request is superseded while it waits
    second.join(2)
    gate.set()
    first.join(2)
    third.join(2)
    assert errors == ['cancelled'] and order == ['first', 'third']
    assert len({turns.run(threading.get_ident, lambda: False) for _ in range(3)} | {threading.get_ident()}) == 2
    gate.clear()                                        # a cheap job (priority 0) goes ahead of waiting ones
    order.clear()
    threads = [threading.Thread(target=turns.run, args=(lambda: (gate.wait(5), order.append('blocker')),
                                                        lambda: False))]
    threads += [threading.Thread(target=turns.run, args=(lambda: order.append('model'), lambda: False))]
    threads += [threading.Thread(target=turns.run, args=(lambda: order.append('bicubic'), lambda: False, 0))]
    for t in threads:
        t.start()
        time.sleep(0.05)
    gate.set()
    for t in threads:
        t.join(2)
    assert order == ['blocker', 'bicubic', 'model']
    with pytest.raises(ZeroDivisionError):              # a job's error reaches its request; the thread goes on
        turns.run(lambda: 1 / 0, lambda: False)
    assert turns.run(lambda: 'next', lambda: False) == 'next'
    model_threads = [t for t in threading.enumerate() if t.name == 'viewer-model']
    assert model_threads and all(t.daemon for t in model_threads)   # Ctrl-C during a long load exits at once


def test_a_tile_is_the_crop_of_the_upscale_and_is_cached(tmp_path):
    app = tiny_app(tmp_path)
    size = (37, 52)                      # x3.7 of 10 x 14
    whole = upscale_to_uint8(app.renderer.model, app.inp, size)
    png = app.tile_png('liif', *size, 1, 2, 'tab', 1)
    r = tile_rect(size, 16, 1, 2)
    assert np.array_equal(decode(png), whole[r.r0:r.r1, r.c0:r.c1])
    app.renderer = None                  # a second request must not render again
    assert app.tile_png('liif', *size, 1, 2, 'tab', 1) is png


def test_a_shifted_tile_is_the_crop_of_the_upscale_at_its_own_pixels(tmp_path):
    app = tiny_app(tmp_path)
    size = (37, 52)
    whole = upscale_to_uint8(app.renderer.model, app.inp, size)
    for i, j in ((0, 0), (1, 2), (2, 3)):
        r = tile_rect(size, 16, i, j, (5, 9))
        png = app.tile_png('liif', *size, i, j, 'tab', 1, (5, 9))
        assert np.array_equal(decode(png), whole[r.r0:r.r1, r.c0:r.c1]), (i, j)
    # cached apart from the unshifted tile of the same index
    r = tile_rect(size, 16, 1, 2)
    assert np.array_equal(decode(app.tile_png('liif', *size, 1, 2, 'tab', 1)), whole[r.r0:r.r1, r.c0:r.c1])
    with pytest.raises(RequestError, match='shift') as e:
        app.tile_png('liif', *size, 0, 0, 'tab', 1, (16, 0))
    assert e.value.status == 400


def test_a_smaller_tile_is_the_crop_of_the_upscale_and_sizes_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(viewer_app, 'MIN_TILE', 8)
    app = tiny_app(tmp_path)                 # tile 16: the page may ask for 8..16 a side
    size = (37, 52)
    whole = upscale_to_uint8(app.renderer.model, app.inp, size)
    for i, j in ((0, 0), (2, 3), (3, 5)):
        r = tile_rect(size, (11, 9), i, j, (4, 2))
        png = app.tile_png('liif', *size, i, j, 'tab', 1, (4, 2), (11, 9))
        assert np.array_equal(decode(png), whole[r.r0:r.r1, r.c0:r.c1]), (i, j)
    r = tile_rect(size, 16, 2, 3, (4, 2))            # the same index and shift in the default size: cached apart
    assert np.array_equal(decode(app.tile_png('liif', *size, 2, 3, 'tab', 1, (4, 2))), whole[r.r0:r.r1, r.c0:r.c1])
    for hw in ((17, 16), (16, 7)):
        with pytest.raises(RequestError, match=r'tile size .* must be 8-16 px a side') as e:
            app.tile_png('liif', *size, 0, 0, 'tab', 1, (0, 0), hw)
        assert e.value.status == 400


def test_a_superseded_request_renders_nothing(tmp_path, monkeypatch):
    app = tiny_app(tmp_path)
    calls = []
    monkeypatch.setattr(app.renderer, 'render', lambda *a, **k: calls.append(1))
    app.view('tab', 5)
    with pytest.raises(Superseded):
        app.tile_png('liif', 37, 52, 0, 0, 'tab', 4)
    assert calls == []


def test_a_view_change_stops_a_tile_between_chunks(tmp_path, monkeypatch):
    app = tiny_app(tmp_path)
    app.renderer.chunk = 16
    model, chunks = app.renderer.model, []

    def query(*args, **kwargs):
        chunks.append(1)
        if len(chunks) == 2:
            app.view('tab', 2)           # the page zoomed again while this tile renders
        return type(model).query(model, *args, **kwargs)

    monkeypatch.setattr(model, 'query', query)
    with pytest.raises(Superseded):
        app.tile_png('liif', 37, 52, 0, 0, 'tab', 1)
    assert len(chunks) == 2              # 256 queries would have taken 16 chunks


@pytest.mark.parametrize('args, match', [
    (('liif', 9, 14, 0, 0, 'tab', 1), 'below the input'),
    (('liif', 10 ** 9, 14, 0, 0, 'tab', 1), "beyond the viewer's limit of 641 px"),
    (('liif', 37, 52, 3, 0, 'tab', 1), 'outside'),
    (('liif', 37, 52, 0, -1, 'tab', 1), 'outside'),
    (('sharp', 37, 52, 0, 0, 'tab', 1), 'kind must be'),
    (('liif', 37, 52, 0, 0, '../x', 1), 'client must'),
])
def test_absurd_tile_requests_are_one_400(tmp_path, args, match):
    with pytest.raises(RequestError, match=match) as e:
        tiny_app(tmp_path).tile_png(*args)
    assert e.value.status == 400


def test_bicubic_tiles_are_matlab_bicubic_of_the_same_view(tmp_path):
    app = tiny_app(tmp_path)
    png = app.tile_png('bicubic', 37, 52, 0, 1, 'tab', 1)
    assert decode(png).shape == (16, 16, 3)


def test_save_writes_the_demo_pixels_once_at_a_time(tmp_path):
    app = tiny_app(tmp_path)
    job = app.start_save(25, 35)
    with pytest.raises(RequestError, match='running already') as e:
        app.start_save(25, 35)
    assert e.value.status == 409
    for _ in range(200):
        if app.save_job.state != 'running':
            break
        time.sleep(0.05)
    assert job.state == 'done', job.message
    assert job.path == os.path.join(str(tmp_path), 'img_35x25.png')
    saved = np.asarray(Image.open(job.path))
    assert np.array_equal(saved, upscale_to_uint8(app.renderer.model, app.inp, (25, 35)))
    assert unused_path(str(tmp_path), 'img_35x25', '.png').endswith('img_35x25_2.png')  # never replaced


@pytest.mark.parametrize('size', [(9, 14), (10, 13), (10 ** 6, 10 ** 6), (1 << 19, 20)])
def test_save_refuses_sizes_below_the_input_or_beyond_the_limit(tmp_path, size):
    with pytest.raises(RequestError, match='at least the input') as e:
        tiny_app(tmp_path).start_save(*size)
    assert e.value.status == 400


def test_build_app_checks_the_input_before_loading_anything(tmp_path, monkeypatch):
    ckpt = save_model(tmp_path / 'tiny.pth', TINY_LIIF)
    fp32 = Precision(None, 'asked for')
    with pytest.raises(UserError, match='save folder does not exist'):
        build_app(str(tmp_path / 'nope.png'), ckpt, torch.device('cpu'), fp32, str(tmp_path / 'missing'))
    with pytest.raises(UserError, match='image not found'):
        build_app(str(tmp_path / 'nope.png'), ckpt, torch.device('cpu'), fp32, str(tmp_path))
    big = tmp_path / 'big.png'
    Image.new('RGB', (300, 200)).save(big)
    monkeypatch.setattr(viewer_app, 'MAX_INPUT_PIXELS', 300 * 200 - 1)
    with pytest.raises(UserError, match=r'big.png is 300x200: .* at most 0.1 Mpx'):
        build_app(str(big), ckpt, torch.device('cpu'), fp32, str(tmp_path))


def test_build_app_serves_a_thin_image_as_demo_does(tmp_path):
    ckpt = save_model(tmp_path / 'tiny.pth', TINY_LIIF)
    thin = tmp_path / 'thin.png'
    Image.fromarray(np.full((2, 30, 3), (200, 10, 10), np.uint8)).save(thin)
    app = build_app(str(thin), ckpt, torch.device('cpu'), Precision(None, 'asked for'), str(tmp_path))
    assert app.info()['width'] == 30 and app.info()['height'] == 2
    tile = decode(app.tile_png('liif', 8, 120, 0, 0, 'tab', 1))
    assert tile.shape == (8, 120, 3)
    want = upscale_to_uint8(app.renderer.model, app.inp, (8, 120), norm=app.renderer.norm)
    assert np.array_equal(tile[:, :16], want[:, :16])


def test_auto_precision_runs_int8_tiles_where_it_can_and_saves_fp32(tmp_path):
    img = tmp_path / 'img.png'
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (10, 14, 3), dtype=np.uint8)).save(img)
    auto_int8 = Precision(None, 'auto: test', int8=True, auto=True)
    two_hidden = {'name': 'liif', 'args': {**TINY_LIIF['args'], 'imnet_spec': {
        'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': [16, 16]}}}}
    liif = build_app(str(img), save_model(tmp_path / 'liif.pth', two_hidden), torch.device('cpu'), auto_int8,
                     str(tmp_path))
    assert liif.renderer.int8 and liif.info()['precision'] == 'int8 (saves fp32)'
    one_hidden = build_app(str(img), save_model(tmp_path / 'one.pth', TINY_LIIF), torch.device('cpu'), auto_int8,
                           str(tmp_path))
    assert not one_hidden.renderer.int8       # nothing between its first and last layer to run in int8
    metasr_spec = {'name': 'metasr', 'args': {'encoder_spec': TINY_LIIF['args']['encoder_spec']}}
    metasr_ckpt = save_model(tmp_path / 'metasr.pth', metasr_spec)
    metasr = build_app(str(img), metasr_ckpt, torch.device('cpu'), auto_int8, str(tmp_path))
    assert not metasr.renderer.int8 and metasr.info()['precision'] == 'fp32'    # auto falls back
    with pytest.raises(UserError, match=r'^--precision int8: MetaSR \(this configuration\) has no int8 query$'):
        build_app(str(img), metasr_ckpt, torch.device('cpu'), Precision(None, 'asked for', int8=True), str(tmp_path))
    model, encodings = liif.renderer.model, []
    real_features = model.features
    model.features = lambda inp: encodings.append(1) or real_features(inp)
    job = liif.start_save(20, 28)
    for _ in range(200):
        if job.state != 'running':
            break
        time.sleep(0.05)
    assert encodings == []                      # the save takes the renderer's encoding instead of a second one
    del model.features
    saved = np.asarray(Image.open(job.path).convert('RGB'))
    assert np.array_equal(saved, upscale_to_uint8(liif.renderer.model, liif.inp, (20, 28)))  # the fp32 pixels
