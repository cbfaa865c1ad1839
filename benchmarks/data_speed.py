"""Samples per second of a config's training data pipeline alone (no model), as the trainer loads it.

python benchmarks/data_speed.py [--config configs/train-local/train_edsr-baseline-liif.yaml] [--workers 0 4 8]
Default: the local T91 + BSD200 config (48 x 48 inputs, s ~ U(1, 4), 2304 queries), the trainer's
default number of workers. The dataset cache (in_memory) is filled before timing.
"""
import argparse
import os
import sys
import time
from typing import List, Optional

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from training.config import validate_config  # noqa: E402
from training.data import build_dataset, cpu_cores, default_num_workers, ignore_stop_signals, reseed  # noqa: E402
from training.dist import DistInfo  # noqa: E402
from utils.cli import run_cli  # noqa: E402
from utils.config import apply_overrides, load_config  # noqa: E402

DEFAULT_CONFIG = 'configs/train-local/train_edsr-baseline-liif.yaml'


def measure(ds, batch_size: int, workers: int, batches: int, warmup: int) -> float:
    """Samples per second over `batches` batches after `warmup` batches (worker start-up excluded)."""
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
                        worker_init_fn=ignore_stop_signals if workers else None)
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    t0 = time.perf_counter()
    n = 0
    for _ in range(batches):
        n += next(it)['inp'].shape[0]
    return n / (time.perf_counter() - t0)


def main(argv: Optional[List[str]] = None) -> None:
    """Print samples/s of the training pipeline for each number of workers asked for."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--config', default=DEFAULT_CONFIG)
    p.add_argument('-o', '--override', dest='overrides', action='append', default=[])
    p.add_argument('--workers', type=int, nargs='+', help='numbers of DataLoader workers (default: the trainer\'s)')
    p.add_argument('--batches', type=int, default=60, help='timed batches per setting')
    args = p.parse_args(argv)
    cfg = validate_config(apply_overrides(load_config(args.config), args.overrides))
    info = DistInfo(0, 1, 0, 1, torch.device('cpu'))
    workers = args.workers if args.workers else [default_num_workers(info)]
    t0 = time.perf_counter()
    ds = build_dataset(cfg['train_dataset'])
    reseed(ds, cfg['seed'], 0, 0)
    batch = cfg['train_dataset']['batch_size']
    print(f"{args.config}: {len(ds)} samples, batch {batch}, built in {time.perf_counter() - t0:.1f} s; "
          f"{cpu_cores()} CPU cores, torch threads {torch.get_num_threads()}")
    for w in workers:
        rate = measure(ds, batch, w, args.batches, warmup=max(2, 2 * w))
        print(f"workers {w:2d}: {rate:8.1f} samples/s  ({rate / batch:6.1f} batches/s)")


if __name__ == '__main__':
    run_cli(main)
