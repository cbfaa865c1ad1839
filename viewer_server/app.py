"""The viewer's state behind the HTTP layer: one image, its tiles, who asked for what, the save job.

A view of the image at zoom z is the output grid of an upscale to (H, W) = (round(z h), round(z w))
seen through a window; it is cut into th x tw tiles of that grid (at most T = TILE on a CPU,
GPU_TILE on CUDA, a side) that start (sy, sx) px before it (the page fits them to a view's edges),
so tile (H, W, th, tw, sy, sx, i, j) is exactly the crop of inference.bounded.upscale to (H, W) at
rows i*th - sy.., columns j*tw - sx.. (fp32 and autocast; int8 tiles are within a few 8-bit levels).
Every client (browser tab) numbers its views; a tile request carries the number of the view it
is for, and work for an older view of the same client stops before it starts and between query
chunks. Rendering runs on one model thread in arrival order (one model computation at a time uses
every core; the page asks for the tiles nearest the pointer first).
"""
import collections
import concurrent.futures
import io
import itertools
import logging
import os
import queue
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import torch
from PIL import Image

from inference.bounded import choose_test_time, upscale_to_uint8
from inference.loading import load_sr
from inference.region import BicubicRegions, Cancelled, RegionRenderer, int8_unavailable, tile_rect
from inference.thin import pad_thin_input
from utils.amp import Precision
from utils.errors import UserError
from utils.image import float_to_u8
from utils.image_io import read_image, save_atomic
from utils.norm import DEMO

log = logging.getLogger(__name__)

# measured (benchmarks/viewer_speed.py, 1280x800 view): on a CPU the first tile ~4x sooner than with 256 px tiles,
# and ~25% fewer queries per view (less overhang at its edges)
TILE = 128
# on a GPU the work per tile (model calls, the copy back, PNG) outweighs its pixels: a whole 1280x800 view at x10
# in 0.10-0.12 s with tiles of at most 256 px, 0.20-0.26 s with 128 px (H200, fp32 and bf16)
GPU_TILE = 256
# the page may ask for smaller tiles (down to this side) to fit a view's height or width in whole tiles
MIN_TILE = 32
MAX_ZOOM = 64
# the output side the float32 grid coordinates and the page's canvas arithmetic are kept within
MAX_SIDE = 1 << 18
CACHE_MB = 256
MAX_CLIENTS = 256
# the input's feature map stays in memory (EDSR-baseline: 64 fp32 channels, 1 GB at this size)
MAX_INPUT_PIXELS = 2048 * 2048
# the save writes one uint8 buffer of H x W x 3 (as demo.py): 400 MB at this size
MAX_SAVE_PIXELS = 1 << 27
CLIENT_ID = re.compile(r'[A-Za-z0-9_-]{1,64}')
KINDS = ('liif', 'bicubic')


class RequestError(Exception):
    """A request the viewer refuses: an HTTP status and one line for the user."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Superseded(Exception):
    """The client has moved on to a newer view: this request's work is dropped."""


