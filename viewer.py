"""Look into an image at any zoom in the browser: the model renders the visible pixels of each view.

    python viewer.py --input assets/sample.png            then open the printed URL

The page shows the image fitted to the window; the wheel, a pinch or +/- zoom (any factor, up to
x64 of the input), dragging pans, "compare" splits the view with bicubic, "save" writes the whole
image at the current zoom (or a typed size) as demo.py would. Serves on 127.0.0.1 unless --host
says otherwise.
"""
import argparse
import logging
import os
import sys
from typing import List, Optional

from inference.loading import resolve_model, select_device
from utils import testtime
from utils.amp import VIEW_PRECISIONS, resolve_precision
from utils.cli import run_cli
from utils.errors import UserError
from viewer_server.app import build_app
from viewer_server.server import serve

log = logging.getLogger('viewer')

LOOPBACK = ('127.0.0.1', 'localhost', '::1')


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--input', required=True, help="image to look at (any format PIL reads, up to 2048x2048)")
    p.add_argument('--model', default=None, help="LIIF / MetaSR checkpoint (default: the bundled model)")
    p.add_argument('--port', type=int, default=8000, help="TCP port (default 8000; 0 picks a free one)")
    p.add_argument('--host', default='127.0.0.1',
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network)")
    p.add_argument('--gpu', default=None, help="CUDA device number, or cpu (default: cuda:0 when present, else the CPU)")
    p.add_argument('--precision', default='auto', choices=VIEW_PRECISIONS,
                   help="arithmetic of the model's tiles; auto (default): bf16 on CUDA or a CPU with native bf16, "
                        "else int8 hidden layers (LIIF; ~1.5x fp32, within a few 8-bit levels), else fp32. "
                        "Saved images are always computed as demo.py does (fp32 for int8)")
    p.add_argument('--save-dir', default='.', help="folder the save button writes to (default: the current one)")
    p.add_argument('--trust-checkpoint', action='store_true',
                   help="load a checkpoint holding arbitrary Python objects (runs code from the file)")
    testtime.add_arguments(p)
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    """Load and encode the image, then serve until Ctrl-C."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be 0-65535, not {args.port}")
    checkpoint = resolve_model(args.model)
    if not os.path.isfile(checkpoint):
        raise UserError(f"checkpoint not found: {checkpoint}")
    device = select_device(args.gpu)
    precision = resolve_precision(args.precision, device, int8=True)
    app = build_app(args.input, checkpoint, device, precision, args.save_dir, testtime.flag_values(args),
                    args.trust_checkpoint)
    try:
        server = serve(app, args.host, args.port)
    except OSError as e:
        raise UserError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    if args.host not in LOOPBACK:
        log.warning("listening on %s: other machines can reach this viewer", args.host)
    print(f"viewer of {args.input} at {server.url}  (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == '__main__':
    run_cli(lambda: main(sys.argv[1:]))
