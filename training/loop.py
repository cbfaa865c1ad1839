"""One training epoch and one validation pass (L1 in the normalised space, PSNR on [0, 1] values)."""

import time
from dataclasses import dataclass
from typing import Callable, ContextManager, Dict, Iterable, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from datasets.wrappers import GRID_WRAPPERS
from evaluation.protocol import batched_mean, batched_psnr, parse_eval_type, query_image, query_squared_error
from training.dist import DistInfo, all_gather_objects, all_reduce_tensor
from training.monitor import Monitor
from training.state import Progress
from training.stopper import Stopper
from utils.errors import UserError
from inference.bounded import batched_predict, upscale
from models.srno import authors_row_chunked
from utils.amp import autocast as inference_autocast
from utils.norm import DataNorm

STEP_LOG_EVERY = 50  # TensorBoard step-loss interval


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


def autocast(device: torch.device, amp: Optional[str]) -> ContextManager:
    """torch.autocast for amp bf16 (CUDA or CPU) / fp16 (CUDA: the trainer refuses it on the CPU); no-op for None."""
    return inference_autocast(device, amp)


def sample_layout(batch: Dict[str, torch.Tensor]) -> str:
    """'grid' for samples in SRNO's layout (coord (N, H, W, 2), cell (N, 2), gt (N, 3, H, W)), else 'points'."""
    return 'grid' if batch['coord'].dim() == 4 else 'points'


def check_layout(model: torch.nn.Module, batch: Dict[str, torch.Tensor]) -> str:
    """The batch's layout, which must be the one the model is queried in (query_layout); else a UserError."""
    model = getattr(model, 'module', model)
    layout, wanted = sample_layout(batch), getattr(model, 'query_layout', 'points')
    # config validation refuses a wrapper of the wrong layout by name; this catches any other source of batches
    if layout != wanted:
        raise UserError(f"{type(model).__name__} is queried with {wanted} samples, but the wrapper gives {layout} "
                        f"samples (coord {tuple(batch['coord'].shape)}): use "
                        f"{', '.join(GRID_WRAPPERS) if wanted == 'grid' else 'a points wrapper'}")
    return layout


def as_points(pred: torch.Tensor, batch: Dict[str, torch.Tensor]
              ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pred, gt, coord) per query, (N, Q, 3), (N, Q, 3), (N, Q, 2): grid samples flattened row-major."""
    if sample_layout(batch) == 'points':
        return pred, batch['gt'], batch['coord']
    return pred.flatten(2).transpose(1, 2), batch['gt'].flatten(2).transpose(1, 2), batch['coord'].flatten(1, 2)


def to_device(batch: Dict[str, torch.Tensor], device: torch.device) -> Dict[str, torch.Tensor]:
    """Every tensor of a batch on `device` (asynchronous from pinned memory)."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@dataclass
class EpochOutcome:
    """How an epoch ended: complete, or stopped early for `stop_reason`; seconds spent waiting for data."""
    complete: bool
    stop_reason: Optional[str]
    data_wait: float = 0.0


def train_epoch(model: torch.nn.Module, batches: Iterable, optimizer: torch.optim.Optimizer,
                scaler: torch.amp.GradScaler, norm: DataNorm, amp: Optional[str], info: DistInfo,
                progress: Progress, steps_per_epoch: int, stopper: Stopper, monitor: Monitor,
                steps_this_run: Callable[[], int]) -> EpochOutcome:
    """Train from progress.step to the end of progress.epoch, updating progress after every step."""
    model.train()
    epoch = progress.epoch
    bar = tqdm(total=steps_per_epoch, initial=progress.step, desc=f'epoch {epoch}', leave=False,
               disable=None if info.is_main else True, dynamic_ncols=True)
    stop_reason = None
    data_wait = 0.0
    batch_iter = iter(batches)
    try:
        while True:
            # every step ends with a sync (.tolist() below), so this wait is the loader's alone
            t0 = time.perf_counter()
            batch = next(batch_iter, None)
            data_wait += time.perf_counter() - t0
            if batch is None:
                break
            batch = to_device(batch, info.device)
            gt_channels = -3 if check_layout(model, batch) == 'grid' else -1
            with autocast(info.device, amp):
                pred = model(norm.inp(batch['inp']), batch['coord'], batch['cell'])
            loss = F.l1_loss(pred.float(), norm.gt(batch['gt'], gt_channels))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            progress.step += 1
            progress.global_step += 1
            local_stop = stopper.reason(steps_this_run()) is not None
            # one sync per step: the loss summed over ranks, and whether any rank diverged or must stop
            flags = torch.stack([loss.detach().double(), (~torch.isfinite(loss.detach())).double(),
                                 loss.new_tensor(float(local_stop), dtype=torch.float64)])
            loss_sum, bad, stop = all_reduce_tensor(flags, info).tolist()
            if bad:
                raise TrainingDiverged(f"loss became {loss_sum / info.world_size} at epoch {epoch}, step "
                                       f"{progress.step} (global step {progress.global_step}); nothing was "
                                       f"saved after the last good checkpoint")
            step_loss = loss_sum / info.world_size
            progress.loss_sum += step_loss
            bar.update(1)
            if progress.step % 10 == 0 or progress.step == steps_per_epoch:
                bar.set_postfix(loss=f'{progress.loss_sum / progress.step:.4f}')
            if progress.global_step % STEP_LOG_EVERY == 0:
                monitor.scalar('train/loss_step', step_loss, progress.global_step)
            if stop:
                stop_reason = stopper.reason(steps_this_run()) or 'a stop request of another rank'
                break
    finally:
        bar.close()
    return EpochOutcome(complete=progress.step >= steps_per_epoch, stop_reason=stop_reason, data_wait=data_wait)


