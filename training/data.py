"""Datasets and loaders of a run: samplers shared out over ranks, reproducible per (seed, epoch)."""
import itertools
import math
import os
import signal
from typing import Any, Dict, Iterator, Optional

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

import datasets
from training.dist import DistInfo
from utils.errors import UserError

TRAIN_STREAM, VAL_STREAM = 0, 1


def cpu_cores() -> int:
    """CPU cores this process may use (respects affinity masks and container CPU sets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def default_num_workers(info: DistInfo) -> int:
    """min(8, CPU cores per process of this node): enough to keep one GPU fed on the paper's wrapper."""
    return max(1, min(8, cpu_cores() // info.local_world_size))


def build_dataset(section: Dict[str, Any]) -> Dataset:
    """The dataset of a train_dataset / val_dataset section, wrapped if it names a wrapper."""
    ds = datasets.make(section['dataset'])
    if section.get('wrapper') is not None:
        ds = datasets.make(section['wrapper'], args={'dataset': ds})
    return ds


def reseed(ds: Dataset, seed: int, epoch: int, stream: int) -> None:
    """Make the random draws of ds a function of (seed, stream, epoch, index), if it draws any."""
    if hasattr(ds, 'reseed'):
        ds.reseed(seed, epoch, stream)


def ignore_stop_signals(_worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C / SIGTERM to the main process, which finishes its step first."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class EpochSampler(Sampler[int]):
    """This rank's share of a DistributedSampler epoch, minus the samples a stopped run already used."""

    def __init__(self, ds: Dataset, info: DistInfo, seed: int):
        super().__init__()
        self.base = DistributedSampler(ds, num_replicas=info.world_size, rank=info.rank,
                                       shuffle=True, seed=seed, drop_last=False)
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Order of `epoch` (set_epoch of DistributedSampler), starting after `skip` samples."""
        self.base.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.base), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.base) - self.skip)


class ShardSampler(Sampler[int]):
    """Indices rank, rank + world, ... in order: each validation sample is seen exactly once overall."""

    def __init__(self, n: int, info: DistInfo):
        super().__init__()
        self.indices = list(range(info.rank, n, info.world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class Loaders:
    """The train and validation loaders of a run; `train_epoch` prepares the loader for one epoch."""

    def __init__(self, cfg: Dict[str, Any], info: DistInfo, num_workers: Optional[int] = None):
        self.seed = cfg['seed']
        self.info = info
        if num_workers is None:
            num_workers = cfg['num_workers'] if cfg['num_workers'] is not None else default_num_workers(info)
        self.num_workers = num_workers
        batch = cfg['train_dataset']['batch_size']
        if batch % info.world_size:
            raise UserError(f"train_dataset.batch_size {batch} is the global batch: it must divide "
                            f"by the {info.world_size} processes")
        self.batch_size = batch // info.world_size
        self.train_set = build_dataset(cfg['train_dataset'])
        self.sampler = EpochSampler(self.train_set, info, self.seed)
        self.generator = torch.Generator()
        self.train = self._loader(self.train_set, self.batch_size, self.sampler, self.generator)
        self.val_set = self.val = None
        if cfg['val_dataset'] is not None:
            self.val_set = build_dataset(cfg['val_dataset'])
            # the same validation samples every time, so PSNRs of different epochs compare
            reseed(self.val_set, self.seed, 0, VAL_STREAM)
            val_batch = math.ceil(cfg['val_dataset']['batch_size'] / info.world_size)
            self.val = self._loader(self.val_set, val_batch, ShardSampler(len(self.val_set), info), None)

    def _loader(self, ds: Dataset, batch_size: int, sampler: Sampler,
                generator: Optional[torch.Generator]) -> DataLoader:
        # no persistent workers: each epoch's iterator must see the dataset reseeded for that epoch
        return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=self.num_workers,
                          pin_memory=self.info.device.type == 'cuda', drop_last=False,
                          worker_init_fn=ignore_stop_signals if self.num_workers else None,
                          generator=generator)

    def steps_per_epoch(self) -> int:
        """Batches per epoch on each rank (the same on all: DistributedSampler pads)."""
        return math.ceil(len(self.sampler.base) / self.batch_size)

    def train_epoch(self, epoch: int, skip_steps: int = 0) -> DataLoader:
        """The train loader set up for `epoch`, resuming after `skip_steps` batches."""
        reseed(self.train_set, self.seed, epoch, TRAIN_STREAM)
        self.sampler.set_epoch(epoch, skip_steps * self.batch_size)
        # worker seeds only matter for datasets without reseed; keep them a function of (seed, epoch, rank)
        self.generator.manual_seed((self.seed * 1_000_003 + epoch) * 1009 + self.info.rank)
        return self.train
