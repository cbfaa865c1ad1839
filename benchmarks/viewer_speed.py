"""How fast the viewer shows a view: first exact tile, the whole view, a pan, a cancellation.

    python benchmarks/viewer_speed.py                       # bundled model and sample, 1280x800 view at x10
    python benchmarks/viewer_speed.py --tile 128 --precision fp32

Times the server's side of what the page asks for after a zoom stops (viewer_server.app.ViewerApp,
PNG encoding included, the browser's decode and draw not): the tiles meeting a W x H device-pixel
view centred on the image (lined up with its corner, as the page does), nearest the centre first,
two requests in flight on two threads as the page sends them (the model's work runs on the app's
model thread); then the view panned by --pan px at the same zoom (only tiles not seen yet are
rendered); then how long a tile in progress takes to stop once its view is superseded.
"""
import argparse
import math
import os
import sys
import threading
import time
from typing import Tuple

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import environment, sync  # noqa: E402
from inference.loading import BUNDLED_MODEL  # noqa: E402
from inference.region import Rect, tile_count, tile_rect, tiles_meeting  # noqa: E402
from utils.amp import VIEW_PRECISIONS, resolve_precision  # noqa: E402
from viewer_server.app import MIN_TILE, Superseded, build_app, tile_key  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def page_layout(view: Rect, tile: int, aligned: bool):
    """((th, tw), (sy, sx)): the tiles the page picks for a grid first settled in `view` (viewer.js fitTiles):
    as few rows / columns of at most `tile` px as span the view, one starting at its top-left corner."""
    if not aligned:
        return (tile, tile), (0, 0)
    sides = tuple(min(tile, max(math.ceil(n / math.ceil(n / tile)), min(MIN_TILE, tile))) if o >= 0 else tile
                  for n, o in zip(view.shape, (view.r0, view.c0)))
    return sides, tuple((-o) % t if o > 0 else 0 for o, t in zip((view.r0, view.c0), sides))


def ordered_tiles(size, tile_hw, view: Rect, shift):
    """Tiles meeting the view, nearest its centre first (the page's order with the pointer at the centre)."""
    cy, cx = (view.r0 + view.r1) / 2, (view.c0 + view.c1) / 2

    def distance(ij):
        r = tile_rect(size, tile_hw, *ij, shift)
        return ((r.r0 + r.r1) / 2 - cy) ** 2 + ((r.c0 + r.c1) / 2 - cx) ** 2

    return sorted(tiles_meeting(size, tile_hw, view, shift), key=distance)


