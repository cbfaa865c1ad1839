"""viewer.py as a person uses it: one-line errors, and the page in a real (headless Chromium) browser."""
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from inference.bounded import upscale_to_uint8
from inference.loading import BUNDLED_MODEL as BUNDLED
from tests.helpers import ROOT, error_lines, load_script, run_script
from utils.amp import resolve_precision
from utils.errors import UserError
from viewer_server.app import build_app



def test_a_bad_argument_is_one_line_and_exit_code_2():
    proc = run_script('viewer.py', '--input', 'missing.png', timeout=60)
    assert proc.returncode == 2 and error_lines(proc) == ['error: image not found: missing.png']


@pytest.mark.parametrize('args, message', [
    (['--input', 'assets/sample.png', '--port', '70000'], '--port must be 0-65535, not 70000'),
    (['--input', 'assets/sample.png', '--model', 'none.pth'], 'checkpoint not found: none.pth'),
    (['--input', 'assets/sample.png', '--save-dir', 'no/such'], 'save folder does not exist: no/such'),
])
def test_bad_arguments_stop_before_serving(args, message, monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(UserError) as e:
        load_script('viewer.py').main(args)
    assert str(e.value) == message


def test_an_unreadable_image_is_one_line(tmp_path):
    bad = tmp_path / 'bad.png'
    bad.write_bytes(b'not a png')
    with pytest.raises(UserError, match=f'^cannot read image {bad}: '):
        load_script('viewer.py').main(['--input', str(bad), '--save-dir', str(tmp_path)])


def browser_or_skip():
    """The screenshot script's browser helpers; skip (with the reason) where selenium or Chromium is absent."""
    pytest.importorskip('selenium', reason='selenium is not installed (pip install -r requirements.txt)')
    which = [name for name, path in zip(('chromium', 'chromedriver'),
                                        (shutil.which('chromium') or shutil.which('chromium-browser')
                                         or shutil.which('google-chrome'), shutil.which('chromedriver')))
             if path is None]
    if which:
        pytest.skip(f"{' and '.join(which)} not found on the PATH (Debian: apt-get install chromium chromium-driver)")
    return load_script('scripts/viewer_screenshot.py')


def test_the_page_zoomed_to_x3_7_shows_the_upscale_of_that_region(tmp_path):
    web = browser_or_skip()
    from selenium.webdriver.common.action_chains import ActionChains  # optional dependency: after the skip check
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
    crop = tmp_path / 'crop.png'
    Image.open(os.path.join(ROOT, 'assets', 'sample.png')).convert('RGB').crop((60, 40, 132, 88)).save(crop)
    device = torch.device('cpu')
    # fp32 here (the viewer's own 'auto' may pick int8 tiles): the page must show the upscale's own pixels
    app = build_app(str(crop), BUNDLED, device, resolve_precision('fp32', device), str(tmp_path))
    server = web.start_server(app)
    driver = web.start_browser(220, 173)   # a 220 x 140 canvas
    try:
        driver.get(server.url)
        first = web.wait_for(driver, lambda s: s['ready'] and s['settled'], 20)
        assert first['dpr'] == 1 and first['grid'] is not None, str(first)
        # a person's wheel turn zooms in about the pointer (the fit view's tiles are superseded)
        canvas = driver.find_element('id', 'view')
        ActionChains(driver).scroll_from_origin(ScrollOrigin.from_element(canvas), 0, -120).perform()
        web.wait_for(driver, lambda s: s['sx'] > first['sx'] * 1.1, 5)
        grid = {'H': round(3.7 * 48), 'W': round(3.7 * 72)}                   # 178 x 266
        state = web.zoom_and_wait(driver, 3.7, (first['width'] / 2 - 20, first['height'] / 2 + 10), grid, 25)
        shown = web.canvas_pixels(driver)
        driver.save_screenshot(str(tmp_path / 'viewer_x3.7.png'))
    finally:
        driver.quit()
        server.shutdown()
        server.server_close()
    ox, oy, h, w = state['ox'], state['oy'], state['height'], state['width']
    assert shown.shape == (h, w, 3) and (state['sx'], state['sy']) == (266 / 72, 178 / 48)
    assert 0 < ox and ox + w < 266 and 0 < oy and oy + h < 178, state   # a region inside the image
    # the grid's tiles are fitted to the 220 x 140 canvas (2 x 2 tiles of 110 x 70) and start at the view's
    # corner: resized, shifted tiles, drawn where they belong (checked below)
    g = state['grid']
    assert (g['th'], g['tw'], g['shiftY'], g['shiftX']) == (70, 110, (-oy) % 70, (-ox) % 110), state
    want = upscale_to_uint8(app.renderer.model, app.inp, (178, 266), norm=app.renderer.norm)[oy:oy + h, ox:ox + w]
    assert np.abs(shown.astype(int) - want).max() <= 1
    assert os.path.getsize(tmp_path / 'viewer_x3.7.png') > 1000


def test_the_browser_timing_script_measures_a_zoom_of_viewer_py(tmp_path, capsys):
    browser_or_skip()
    crop = tmp_path / 'crop.png'
    Image.open(os.path.join(ROOT, 'assets', 'sample.png')).convert('RGB').crop((60, 40, 108, 72)).save(crop)
    load_script('scripts/viewer_browser_speed.py').main(['--input', str(crop), '--zoom', '3', '--canvas', '320,200',
                                                         '--runs', '1', '--poll', '0.1', '--timeout', '60'])
    out = capsys.readouterr().out.splitlines()
    # a 48 x 32 input at x3: a 144 x 96 grid inside the canvas, two 128 px tiles across, one down
    assert out[1].startswith('run 1: 320x200 canvas, grid 144x96: first exact tile '), out
    assert out[1].endswith('(2 tiles)'), out