@torch.no_grad()
def validate(model: torch.nn.Module, loader: DataLoader, norm: DataNorm, amp: Optional[str], info: DistInfo,
             batch_size: int, eval_type: Optional[str] = None, eval_bsize: Optional[int] = None
             ) -> Dict[str, float]:
    """PSNR and L1 of the whole validation set as the authors logged them, for any number of processes.

    batch_size is the config's (global) validation batch. PSNR is evaluation's protocol (eval_type's
    shave and Y channel on whole-grid samples, or without eval_type RGB over the sample's queries, on
    clamped [0, 1] colours), pooled over each single-process batch, then averaged weighted by batch
    size (batched_psnr); L1 is the training loss in the normalised space, per batch likewise. Each
    rank scores its own samples (the loader's sampler gives their places in the set) and all ranks
    gather every sample's sums, so every rank gets the single-process figures.
    """
    protocol = parse_eval_type(eval_type)
    model = getattr(model, 'module', model)
    model.eval()
    indices = list(loader.sampler)
    sse: List[float] = []
    sse_counts: List[int] = []
    l1: List[float] = []
    l1_counts: List[int] = []
    for batch in tqdm(loader, desc='val', leave=False, disable=None if info.is_main else True):
        batch = to_device(batch, info.device)
        layout = check_layout(model, batch)
        inp = norm.inp(batch['inp'])
        with autocast(info.device, amp):
            if eval_bsize is None:
                pred = model(inp, batch['coord'], batch['cell'])
            elif layout == 'grid':  # the authors' chunks of eval_bsize grid rows, each a separate call
                pred = authors_row_chunked(model, inp, batch['coord'], batch['cell'], eval_bsize)
            else:
                pred = batched_predict(model, inp, batch['coord'], batch['cell'], eval_bsize)
        pred, gt, coord = as_points(pred.float(), batch)
        err = (pred.double() - norm.gt(gt).double()).abs().flatten(1)
        l1 += err.sum(dim=1).tolist()
        l1_counts += [err.shape[1]] * err.shape[0]
        sums, count = query_squared_error(norm.output(pred).clamp_(0, 1), gt, coord, protocol)
        sse += sums.tolist()
        sse_counts += [count] * len(sums)
    if len(sse) != len(indices):
        raise RuntimeError(f"the validation loader gave {len(sse)} samples, its sampler {len(indices)}")
    gathered = all_gather_objects((indices, sse, sse_counts, l1, l1_counts), info)
    all_indices, all_sse, all_sse_counts, all_l1, all_l1_counts = (
        [v for rank_part in gathered for v in rank_part[field]] for field in range(5))
    if not all_indices:
        raise UserError("the validation dataset holds no samples")
    return {'val_psnr': batched_psnr(all_sse, all_sse_counts, all_indices, batch_size),
            'val_loss': batched_mean(all_l1, all_l1_counts, all_indices, batch_size)}


@torch.no_grad()
def preview(model: torch.nn.Module, sample: Dict[str, torch.Tensor], norm: DataNorm,
            amp: Optional[str], device: torch.device) -> torch.Tensor:
    """The model's [0, 1] prediction (3, H, W) of one full-grid sample."""
    model = getattr(model, 'module', model)
    model.eval()
    batch = to_device({k: v.unsqueeze(0) for k, v in sample.items()}, device)
    with autocast(device, amp):
        if check_layout(model, batch) == 'grid':
            # the full grid in bands (the one-call values, in bounded memory): the grid's coord and cell are upscale's
            pred = upscale(model, norm.inp(batch['inp']), batch['gt'].shape[-2:], amp=amp)[0]
            return norm.output(pred.float(), channel_dim=-3).clamp_(0, 1)
        pred = batched_predict(model, norm.inp(batch['inp']), batch['coord'], batch['cell'], 30000)
    return query_image(norm.output(pred.float()).clamp_(0, 1), batch['coord'])[0]


def gt_image(sample: Dict[str, torch.Tensor]) -> torch.Tensor:
    """The target (3, H, W) of a full-grid sample."""
    if sample['coord'].dim() == 3:  # grid layout: gt is the image already
        return sample['gt']
    return query_image(sample['gt'].unsqueeze(0), sample['coord'].unsqueeze(0))[0]


def timer() -> Callable[[], float]:
    """Seconds since the call (monotonic)."""
    t0 = time.monotonic()
    return lambda: time.monotonic() - t0