class TileCache:
    """Encoded tiles by key, least recently used dropped first once their bytes exceed a budget."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: 'collections.OrderedDict[Any, bytes]' = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Optional[bytes]:
        """The tile, now the most recently used; None if absent."""
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: Any, data: bytes) -> None:
        """Keep a tile, dropping the least recently used ones beyond the budget."""
        with self._lock:
            old = self._items.pop(key, None)
            self.bytes -= len(old) if old is not None else 0
            self._items[key] = data
            self.bytes += len(data)
            while self.bytes > self.max_bytes and len(self._items) > 1:
                _, dropped = self._items.popitem(last=False)
                self.bytes -= len(dropped)

    def __len__(self) -> int:
        return len(self._items)


class Generations:
    """The latest view number of each client (the most recent MAX_CLIENTS clients)."""

    def __init__(self, max_clients: int = MAX_CLIENTS):
        self.max_clients = max_clients
        self._latest: 'collections.OrderedDict[str, int]' = collections.OrderedDict()
        self._lock = threading.Lock()

    def announce(self, client: str, gen: int) -> bool:
        """Record that `client` is at view `gen` (numbers only grow); True if gen is its latest."""
        with self._lock:
            latest = max(gen, self._latest.pop(client, gen))
            self._latest[client] = latest
            while len(self._latest) > self.max_clients:
                self._latest.popitem(last=False)
            return gen == latest

    def is_current(self, client: str, gen: int) -> bool:
        """False once the client has announced a newer view (a forgotten client counts as current)."""
        with self._lock:
            return self._latest.get(client, gen) <= gen


class ModelThread:
    """Runs jobs one at a time on one long-lived (daemon) thread, in arrival order within a priority (bicubic
    tiles go ahead of the model's); a waiting job whose request went stale leaves the line.

    One thread for the app's torch work (loading, encoding, tiles, bicubic; a save runs beside it on its
    own thread, which ends with it): torch's CPU thread pool belongs to the thread that calls it, and
    while another long-lived thread has used its own, every call is slower (measured on 2 cores,
    benchmarks/viewer_speed.py, int8: a whole view 4.9 s this way, 6.3 s when the app was built on the
    main thread and the tiles rendered on this one). A daemon thread, so that Ctrl-C during a long load
    or encode exits at once.
    """

    def __init__(self):
        # (priority, arrival, future, job): lower priority first, then arrival order
        self._jobs: 'queue.PriorityQueue[Tuple[int, int, concurrent.futures.Future, Callable[[], Any]]]' = \
            queue.PriorityQueue()
        self._arrivals = itertools.count()
        threading.Thread(target=self._serve, name='viewer-model', daemon=True).start()

    def _serve(self) -> None:
        while True:
            _, _, future, job = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue  # its request went stale while it waited
            try:
                future.set_result(job())
            except BaseException as e:  # handed to the waiting request
                future.set_exception(e)

    def run(self, job: Callable[[], Any], should_stop: Callable[[], bool], priority: int = 1) -> Any:
        """job() once every earlier job of its priority or a lower one is done; Cancelled if should_stop() turns
        true before it starts. A job that has started stops by itself (the renderer asks should_stop between chunks).
        """
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((priority, next(self._arrivals), future, job))
        while True:
            try:
                return future.result(timeout=0.05)
            except concurrent.futures.TimeoutError:
                if should_stop() and future.cancel():
                    raise Cancelled() from None


def png_bytes(rgb: np.ndarray) -> bytes:
    """uint8 (h, w, 3) as PNG (fast compression: tiles are made once and cached)."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format='PNG', compress_level=1)
    return buf.getvalue()


@dataclass
class SaveJob:
    """The state of the last save: 'idle', 'running', 'done' or 'error', its file, size and time."""
    state: str = 'idle'
    path: str = ''
    size: Tuple[int, int] = (0, 0)
    message: str = ''
    seconds: float = 0.0


