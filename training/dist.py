"""Process layout: torchrun's environment (one node or many) or a plain single process; collectives."""
import datetime
import hashlib
import os
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

import torch
import torch.distributed as dist

from utils.errors import UserError


@dataclass
class DistInfo:
    """Where this process stands: rank, world size, local rank and the device it trains on."""
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes files, logs to the console and shows progress bars."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when several processes train one model (DDP)."""
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return default if value is None else int(value)
    except ValueError:
        raise UserError(f"environment variable {name} must be an integer, got {value!r}") from None


def setup(device_type: Optional[str] = None) -> DistInfo:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, ...), else run as one process.

    CUDA (if available, or device_type 'cuda'): process k of a node trains on cuda:k with NCCL;
    CPU (no CUDA, or device_type 'cpu'): gloo.
    """
    world_size = _env_int('WORLD_SIZE', 1)
    rank = _env_int('RANK', 0)
    local_rank = _env_int('LOCAL_RANK', 0)
    local_world_size = _env_int('LOCAL_WORLD_SIZE', 1)
    if device_type == 'cuda' and not torch.cuda.is_available():
        raise UserError("device cuda: CUDA is not available here (set device: cpu or leave it unset)")
    if device_type != 'cpu' and torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"local rank {local_rank} has no GPU: {torch.cuda.device_count()} visible "
                            f"(use --nproc_per_node <= the number of GPUs)")
        device = torch.device('cuda', local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device('cpu')
    info = DistInfo(rank, world_size, local_rank, local_world_size, device)
    if info.distributed and not dist.is_initialized():
        backend = 'nccl' if device.type == 'cuda' else 'gloo'
        kwargs = {'device_id': device} if device.type == 'cuda' else {}
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30), **kwargs)
    return info


def teardown(info: DistInfo) -> None:
    """Leave the process group (a no-op for a single process)."""
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: Sequence[float], info: DistInfo) -> List[float]:
    """Element-wise sums of `values` over every rank (float64, so sums of metrics stay exact enough)."""
    if not info.distributed:
        return [float(v) for v in values]
    t = torch.tensor(list(values), dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return t.tolist()


def all_reduce_tensor(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """t summed over every rank, in place (returned as is for a single process)."""
    if info.distributed:
        dist.all_reduce(t)
    return t


def all_gather_objects(obj: Any, info: DistInfo) -> List[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every rank (small picklable objects only)."""
    if not info.distributed:
        return [obj]
    out: List[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's obj on every rank."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    """Wait for every rank (a no-op for a single process)."""
    if info.distributed:
        dist.barrier()


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-1 of every parameter and buffer, to prove that the replicas of all ranks are identical."""
    h = hashlib.sha1()
    for name, t in getattr(model, 'module', model).state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
