"""Regions of an upscale's output grid: the viewer's tiles are exactly crops of inference.bounded.upscale."""
import os

import numpy as np
import pytest
import torch

import models
from inference.bounded import upscale, upscale_to_uint8
from inference.loading import BUNDLED_MODEL as BUNDLED, load_sr
from inference import region
from inference.region import (BicubicRegions, Cancelled, Rect, RegionRenderer, bicubic_region, tile_count, tile_rect,
                              tiles_meeting)
from tests.helpers import ROOT, TINY_LIIF
from utils.image import float_to_u8
from utils.image_io import read_image
from utils.imresize import imresize
from utils.norm import DEMO
from utils.testtime import TestTime



def tiny_renderer(inp, **kwargs):
    model = models.make(TINY_LIIF).eval()
    return model, RegionRenderer(model, inp, **kwargs)


def test_tiles_cover_the_grid_once_and_stop_at_its_edges():
    size, tile = (70, 41), 16
    assert tile_count(size, tile) == (5, 3)
    seen = np.zeros(size, int)
    for i in range(5):
        for j in range(3):
            r = tile_rect(size, tile, i, j)
            seen[r.r0:r.r1, r.c0:r.c1] += 1
    assert (seen == 1).all()
    assert tile_rect(size, tile, 4, 2) == Rect(64, 32, 70, 41)
    for i, j in ((5, 0), (0, 3), (-1, 0)):
        with pytest.raises(ValueError, match='outside'):
            tile_rect(size, tile, i, j)


def test_tiles_meeting_a_view_are_those_it_overlaps():
    size, tile = (70, 41), 16
    assert tiles_meeting(size, tile, Rect(15, 16, 33, 17)) == [(0, 1), (1, 1), (2, 1)]
    assert tiles_meeting(size, tile, Rect(-50, -50, 1, 1)) == [(0, 0)]   # clipped to the grid
    assert tiles_meeting(size, tile, Rect(70, 0, 90, 41)) == []          # below it
    assert len(tiles_meeting(size, tile, Rect(0, 0, 70, 41))) == 15


def test_shifted_tiles_cover_the_grid_once_and_line_up_with_the_shift():
    size, tile, shift = (70, 41), 16, (5, 11)
    assert tile_count(size, tile, shift) == (5, 4)    # ceil(75 / 16), ceil(52 / 16)
    seen = np.zeros(size, int)
    for i in range(5):
        for j in range(4):
            r = tile_rect(size, tile, i, j, shift)
            seen[r.r0:r.r1, r.c0:r.c1] += 1
    assert (seen == 1).all()
    assert tile_rect(size, tile, 0, 0, shift) == Rect(0, 0, 11, 5)       # cut by the grid's top-left
    assert tile_rect(size, tile, 1, 1, shift) == Rect(11, 5, 27, 21)     # whole, starting at 16 - shift
    assert tile_rect(size, tile, 4, 3, shift) == Rect(59, 37, 70, 41)
    # the page's choice: a tile edge at the view's corner, so a view of whole tiles needs no more
    view = Rect(27, 21, 59, 37)
    assert [tile_rect(size, tile, *ij, shift) for ij in tiles_meeting(size, tile, view, shift)] == [
        Rect(27, 21, 43, 37), Rect(43, 21, 59, 37)]
    for bad in ((16, 0), (0, -1)):
        with pytest.raises(ValueError, match='shift'):
            tile_rect(size, tile, 0, 0, bad)


def test_rectangular_tiles_fit_a_view_in_whole_tiles():
    size, tile_hw, shift = (70, 41), (10, 12), (3, 7)    # 10 rows x 12 columns each
    rows, cols = tile_count(size, tile_hw, shift)
    assert (rows, cols) == (8, 4)                        # ceil(73 / 10), ceil(48 / 12)
    seen = np.zeros(size, int)
    for i in range(rows):
        for j in range(cols):
            r = tile_rect(size, tile_hw, i, j, shift)
            seen[r.r0:r.r1, r.c0:r.c1] += 1
    assert (seen == 1).all()
    assert tile_rect(size, tile_hw, 2, 1, shift) == Rect(17, 5, 27, 17)
    view = Rect(17, 5, 47, 29)                           # 30 x 24: exactly 3 x 2 tiles
    assert tiles_meeting(size, tile_hw, view, shift) == [(i, j) for i in (2, 3, 4) for j in (1, 2)]
    with pytest.raises(ValueError, match='shift'):
        tile_rect(size, tile_hw, 0, 0, (10, 0))         # the shift is below the tile's own height