def render_view(app, size, view: Rect, layout, gen: int, in_flight: int = 2):
    """Render the view's missing tiles as the page asks for them (nearest first, `in_flight` requests at a time,
    each on its own thread as the server's): (wall s to the first, wall s to all, CPU s (all threads) to the first
    and to all, tiles, queries)."""
    tile_hw, shift = layout
    todo = [ij for ij in ordered_tiles(size, tile_hw, view, shift)
            if app.cache.get(tile_key('liif', size, tile_hw, shift, *ij)) is None]
    lock, done = threading.Lock(), []
    start, cpu0 = time.perf_counter(), time.process_time()

    def worker():
        while True:
            with lock:
                if not todo:
                    return
                i, j = todo.pop(0)
            app.tile_png('liif', *size, i, j, 'bench', gen, shift, tile_hw)
            r = tile_rect(size, tile_hw, i, j, shift)
            with lock:
                done.append((time.perf_counter() - start, time.process_time() - cpu0, r.shape[0] * r.shape[1]))

    threads = [threading.Thread(target=worker) for _ in range(in_flight)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if not done:
        return 0.0, 0.0, 0.0, 0.0, 0, 0
    return (done[0][0], time.perf_counter() - start, done[0][1], time.process_time() - cpu0, len(done),
            sum(d[2] for d in done))


def cancel_latency(app, size, layout, i, j) -> Tuple[float, str]:
    """(seconds, how): when and how a tile in progress (started 20 ms before) ends after a newer view."""
    ended = {}

    def work():
        try:
            app.tile_png('liif', *size, i, j, 'cancel', 1, layout[1], layout[0])
            ended['how'] = 'finished its last chunk'
        except Superseded:
            ended['how'] = 'stopped'
        ended['at'] = time.perf_counter()

    thread = threading.Thread(target=work)
    thread.start()
    time.sleep(0.02)
    announced = time.perf_counter()
    app.view('cancel', 2)
    thread.join()
    if ended['at'] < announced:
        return 0.0, 'had already finished'
    return ended['at'] - announced, ended['how']


def main() -> None:
    """Build the viewer's app as viewer.py does, then time a zoom, a pan and a cancellation."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--input', default=os.path.join(ROOT, 'assets', 'sample.png'))
    p.add_argument('--model', default=BUNDLED_MODEL)
    p.add_argument('--zoom', type=float, default=10.0)
    p.add_argument('--view', default='1280,800', help="view W,H in device pixels")
    p.add_argument('--pan', type=int, default=256, help="pan to the right by this many pixels")
    p.add_argument('--tile', type=int, default=None, help="tile side (default: the viewer's: 128 on a CPU, 256 on CUDA)")
    p.add_argument('--in-flight', type=int, default=2, help="tile requests at a time (the page sends 2)")
    p.add_argument('--unaligned', action='store_true',
                   help="square tiles from the grid's corner, not fitted to the view (the page before this was added)")
    p.add_argument('--precision', default='auto', choices=VIEW_PRECISIONS)
    p.add_argument('--device', default='cpu')
    p.add_argument('--threads', type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    precision = resolve_precision(args.precision, device, int8=True)
    app = build_app(args.input, args.model, device, precision, ROOT, tile=args.tile)
    h, w = app.size
    size = (round(args.zoom * h), round(args.zoom * w))
    vw, vh = (int(v) for v in args.view.split(','))
    oy, ox = (size[0] - vh) // 2, (size[1] - vw) // 2
    view = Rect(oy, ox, oy + vh, ox + vw)
    layout = page_layout(view, app.tile, not args.unaligned)
    visible = (min(view.r1, size[0]) - max(view.r0, 0)) * (min(view.c1, size[1]) - max(view.c0, 0))
    print(f"{environment(args.device)}; load average {os.getloadavg()[0]:.1f}; precision {app.about['precision']} "
          f"({precision.reason})")
    print(f"{os.path.basename(args.input)} {w}x{h} at x{args.zoom:g}: grid {size[1]}x{size[0]}, view {vw}x{vh} "
          f"({visible / 1e6:.2f} Mpx visible), tiles {layout[0][1]}x{layout[0][0]} px, shifted {layout[1]}")
    threads = torch.get_num_threads()
    # on a shared machine wall time depends on the neighbours: CPU seconds / threads is the idle-machine estimate
    print(f"(wall seconds as measured; in brackets CPU seconds of all threads / {threads}, the time on an idle "
          f"machine with {threads} cores)")
    # the page's first view (the image fitted to the window) has run the model before any zoom: one tile of
    # the x1 grid stands for it here (a GPU's first call sets up its libraries)
    start = time.perf_counter()
    app.tile_png('liif', h, w, 0, 0, 'bench', 1)
    sync(device)
    print(f"warm-up: a tile of the x1 grid {time.perf_counter() - start:.2f} s")
    first, total, first_cpu, total_cpu, count, queries = render_view(app, size, view, layout, 1, args.in_flight)
    print(f"zoom:  first exact tile {first:.2f} s [{first_cpu / threads:.2f}], whole view {total:.2f} s "
          f"[{total_cpu / threads:.2f}] ({count} tiles, {queries / 1e6:.2f} Mpx of queries, "
          f"{queries / total / 1e6:.3f} Mpx/s [{queries / total_cpu * threads / 1e6:.3f}])")
    panned = Rect(view.r0, view.c0 + args.pan, view.r1, view.c1 + args.pan)
    first, total, first_cpu, total_cpu, count, queries = render_view(app, size, panned, layout, 1, args.in_flight)
    print(f"pan {args.pan} px: {count} new tiles ({queries / 1e6:.2f} Mpx) in {total:.2f} s [{total_cpu / threads:.2f}],"
          f" first {first:.2f} s [{first_cpu / threads:.2f}]")
    rows, cols = tile_count(size, *layout)
    fresh = next(((i, j) for i in range(rows) for j in range(cols)
                  if app.cache.get(tile_key('liif', size, *layout, i, j)) is None), None)
    if fresh is not None:
        seconds, how = cancel_latency(app, size, layout, *fresh)
        print(f"cancel: a newer view 20 ms into a tile: the tile {how} ({seconds:.2f} s after it) "
              f"(checked between chunks of {app.renderer.chunk} queries)")


if __name__ == '__main__':
    main()
