"""Per-sample random generators, so a sample's augmentation depends only on (seed, stream, epoch, index).

That makes the data stream independent of the number of DataLoader workers and processes, and lets
a run resume bit-exactly, even mid-epoch.
"""
import random
from typing import Optional

import numpy as np


class SampleRNG:
    """Hands out one numpy Generator per sample; unseeded it follows the global `random` state."""

    def __init__(self):
        self.seed: Optional[int] = None
        self.stream = 0
        self.epoch = 0

    def reseed(self, seed: int, epoch: int = 0, stream: int = 0) -> None:
        """From now on, sample `idx` draws from a generator seeded by (seed, stream, epoch, idx)."""
        if min(seed, epoch, stream) < 0:
            raise ValueError('seed, epoch and stream must be non-negative')
        self.seed, self.epoch, self.stream = int(seed), int(epoch), int(stream)

    def __call__(self, idx: int) -> np.random.Generator:
        """The generator of sample `idx`."""
        if self.seed is None:
            # DataLoader seeds `random` in every worker, so unseeded use stays varied across workers
            return np.random.default_rng(random.getrandbits(64))
        return np.random.default_rng([self.seed, self.stream, self.epoch, int(idx)])
