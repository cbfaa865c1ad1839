"""One training epoch and one validation pass (L1 in the normalised space, PSNR on [0, 1] values)."""

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Dict, Iterable, Optional

import torch
import torch.nn.functional as F
from tqdm import tqdm

from training.dist import DistInfo, all_reduce_sum, all_reduce_tensor
from training.monitor import Monitor
from training.state import Progress
from training.stopper import Stopper
from utils.errors import UserError
from inference.bounded import batched_predict
from utils.amp import autocast as inference_autocast

STEP_LOG_EVERY = 50  # TensorBoard step-loss interval


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


class Normaliser:
    """data_norm of the config: (v - sub) / div for inputs and targets, and back for predictions."""

    def __init__(self, data_norm: Dict[str, Any], device: torch.device):
        def t(part: str, key: str, shape) -> torch.Tensor:
            return torch.tensor(data_norm[part][key], dtype=torch.float32, device=device).view(*shape)
        self.inp_sub, self.inp_div = t('inp', 'sub', (1, -1, 1, 1)), t('inp', 'div', (1, -1, 1, 1))
        self.gt_sub, self.gt_div = t('gt', 'sub', (1, 1, -1)), t('gt', 'div', (1, 1, -1))

    def inp(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised input images (N, 3, h, w)."""
        return (x - self.inp_sub) / self.inp_div

    def gt(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised target colours (N, Q, 3)."""
        return (x - self.gt_sub) / self.gt_div

    def pred_to_rgb(self, pred: torch.Tensor) -> torch.Tensor:
        """Predictions back to [0, 1] colours, clamped."""
        return (pred * self.gt_div + self.gt_sub).clamp_(0, 1)


def autocast(device: torch.device, amp: Optional[str]) -> ContextManager:
    """torch.autocast for amp bf16 (CUDA or CPU) / fp16 (CUDA: the trainer refuses it on the CPU); no-op for None."""
    return inference_autocast(device, amp)


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
                scaler: torch.amp.GradScaler, norm: Normaliser, amp: Optional[str], info: DistInfo,
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
            with autocast(info.device, amp):
                pred = model(norm.inp(batch['inp']), batch['coord'], batch['cell'])
            loss = F.l1_loss(pred.float(), norm.gt(batch['gt']))
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


def _image_shape(inp: torch.Tensor, n_queries: int):
    """(H, W) of a full query grid of an input (N, 3, h, w), as the authors' eval_psnr derives it."""
    ih, iw = inp.shape[-2:]
    s = math.sqrt(n_queries / (ih * iw))
    return round(ih * s), round(iw * s)


def shaved_psnr(rgb: torch.Tensor, gt: torch.Tensor, inp: torch.Tensor, eval_type: str) -> torch.Tensor:
    """PSNR of whole-grid predictions after shaving (div2k-S: RGB, S + 6 px; benchmark-S: Y, S px)."""
    kind, scale = eval_type.split('-')
    h, w = _image_shape(inp, rgb.shape[1])
    diff = (rgb - gt).view(rgb.shape[0], h, w, 3).permute(0, 3, 1, 2)
    if kind == 'benchmark':
        shave = int(scale)
        diff = (diff * diff.new_tensor([65.481, 128.553, 24.966]).view(1, 3, 1, 1) / 255).sum(dim=1)
    else:
        shave = int(scale) + 6
    diff = diff[..., shave:-shave, shave:-shave]
    return -10 * torch.log10(diff.pow(2).mean())


@torch.no_grad()
def validate(model: torch.nn.Module, batches: Iterable, norm: Normaliser, amp: Optional[str],
             info: DistInfo, eval_type: Optional[str] = None, eval_bsize: Optional[int] = None) -> Dict[str, float]:
    """Mean PSNR (per batch, weighted by its size, as the authors logged it) and L1, over all ranks."""
    model = getattr(model, 'module', model)
    model.eval()
    psnr_sum = l1_sum = count = 0.0
    for batch in tqdm(batches, desc='val', leave=False, disable=None if info.is_main else True):
        batch = to_device(batch, info.device)
        inp = norm.inp(batch['inp'])
        with autocast(info.device, amp):
            if eval_bsize is None:
                pred = model(inp, batch['coord'], batch['cell'])
            else:
                pred = batched_predict(model, inp, batch['coord'], batch['cell'], eval_bsize)
        pred = pred.float()
        n = inp.shape[0]
        l1_sum += F.l1_loss(pred, norm.gt(batch['gt'])).item() * n
        rgb = norm.pred_to_rgb(pred)
        if eval_type is None:
            psnr = -10 * torch.log10((rgb - batch['gt']).pow(2).mean())
        else:
            psnr = shaved_psnr(rgb, batch['gt'], batch['inp'], eval_type)
        psnr_sum += psnr.item() * n
        count += n
    psnr_sum, l1_sum, count = all_reduce_sum([psnr_sum, l1_sum, count], info)
    return {'val_psnr': psnr_sum / count, 'val_loss': l1_sum / count}


@torch.no_grad()
def preview(model: torch.nn.Module, sample: Dict[str, torch.Tensor], norm: Normaliser,
            amp: Optional[str], device: torch.device) -> torch.Tensor:
    """The model's [0, 1] prediction (3, H, W) of one full-grid sample."""
    model = getattr(model, 'module', model)
    model.eval()
    batch = to_device({k: v.unsqueeze(0) for k, v in sample.items()}, device)
    with autocast(device, amp):
        pred = batched_predict(model, norm.inp(batch['inp']), batch['coord'], batch['cell'], 30000)
    h, w = preview_shape(sample)
    return norm.pred_to_rgb(pred.float())[0].view(h, w, 3).permute(2, 0, 1)


def preview_shape(sample: Dict[str, torch.Tensor]):
    """(H, W) of a full-grid sample: its coordinates are a row-major H x W grid."""
    h = int(torch.unique(sample['coord'][:, 0]).numel())
    return h, sample['coord'].shape[0] // h


def gt_image(sample: Dict[str, torch.Tensor]) -> torch.Tensor:
    """The target (3, H, W) of a full-grid sample."""
    h, w = preview_shape(sample)
    return sample['gt'].view(h, w, 3).permute(2, 0, 1)


def timer() -> Callable[[], float]:
    """Seconds since the call (monotonic)."""
    t0 = time.monotonic()
    return lambda: time.monotonic() - t0