@pytest.mark.parametrize('test_time', [TestTime(), TestTime(cell_max_scale=2.0, window=4)])
def test_every_tile_is_the_crop_of_the_whole_upscale(test_time):
    inp = torch.rand(1, 3, 9, 13) * 2 - 1
    model, renderer = tiny_renderer(inp, test_time=test_time)
    size = (round(9 * 3.7), round(13 * 3.7))       # 33 x 48: x3.67 down, x3.69 across
    whole = upscale(model, inp, size, test_time=test_time)[0].permute(1, 2, 0)
    whole_u8 = upscale_to_uint8(model, inp, size, test_time=test_time)
    rows, cols = tile_count(size, 16)
    for i in range(rows):
        for j in range(cols):
            r = tile_rect(size, 16, i, j)
            got = renderer.predict(size, r, chunk=50)   # chunks that cut rows: the values must not care
            assert (got - whole[r.r0:r.r1, r.c0:r.c1]).abs().max() <= 1e-6, (i, j)
            assert np.array_equal(renderer.render(size, r), whole_u8[r.r0:r.r1, r.c0:r.c1]), (i, j)


def test_a_wrong_grid_would_be_caught():
    # the crop of a grid of another size is not the tile: the comparison above can fail
    inp = torch.rand(1, 3, 9, 13) * 2 - 1
    model, renderer = tiny_renderer(inp)
    r = tile_rect((33, 48), 16, 1, 1)
    other = upscale(model, inp, (33, 49))[0].permute(1, 2, 0)
    assert (renderer.predict((33, 48), r) - other[r.r0:r.r1, r.c0:r.c1]).abs().max() > 1e-3


def test_bundled_model_tiles_are_the_demo_pixels():
    loaded = load_sr(BUNDLED, torch.device('cpu'), DEMO, 'demo')
    rgb = read_image(os.path.join(ROOT, 'assets', 'sample.png')).rgb[:, 50:68, 70:94]
    inp = loaded.norm.inp(rgb.unsqueeze(0))
    renderer = RegionRenderer(loaded.model, inp, loaded.norm)
    size = (round(18 * 3.7), round(24 * 3.7))     # 67 x 89
    whole = upscale_to_uint8(loaded.model, inp, size, norm=loaded.norm)
    for r in (tile_rect(size, 32, 0, 0), tile_rect(size, 32, 2, 1), Rect(17, 29, 40, 61)):
        assert np.array_equal(renderer.render(size, r), whole[r.r0:r.r1, r.c0:r.c1]), r


def levels(a: np.ndarray, b: np.ndarray):
    """(PSNR in dB, share of values that differ, largest difference) of two uint8 images."""
    d = a.astype(np.float64) - b.astype(np.float64)
    return 10 * np.log10(255 ** 2 / max((d ** 2).mean(), 1e-12)), (d != 0).mean(), np.abs(d).max()


def test_bundled_model_int8_tiles_are_within_a_few_levels_of_the_demo_pixels():
    loaded = load_sr(BUNDLED, torch.device('cpu'), DEMO, 'demo')
    rgb = read_image(os.path.join(ROOT, 'assets', 'sample.png')).rgb[:, 40:88, 60:124]
    inp = loaded.norm.inp(rgb.unsqueeze(0))
    renderer = RegionRenderer(loaded.model, inp, loaded.norm, int8=True)
    size = (round(48 * 3.7), round(64 * 3.7))     # 178 x 237
    whole = upscale_to_uint8(loaded.model, inp, size, norm=loaded.norm)
    r = Rect(10, 20, 170, 230)
    psnr, changed, worst = levels(renderer.render(size, r), whole[r.r0:r.r1, r.c0:r.c1])
    # measured: 58.9 dB, 8.4% of values changed, at most 1 level
    assert psnr > 50 and worst <= 6, (psnr, changed, worst)
    assert changed > 0.01                         # int8 really ran


