"""--gpu IDS as in the original train_liif.py: pick the visible GPUs; several ids start one process each."""
import os
import sys
from typing import List, Sequence

import torch

from utils.errors import UserError


def parse_gpu_ids(gpu: str) -> List[str]:
    """'0,1' -> ['0', '1']; anything but comma-separated integers is a UserError."""
    ids = [s.strip() for s in gpu.split(',')]
    if not ids or not all(s.isdigit() for s in ids):
        raise UserError(f"--gpu takes comma-separated GPU ids such as 0 or 0,1, not {gpu!r}")
    return ids


def select_gpus(ids: Sequence[str]) -> None:
    """Make exactly these GPUs visible (CUDA_VISIBLE_DEVICES), before CUDA is first used."""
    os.environ['CUDA_VISIBLE_DEVICES'] = ','.join(ids)
    if not torch.cuda.is_available():
        raise UserError(f"--gpu {','.join(ids)}: CUDA is not available here (drop --gpu, or pass "
                        f"-o device=cpu, to run on the CPU)")


def under_torchrun() -> bool:
    """True inside a process that torchrun (or another launcher setting RANK / WORLD_SIZE) started."""
    return 'RANK' in os.environ and 'WORLD_SIZE' in os.environ


def torchrun_command(n_procs: int, script: str, argv: Sequence[str]) -> List[str]:
    """The single-node torchrun command line that runs `script argv` once per GPU."""
    return [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={n_procs}',
            script, *argv]


def relaunch_with_torchrun(n_procs: int, script: str, argv: Sequence[str]) -> None:
    """Replace this process by torchrun (it forwards SIGINT / SIGTERM to the workers); never returns."""
    cmd = torchrun_command(n_procs, script, argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(cmd[0], cmd)
