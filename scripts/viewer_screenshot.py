"""Open the viewer in headless Chromium, zoom, wait for the exact render, save a screenshot.

    python scripts/viewer_screenshot.py --output docs/viewer.png      (the README's picture)

Needs Debian's chromium and chromium-driver (or any Chrome + chromedriver on the PATH) and
selenium. The browser helpers here are what tests/test_viewer.py drives the page with.
"""
import argparse
import base64
import io
import os
import shutil
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from inference.loading import BUNDLED_MODEL  # noqa: E402
from utils.amp import VIEW_PRECISIONS, resolve_precision  # noqa: E402
from utils.cli import run_cli  # noqa: E402
from utils.errors import UserError  # noqa: E402
from viewer_server.app import ViewerApp, build_app  # noqa: E402
from viewer_server.server import ViewerServer, serve  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BROWSERS = ('chromium', 'chromium-browser', 'google-chrome')


def browser_paths() -> Tuple[Optional[str], Optional[str]]:
    """(browser, chromedriver) executables found on the PATH (None where absent)."""
    browser = next((p for p in map(shutil.which, BROWSERS) if p), None)
    return browser, shutil.which('chromedriver')


def start_browser(width: int, height: int) -> webdriver.Chrome:
    """Headless Chromium with a width x height viewport at devicePixelRatio 1."""
    browser, driver = browser_paths()
    if browser is None or driver is None:
        raise UserError("needs chromium and chromedriver on the PATH (Debian: apt-get install chromium chromium-driver)")
    opts = Options()
    opts.binary_location = browser
    for arg in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
                '--force-device-scale-factor=1', '--hide-scrollbars', f'--window-size={width},{height}'):
        opts.add_argument(arg)
    chrome = webdriver.Chrome(options=opts, service=Service(executable_path=driver))
    # the window's own size includes browser chrome and has a minimum: set the page's viewport itself
    chrome.execute_cdp_cmd('Emulation.setDeviceMetricsOverride',
                           {'width': width, 'height': height, 'deviceScaleFactor': 1, 'mobile': False})
    return chrome


def start_server(app: ViewerApp) -> ViewerServer:
    """The viewer on a free port of 127.0.0.1, serving from a daemon thread."""
    server = serve(app, '127.0.0.1', 0)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


def page_state(driver: webdriver.Chrome) -> Dict[str, Any]:
    """window.viewer.state() of the page (None before the script ran)."""
    return driver.execute_script("return window.viewer ? window.viewer.state() : null") or {}


def wait_for(driver: webdriver.Chrome, test, timeout: float, poll: float = 0.05) -> Dict[str, Any]:
    """Poll the page's state every `poll` s until test(state) holds; TimeoutError with the last state otherwise."""
    end = time.monotonic() + timeout
    while True:
        state = page_state(driver)
        if state and test(state):
            return state
        if time.monotonic() > end:
            raise TimeoutError(f"page state after {timeout:.0f} s: {state}")
        time.sleep(poll)


def canvas_pixels(driver: webdriver.Chrome) -> np.ndarray:
    """The canvas's RGB pixels (h, w, 3) as drawn, after the next animation frame."""
    driver.execute_async_script("requestAnimationFrame(() => requestAnimationFrame(arguments[0]))")
    url = driver.execute_script("return document.getElementById('view').toDataURL('image/png')")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(',', 1)[1]))).convert('RGB'))


def zoom_and_wait(driver: webdriver.Chrome, zoom: float, at: Tuple[float, float], grid: Dict[str, int],
                  timeout: float) -> Dict[str, Any]:
    """Zoom to `zoom` about the CSS point `at` and wait until the page shows that grid's exact tiles."""
    driver.execute_script("window.viewer.zoomTo(arguments[0], arguments[1], arguments[2])", zoom, *at)
    return wait_for(driver, lambda s: s['exact'] and s['grid'] is not None
                    and (s['grid']['H'], s['grid']['W']) == (grid['H'], grid['W']), timeout)


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--input', default=os.path.join(ROOT, 'assets', 'sample.png'))
    p.add_argument('--model', default=BUNDLED_MODEL)
    p.add_argument('--output', required=True, help="screenshot PNG")
    p.add_argument('--zoom', type=float, default=3.7)
    p.add_argument('--size', default='900,560', help="browser viewport W,H")
    p.add_argument('--split', type=float, default=0.4, help="bicubic | LIIF split position (0 = no bicubic)")
    p.add_argument('--precision', default='auto', choices=VIEW_PRECISIONS, help="as viewer.py's")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    """Serve the image, open it, zoom about the centre, wait for the exact view, save the screenshot."""
    args = parse_args(argv)
    width, height = (int(v) for v in args.size.split(','))
    device = torch.device('cpu')
    app = build_app(args.input, args.model, device, resolve_precision(args.precision, device, int8=True), ROOT)
    server = start_server(app)
    driver = start_browser(width, height)
    try:
        driver.get(server.url)
        state = wait_for(driver, lambda s: s['ready'] and s['settled'], 60)
        grid = {'H': round(args.zoom * app.size[0]), 'W': round(args.zoom * app.size[1])}
        centre = (state['width'] / 2, state['height'] / 2)
        if args.split:
            driver.execute_script("window.viewer.setCompare(true, arguments[0])", args.split)
        state = zoom_and_wait(driver, args.zoom, centre, grid, 600)
        time.sleep(0.5)
        png = driver.get_screenshot_as_png()
    finally:
        driver.quit()
        server.shutdown()
    Image.open(io.BytesIO(png)).convert('RGB').save(args.output, optimize=True)
    print(f"wrote {args.output}: {state['width']}x{state['height']} canvas at x{args.zoom}, {app.info()['precision']}: "
          f"exact after {state['viewMs'] / 1000:.1f} s (first tile {state['firstTileMs'] / 1000:.2f} s)")


if __name__ == '__main__':
    run_cli(lambda: main(sys.argv[1:]))