def test_int8_renderer_refuses_autocast_and_models_without_an_int8_query():
    inp = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match='autocast'):
        tiny_renderer(inp, amp='bf16', int8=True)
    metasr = models.make({'name': 'metasr', 'args': {'encoder_spec': TINY_LIIF['args']['encoder_spec']}}).eval()
    with pytest.raises(ValueError, match='MetaSR'):
        RegionRenderer(metasr, inp, int8=True)


class CountingModel(torch.nn.Module):
    """A tiny LIIF whose queries are counted."""

    def __init__(self):
        super().__init__()
        self.inner = models.make(TINY_LIIF).eval()
        self.calls = 0

    def encode(self, inp):
        return self.inner.encode(inp)

    def query(self, state, coord, cell, **options):
        self.calls += 1
        return self.inner.query(state, coord, cell, **options)


def test_a_stale_request_stops_before_the_work_and_between_chunks():
    model = CountingModel()
    renderer = RegionRenderer(model, torch.rand(1, 3, 8, 8))
    rect = Rect(0, 0, 20, 10)                       # 200 queries: 4 chunks of 50
    renderer.render((30, 30), rect, chunk=50)
    assert model.calls == 4
    model.calls = 0
    with pytest.raises(Cancelled):
        renderer.render((30, 30), rect, should_stop=lambda: True, chunk=50)
    assert model.calls == 0                         # nothing started
    asked = []

    def stop_after_two():
        asked.append(1)
        return len(asked) > 2

    with pytest.raises(Cancelled):
        renderer.render((30, 30), rect, should_stop=stop_after_two, chunk=50)
    assert model.calls == 2                         # two chunks ran, the third never did


def test_bicubic_region_is_the_crop_of_matlab_imresize():
    rgb = torch.rand(3, 11, 14)
    size = (41, 52)
    whole = imresize(rgb, size=size).permute(1, 2, 0)
    for r in (tile_rect(size, 16, 0, 0), tile_rect(size, 16, 2, 3), Rect(5, 7, 30, 9)):
        got = bicubic_region(rgb, size, r)
        want = whole[r.r0:r.r1, r.c0:r.c1]
        # the region's passes run rows first, imresize's smaller scale first: float rounding only
        assert np.abs(got.astype(int) - float_to_u8(want).numpy()).max() <= 1
        assert (torch.from_numpy(got).float() / 255 - want.clamp(0, 1)).abs().max() <= 0.5 / 255 + 1e-6


def test_bicubic_regions_keep_the_tables_of_the_last_sizes_and_give_the_same_pixels(monkeypatch):
    rgb = torch.rand(3, 11, 14)
    sizes = ((41, 52), (41, 52), (30, 30), (41, 52), (50, 60), (30, 30))
    rects = {size: (tile_rect(size, 16, 0, 0), tile_rect(size, 16, 1, 1)) for size in sizes}
    want = {(size, r): bicubic_region(rgb, size, r) for size in sizes for r in rects[size]}
    regions = BicubicRegions(rgb, sizes_kept=2)
    built = []
    real = region.RowResizer
    monkeypatch.setattr(region, 'RowResizer', lambda img, size: built.append(tuple(size)) or real(img, size))
    for size in sizes:
        for r in rects[size]:
            assert np.array_equal(regions.render(size, r), want[size, r]), (size, r)
    # a table per size while it is among the last two used, built again once dropped
    assert built == [(41, 52), (30, 30), (50, 60), (30, 30)]


def test_non_pointwise_models_and_batches_are_refused():
    model = models.make(TINY_LIIF).eval()
    with pytest.raises(ValueError, match='one image'):
        RegionRenderer(model, torch.rand(2, 3, 8, 8))
    model.pointwise = False
    with pytest.raises(ValueError, match='pointwise'):
        RegionRenderer(model, torch.rand(1, 3, 8, 8))
