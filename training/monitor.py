"""What a run reports: log (console + log.txt), TensorBoard scalars and previews, metrics.jsonl (rank 0)."""
import json
import logging
import os
import sys
from typing import Any, Dict, Optional

import torch

LOGGER = 'liif.train'


def setup_logging(is_main: bool, rank: int) -> logging.Logger:
    """Console logging: rank 0 at INFO, other ranks only warnings (prefixed with their rank)."""
    log = logging.getLogger(LOGGER)
    log.setLevel(logging.INFO if is_main else logging.WARNING)
    log.propagate = False
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    handler = logging.StreamHandler(sys.stderr)
    prefix = '' if is_main else f'[rank {rank}] '
    handler.setFormatter(logging.Formatter(f'%(asctime)s {prefix}%(message)s', '%H:%M:%S'))
    log.addHandler(handler)
    return log


class Monitor:
    """Rank 0's outputs of one run folder; on other ranks every method does nothing."""

    def __init__(self, run_dir: Optional[str]):
        self.run_dir = run_dir
        self.log = logging.getLogger(LOGGER)
        self.writer = None
        self._file_handler = None
        if run_dir is None:
            return
        self._file_handler = logging.FileHandler(os.path.join(run_dir, 'log.txt'))
        self._file_handler.setFormatter(logging.Formatter('%(asctime)s %(message)s', '%Y-%m-%d %H:%M:%S'))
        self.log.addHandler(self._file_handler)
        from tensorboardX import SummaryWriter  # late: only rank 0 pays for it
        self.writer = SummaryWriter(os.path.join(run_dir, 'tensorboard'))

    def scalar(self, tag: str, value: float, step: int) -> None:
        """A TensorBoard scalar."""
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def image(self, tag: str, img: torch.Tensor, step: int) -> None:
        """A TensorBoard image (3, H, W) with values in [0, 1]."""
        if self.writer is not None:
            self.writer.add_image(tag, img.detach().float().clamp(0, 1).cpu(), step)

    def epoch(self, record: Dict[str, Any]) -> None:
        """One line per epoch in metrics.jsonl plus TensorBoard scalars."""
        if self.run_dir is None:
            return
        with open(os.path.join(self.run_dir, 'metrics.jsonl'), 'a') as f:
            f.write(json.dumps(record) + '\n')
        for key in ('train_loss', 'lr', 'val_psnr', 'val_loss', 'epoch_seconds'):
            if record.get(key) is not None:
                self.scalar(key.replace('_', '/', 1), record[key], record['epoch'])
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        """Flush and release the files."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self._file_handler is not None:
            self.log.removeHandler(self._file_handler)
            self._file_handler.close()
            self._file_handler = None
