"""Time a zoom as a person sees it: viewer.py in its own process, the page in headless Chromium.

    python scripts/viewer_browser_speed.py                          # x10, 1280x800 canvas, viewer's default precision
    python scripts/viewer_browser_speed.py --precision fp32 --runs 3

Each run starts `viewer.py --input INPUT --port 0` (as a user would), opens the page, waits until
the fitted view is exact, zooms to --zoom about the canvas centre and reads the page's own clock
(the status line's): the first exact tile and the whole view after the zoom stopped. The page is
asked for its state every --poll seconds; a test driver polling often takes CPU from the server on
a small machine. On a machine with few cores the browser shares them with the server, so this is
slower than benchmarks/viewer_speed.py (the server's side alone).
"""
import argparse
import os
import re
import subprocess
import sys
import time
from typing import List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from scripts.viewer_screenshot import start_browser, wait_for  # noqa: E402
from utils.amp import VIEW_PRECISIONS  # noqa: E402
from utils.cli import run_cli  # noqa: E402
from utils.errors import UserError  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the page's toolbar above the canvas, in CSS px: the window is this much taller than the canvas
TOOLBAR = 33


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--input', default=os.path.join(ROOT, 'assets', 'sample.png'))
    p.add_argument('--zoom', type=float, default=10.0)
    p.add_argument('--canvas', default='1280,800', help="canvas W,H in px (the window is taller by the toolbar)")
    p.add_argument('--precision', default='auto', choices=VIEW_PRECISIONS, help="viewer.py's --precision")
    p.add_argument('--poll', type=float, default=1.0, help="seconds between reads of the page's state")
    p.add_argument('--runs', type=int, default=2)
    p.add_argument('--timeout', type=float, default=300.0, help="seconds a run may take")
    return p.parse_args(argv)


def start_viewer(args: argparse.Namespace) -> subprocess.Popen:
    """viewer.py on a free port; its URL is on the first line it prints."""
    cmd = [sys.executable, os.path.join(ROOT, 'viewer.py'), '--input', args.input, '--port', '0',
           '--precision', args.precision]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)


def one_run(args: argparse.Namespace, width: int, height: int) -> dict:
    """Start the viewer, zoom once, return the page's state when the zoomed view is exact."""
    viewer = start_viewer(args)
    driver = None
    try:
        match = re.search(r'(http://\S+)', viewer.stdout.readline())
        if not match:
            raise UserError("viewer.py did not print its URL (run it by hand to see why)")
        driver = start_browser(width, height + TOOLBAR)
        driver.get(match.group(1))
        deadline = time.monotonic() + args.timeout
        fitted = wait_for(driver, lambda s: s['ready'] and s['settled'] and (s['exact'] or s['grid'] is None),
                          args.timeout, 0.2)
        if fitted['grid'] is None:
            raise UserError(f"{args.input} is larger than the canvas: the fitted view is below x1 (use a smaller "
                            "image or a larger --canvas)")
        grid_h = round(args.zoom * round(fitted['grid']['H'] / fitted['sy']))   # the input's height times the zoom
        driver.execute_script("window.viewer.zoomTo(arguments[0], arguments[1], arguments[2])",
                              args.zoom, fitted['width'] / 2, fitted['height'] / 2)
        return wait_for(driver, lambda s: s['exact'] and s['grid'] is not None and s['grid']['H'] == grid_h,
                        deadline - time.monotonic(), args.poll)
    finally:
        if driver is not None:
            driver.quit()
        viewer.terminate()
        viewer.wait()


def main(argv: Optional[List[str]] = None) -> None:
    """Time --runs zooms, each with a fresh viewer and browser."""
    args = parse_args(argv)
    width, height = (int(v) for v in args.canvas.split(','))
    print(f"{args.input} at x{args.zoom:g}, {width}x{height} canvas, --precision {args.precision}, "
          f"{os.cpu_count()} CPUs, page state read every {args.poll:g} s")
    for run in range(args.runs):
        s = one_run(args, width, height)
        print(f"run {run + 1}: {s['width']}x{s['height']} canvas, grid {s['grid']['W']}x{s['grid']['H']}: "
              f"first exact tile {s['firstTileMs'] / 1000:.2f} s, whole view {s['viewMs'] / 1000:.2f} s "
              f"({s['done']} tiles)", flush=True)


if __name__ == '__main__':
    run_cli(lambda: main(sys.argv[1:]))