class ViewerApp:
    """Answers the page's requests for one image: info, tiles of any view, saving the whole image."""

    def __init__(self, renderer: RegionRenderer, rgb: torch.Tensor, name: str, save_dir: str, about: Dict[str, str],
                 inp: torch.Tensor, tile: int = TILE, max_zoom: float = MAX_ZOOM, cache_mb: float = CACHE_MB,
                 model_thread: Optional[ModelThread] = None):
        self.renderer, self.rgb, self.name, self.save_dir = renderer, rgb, name, save_dir
        self.inp, self.tile, self.max_zoom, self.about = inp, tile, max_zoom, about
        self.size: Tuple[int, int] = tuple(rgb.shape[-2:])
        self.bicubic = BicubicRegions(rgb)
        self.cache = TileCache(int(cache_mb * 2 ** 20))
        self.generations = Generations()
        self.model_thread = model_thread or ModelThread()
        self.save_job = SaveJob()
        self._save_lock = threading.Lock()
        self.input_png = png_bytes(float_to_u8(rgb.permute(1, 2, 0)).numpy())

    def info(self) -> Dict[str, Any]:
        """What the page needs to know: sizes, tile side, zoom limit, the model and how it runs."""
        return {'name': self.name, 'width': self.size[1], 'height': self.size[0], 'tile': self.tile,
                'min_tile': min(MIN_TILE, self.tile),
                'max_zoom': self.max_zoom, **self.about}

    def check_grid(self, height: int, width: int) -> None:
        """RequestError unless (height, width) is an output grid the viewer renders."""
        h, w = self.size
        for name, n, side in (('height', height, h), ('width', width, w)):
            limit = min(MAX_SIDE, int(self.max_zoom * side) + 1)
            if n < side:
                raise RequestError(400, f"{name} {n} is below the input's {side} px: the model renders x1 and up "
                                        "(the page shows smaller views with the browser)")
            if n > limit:
                raise RequestError(400, f"{name} {n} is beyond the viewer's limit of {limit} px "
                                        f"(x{self.max_zoom:g} of the {side} px input)")

    def view(self, client: str, gen: int) -> bool:
        """A client moved to view `gen`: its older requests stop. True if gen is its latest."""
        return self.generations.announce(check_client(client), gen)

    def tile_png(self, kind: str, height: int, width: int, i: int, j: int, client: str, gen: int,
                 shift: Tuple[int, int] = (0, 0), size_hw: Optional[Tuple[int, int]] = None) -> bytes:
        """Tile (i, j) of the (height, width) grid as PNG; Superseded if the view moved on.

        Tiles are size_hw = (th, tw) px (default self.tile square; MIN_TILE..self.tile a side), shifted by `shift`.
        """
        check_client(client)
        if kind not in KINDS:
            raise RequestError(400, f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        self.check_grid(height, width)
        size = (height, width)
        th, tw = size_hw or (self.tile, self.tile)
        low = min(MIN_TILE, self.tile)
        if not (low <= th <= self.tile and low <= tw <= self.tile):
            raise RequestError(400, f"tile size {tw}x{th} must be {low}-{self.tile} px a side")
        try:
            rect = tile_rect(size, (th, tw), i, j, shift)
        except ValueError as e:
            raise RequestError(400, str(e)) from None
        key = tile_key(kind, size, (th, tw), shift, i, j)
        data = self.cache.get(key)
        if data is not None:
            return data
        if not self.view(client, gen):
            raise Superseded()

        def stale() -> bool:
            return not self.generations.is_current(client, gen)

        try:
            # bicubic too: any torch call off the model thread slows the model's later calls; it takes
            # milliseconds, so it goes ahead of the model's tiles waiting there
            if kind == 'bicubic':
                rgb = self.model_thread.run(lambda: self.bicubic.render(size, rect), stale, priority=0)
            else:
                rgb = self.model_thread.run(lambda: self.renderer.render(size, rect, stale), stale)
        except Cancelled:
            raise Superseded() from None
        data = png_bytes(rgb)
        self.cache.put(key, data)
        return data

    def start_save(self, height: int, width: int) -> SaveJob:
        """Write the whole (height, width) upscale to a new PNG in save_dir, in a background thread."""
        h, w = self.size
        if not (h <= height <= MAX_SIDE and w <= width <= MAX_SIDE) or height * width > MAX_SAVE_PIXELS:
            raise RequestError(400, f"save size {width}x{height} must be at least the input's {w}x{h} and at most "
                                    f"{MAX_SAVE_PIXELS / 1e6:.0f} Mpx ({MAX_SIDE} px a side)")
        with self._save_lock:
            if self.save_job.state == 'running':
                raise RequestError(409, f"a save is running already ({self.save_job.path})")
            path = unused_path(self.save_dir, f"{self.name}_{width}x{height}", '.png')
            self.save_job = SaveJob('running', path, (height, width))
        threading.Thread(target=self._save, args=(self.save_job,), daemon=True).start()
        return self.save_job

    def _save(self, job: SaveJob) -> None:
        start = time.perf_counter()
        r = self.renderer
        try:
            # the renderer's encoding is the one this upscale would make (same input, options, amp)
            out = upscale_to_uint8(r.model, self.inp, job.size, amp=r.amp, norm=r.norm, test_time=r.test_time,
                                   encoded=r.encoded)
            save_atomic(out, job.path, 'PNG')
            job.state, job.message = 'done', f"wrote {job.path}"
        except Exception as e:  # the page shows the reason; the server keeps serving
            log.exception("save to %s failed", job.path)
            job.state, job.message = 'error', f"save failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        job.seconds = time.perf_counter() - start


def tile_key(kind: str, size: Tuple[int, int], size_hw: Tuple[int, int], shift: Tuple[int, int], i: int,
             j: int) -> Tuple[Any, ...]:
    """The tile cache's key of tile (i, j) of a grid of `size` cut into size_hw tiles shifted by `shift`."""
    return (kind, *size, *size_hw, *shift, i, j)


def check_client(client: str) -> str:
    """A client id as the page makes them (letters, digits, - and _; up to 64)."""
    if not CLIENT_ID.fullmatch(client or ''):
        raise RequestError(400, "client must be 1-64 letters, digits, '-' or '_'")
    return client


def unused_path(folder: str, stem: str, ext: str) -> str:
    """folder/stem.ext, or stem_2.ext, stem_3.ext... where that exists: a save never replaces a file."""
    path, n = os.path.join(folder, stem + ext), 1
    while os.path.exists(path):
        n += 1
        path = os.path.join(folder, f"{stem}_{n}{ext}")
    return path


def settle_int8(precision: Precision, model: torch.nn.Module, device: torch.device) -> Precision:
    """precision, or fp32 where int8 was chosen by 'auto' but cannot run; int8 asked for but impossible: UserError."""
    why = int8_unavailable(model, device) if precision.int8 else None
    if why is None:
        return precision
    if precision.auto:
        log.info("precision: fp32, not int8 (%s)", why)
        return Precision(None, f"auto: fp32 ({why})", auto=True)
    raise UserError(f"--precision int8: {why}")


def build_app(input_path: str, checkpoint: str, device: torch.device, precision: Precision, save_dir: str,
              test_time_flags: Optional[Dict[str, Any]] = None, trusted: bool = False,
              tile: Optional[int] = None) -> ViewerApp:
    """Read the image, load the model, encode once: the ViewerApp; bad inputs are one-line UserErrors.

    All of it runs on the app's model thread, where every later model call runs (see ModelThread).
    """
    model_thread = ModelThread()
    return model_thread.run(lambda: _build_app(input_path, checkpoint, device, precision, save_dir,
                                               test_time_flags, trusted, tile, model_thread), lambda: False)


def _build_app(input_path: str, checkpoint: str, device: torch.device, precision: Precision, save_dir: str,
               test_time_flags: Optional[Dict[str, Any]], trusted: bool, tile: Optional[int],
               model_thread: ModelThread) -> ViewerApp:
    if not os.path.isdir(save_dir):
        raise UserError(f"save folder does not exist: {save_dir}")
    img = read_image(input_path)
    h, w = img.size
    if h * w > MAX_INPUT_PIXELS:
        raise UserError(f"{input_path} is {w}x{h}: the viewer keeps the image's feature map in memory and takes "
                        f"at most {MAX_INPUT_PIXELS / 1e6:.1f} Mpx; crop it, or upscale it with demo.py")
    for note in img.notes:
        log.info("%s: %s", input_path, note)
    if img.alpha is not None:
        log.warning("%s: transparency is not shown or saved by the viewer (demo.py keeps it)", input_path)
    loaded = load_sr(checkpoint, device, DEMO, "the authors' demo convention", trusted=trusted)
    model = loaded.model
    if not getattr(model, 'pointwise', True):
        raise UserError(f"{type(model).__name__} renders whole grids, not regions: the viewer needs a pointwise "
                        "model (LIIF, MetaSR); use demo.py")
    precision = settle_int8(precision, model, device)
    test_time = choose_test_time(model, test_time_flags or {})
    padded = pad_thin_input(model, img.rgb)
    model_rgb = img.rgb
    if padded is not None:  # as demo.py: edge-replicated copy, queried at the original pixels
        model, model_rgb = padded.model, padded.rgb
    inp = loaded.norm.inp(model_rgb.unsqueeze(0).to(device))
    start = time.perf_counter()
    renderer = RegionRenderer(model, inp, loaded.norm, precision.amp, test_time, int8=precision.int8)
    log.info("encoded %s (%dx%d) in %.1f s on %s, precision %s (%s), test-time options: %s", input_path, w, h,
             time.perf_counter() - start, device, precision.name, precision.reason, test_time.describe())
    # the save runs upscale_to_uint8 as demo.py does: int8 is for the tiles only, a saved file is fp32
    shown = f"{precision.name} (saves fp32)" if precision.int8 else precision.name
    about = {'model': os.path.basename(checkpoint), 'device': str(device), 'precision': shown,
             'bicubic': "MATLAB imresize bicubic (a = -0.5), same pixel centres"}
    name = os.path.splitext(os.path.basename(input_path))[0]
    tile = tile or (GPU_TILE if device.type == 'cuda' else TILE)
    return ViewerApp(renderer, img.rgb, name, save_dir, about, inp, tile=tile, model_thread=model_thread)
