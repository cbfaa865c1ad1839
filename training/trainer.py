"""A training run from start (or resume) to epoch_max, a stop request, or a diverged loss."""
import logging
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

import models
from training import dist, launch, state
from training.config import validate_config
from training.data import Loaders
from training.loop import gt_image, preview, timer, train_epoch, validate
from training.monitor import LOGGER, Monitor, setup_logging
from training.optim import current_lr, make_optimizer, make_scheduler
from training.rundir import (check_run_dir, create_run_dir, is_fresh, remove_failed_start, run_name,
                             write_run_files)
from training.stopper import Stopper
from utils.checkpoint import load_checkpoint
from utils.config import apply_overrides, load_config
from utils.errors import UserError
from utils.norm import DataNorm


@dataclass
class RunRequest:
    """What the command line asks for."""
    config: Optional[str] = None
    name: Optional[str] = None
    tag: Optional[str] = None
    resume: Optional[str] = None
    gpu: Optional[str] = None
    overrides: List[str] = field(default_factory=list)
    overwrite: bool = False
    save_root: str = 'save'
    script: str = 'train_liif.py'
    argv: List[str] = field(default_factory=list)
    trust_checkpoint: bool = False


def resolve(req: RunRequest) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]], Optional[str], str]:
    """(validated config, resume checkpoint or None, its path, run name); every error is one line."""
    raw = None
    resume = req.resume
    if req.config is not None:
        raw = apply_overrides(load_config(req.config), req.overrides)
        if resume is None and isinstance(raw.get('resume'), str):
            resume = raw['resume']
    elif resume is None:
        raise UserError("give --config CFG, or --resume CKPT to continue a run")
    ckpt = load_checkpoint(resume, map_location='cpu', trusted=req.trust_checkpoint) if resume is not None else None
    stored = (ckpt.get('train_state') or {}) if ckpt is not None else {}
    if raw is None:
        if stored.get('config') is None:
            raise UserError(f"{resume} holds no training config (a released checkpoint?): give --config too")
        raw = apply_overrides(stored['config'], req.overrides)
    source = req.config or f"the config stored in {resume}"
    try:
        cfg = validate_config(raw)
    except UserError as e:
        raise UserError(f"{source}: {e}") from None
    return cfg, ckpt, resume, run_name(req.config, req.name, req.tag, stored.get('run_name'))


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (model initialisation is then the same on every run and rank)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(req: RunRequest) -> int:
    """Run training as requested; the exit code (0, or 128 + signal after a signal stop)."""
    t_start = time.monotonic()
    log = setup_logging(os.environ.get('RANK', '0') == '0', int(os.environ.get('RANK', '0')))
    if req.gpu is not None:
        ids = launch.parse_gpu_ids(req.gpu)
        launch.select_gpus(ids)
    cfg, ckpt, resume, name = resolve(req)
    run_dir = os.path.join(req.save_root, name)
    if not launch.under_torchrun():
        check_run_dir(run_dir, resuming=ckpt is not None, overwrite=req.overwrite)
        if req.gpu is not None and len(ids) > 1:
            log.info("--gpu %s: starting %d processes with torchrun (DistributedDataParallel)", req.gpu, len(ids))
            launch.relaunch_with_torchrun(len(ids), req.script, req.argv)
    # a start that fails before its first checkpoint leaves no folder that would block the same command
    own_folder = is_fresh(run_dir) or (req.overwrite and ckpt is None)
    info = dist.setup(cfg['device'])
    try:
        return Run(cfg, ckpt, resume, name, run_dir, req, info, t_start).run()
    except BaseException:
        if own_folder and info.is_main and remove_failed_start(run_dir):
            log.info("removed %s: the run failed before its first checkpoint", run_dir)
        raise
    finally:
        dist.teardown(info)


class Run:
    """The objects of one run and its epoch loop."""

    def __init__(self, cfg: Dict[str, Any], ckpt: Optional[Dict[str, Any]], resume: Optional[str],
                 name: str, run_dir: str, req: RunRequest, info: dist.DistInfo, t_start: float):
        self.cfg, self.name, self.run_dir, self.info = cfg, name, run_dir, info
        self.log = logging.getLogger(LOGGER)
        self._check_dir(ckpt is not None, req.overwrite)
        if ckpt is not None:
            state.check_world_size(ckpt, info, resume)
        seed_everything(cfg['seed'])
        self.amp = self._device_options()
        # local rank 0 fills a bin cache first; the other ranks of its node then only read it
        if info.local_rank != 0:
            dist.barrier(info)
        self.loaders = Loaders(cfg, info)
        if info.local_rank == 0:
            dist.barrier(info)
        model = models.make(cfg['model']).to(info.device)
        self.optimizer = make_optimizer(model.parameters(), cfg['optimizer'])
        self.scheduler = make_scheduler(self.optimizer, cfg['multi_step_lr'], cfg['warmup_cosine_lr'], cfg['epoch_max'])
        self.scaler = torch.amp.GradScaler(info.device.type, enabled=self.amp == 'fp16')
        restored = state.Restored(state.Progress())
        if ckpt is not None:
            restored = state.restore(ckpt, model, self.optimizer, self.scheduler, self.scaler, cfg, info, resume)
        self.progress = restored.progress
        # the folder appears only now that data, model and resumed state were set up without error
        if info.is_main:
            create_run_dir(run_dir, req.overwrite, resuming=ckpt is not None)
            write_run_files(run_dir, cfg, req.script, req.argv)
        dist.barrier(info)
        self.monitor = Monitor(run_dir if info.is_main else None)
        self.model = model
        if cfg['compile']:
            # only forward (training steps, validation) is compiled; checkpoints unwrap _orig_mod
            self.model = torch.compile(model)
        if info.distributed:
            ids = [info.device.index] if info.device.type == 'cuda' else None
            self.model = DistributedDataParallel(self.model, device_ids=ids)
        self.norm = DataNorm.from_mapping(cfg['data_norm'])
        self.stopper = Stopper(cfg['time_limit'], cfg['step_limit'], start=t_start)
        self._preview_sample = self._preview_setup()
        self._log_start(model, resume, restored.optimizer_changes)

    def _check_dir(self, resuming: bool, overwrite: bool) -> None:
        """The no-clobber check on rank 0, its verdict shared so that every rank stops alike."""
        err = None
        if self.info.is_main:
            try:
                check_run_dir(self.run_dir, resuming, overwrite)
            except UserError as e:
                err = str(e)
        err = dist.broadcast_object(err, self.info)
        if err is not None:
            raise UserError(err)

    def _device_options(self) -> Optional[str]:
        """cuDNN autotuning and TF32 on CUDA; the amp mode in force (fp16 needs CUDA, bf16 runs anywhere)."""
        if self.info.device.type == 'cuda':
            torch.backends.cudnn.benchmark = True  # fixed-size crops: autotuned convolutions pay off
            torch.backends.cuda.matmul.allow_tf32 = self.cfg['tf32']
            torch.backends.cudnn.allow_tf32 = self.cfg['tf32']
        elif self.cfg['amp'] == 'fp16':
            raise UserError("amp fp16 trains on CUDA only; on the CPU use amp: bf16 or amp: null")
        return self.cfg['amp']

    def _preview_setup(self) -> Optional[Dict[str, torch.Tensor]]:
        """The fixed validation sample (full HR grid) whose prediction is shown in TensorBoard."""
        val_set = self.loaders.val_set
        if not self.info.is_main or val_set is None or not hasattr(val_set, 'full_grid'):
            return None
        sample = val_set.full_grid()[0]
        step = self.progress.epoch - 1
        self.monitor.image('preview/input', sample['inp'], step)
        self.monitor.image('preview/gt', gt_image(sample), step)
        return sample

    def _log_start(self, model: torch.nn.Module, resume: Optional[str], optimizer_changes: List[str]) -> None:
        info, cfg, loaders = self.info, self.cfg, self.loaders
        n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.log.info("run %s: %s x %d process(es), amp %s, %d loader workers each",
                      self.run_dir, info.device.type, info.world_size, self.amp or 'off', loaders.num_workers)
        self.log.info("model %s: %.3fM trainable parameters", cfg['model']['name'], n_params / 1e6)
        self.log.info("train: %d samples, %d steps of %d per process per epoch; val: %s samples",
                      len(loaders.train_set), loaders.steps_per_epoch(), loaders.batch_size,
                      len(loaders.val_set) if loaders.val_set is not None else 'no')
        if resume is not None:
            p = self.progress
            self.log.info("resumed from %s: epoch %d, step %d", resume, p.epoch, p.step)
            if optimizer_changes:
                self.log.info("optimizer settings of the config in force replace the checkpoint's: %s",
                              ', '.join(optimizer_changes))

    def _save(self, names: List[str]) -> None:
        """Write the checkpoint under each name (every rank calls this: RNG states are gathered)."""
        ckpt = state.checkpoint(self.model, self.optimizer, self.scheduler, self.scaler, self.progress,
                                self.cfg, self.name, self.info)
        if ckpt is not None:
            for n in names:
                state.write(ckpt, os.path.join(self.run_dir, n))

    def _any_rank(self, flag: bool) -> bool:
        return dist.all_reduce_sum([float(flag)], self.info)[0] > 0

    def _stop(self, reason: str) -> int:
        last = os.path.join(self.run_dir, 'epoch-last.pth')
        seconds = time.monotonic() - self.stopper.start
        self.log.info("stopped (%s) at epoch %d, step %d after %d steps in %.0f s; resume with --resume %s",
                      reason, self.progress.epoch, self.progress.step, self.progress.global_step - self._first_step,
                      seconds, last)
        self._check_replicas()
        return self.stopper.exit_code()

    def _check_replicas(self) -> None:
        """Every rank must hold the same weights; say so in the log (DDP only)."""
        if not self.info.distributed:
            return
        digests = dist.all_gather_objects(dist.weights_digest(self.model), self.info)
        if len(set(digests)) != 1:
            raise RuntimeError(f"replicas differ between ranks: {digests}")
        self.log.info("replicas identical on %d ranks: %s", self.info.world_size, digests[0])

    def _epoch(self) -> Tuple[Dict[str, Any], Optional[str], bool]:
        """Train (the rest of) one epoch, validate, save; (record, stop reason, complete)."""
        cfg, p = self.cfg, self.progress
        epoch, clock = p.epoch, timer()
        steps = self.loaders.steps_per_epoch()
        start_step, lr = p.step, current_lr(self.optimizer)
        outcome = train_epoch(self.model, self.loaders.train_epoch(epoch, p.step), self.optimizer, self.scaler,
                              self.norm, self.amp, self.info, p, steps, self.stopper, self.monitor,
                              lambda: p.global_step - self._first_step)
        if not outcome.complete:
            self._save(['epoch-last.pth'])
            return {}, outcome.stop_reason, False
        if self.scheduler is not None:
            self.scheduler.step()
        train_seconds = clock()
        record = {'epoch': epoch, 'train_loss': p.loss_sum / steps, 'lr': lr,
                  'steps_per_second': (steps - start_step) / max(train_seconds, 1e-9),
                  'data_wait_fraction': outcome.data_wait / max(train_seconds, 1e-9)}
        best = False
        if self.loaders.val is not None and epoch % cfg['epoch_val'] == 0:
            record.update(validate(self.model, self.loaders.val, self.norm, self.amp, self.info,
                                   cfg['val_dataset']['batch_size'], cfg['eval_type'], cfg['eval_bsize']))
            best = p.best_val_psnr is None or record['val_psnr'] > p.best_val_psnr
            if best:
                p.best_val_psnr = record['val_psnr']
            if self._preview_sample is not None:
                self.monitor.image('preview/pred', preview(self.model, self._preview_sample, self.norm,
                                                           self.amp, self.info.device), epoch)
        record['epoch_seconds'] = clock()
        if self.info.device.type == 'cuda':
            record['max_memory_gib'] = torch.cuda.max_memory_allocated(self.info.device) / 2 ** 30
        p.history.append(record)
        p.epoch, p.step, p.loss_sum = epoch + 1, 0, 0.0
        names = ['epoch-last.pth'] + (['epoch-best.pth'] if best else [])
        if cfg['epoch_save'] is not None and epoch % cfg['epoch_save'] == 0:
            names.append(f'epoch-{epoch}.pth')
        self._save(names)
        self.monitor.epoch(record)
        self._log_epoch(record, best)
        return record, outcome.stop_reason, True

    def _log_epoch(self, r: Dict[str, Any], best: bool) -> None:
        val = ''
        if 'val_psnr' in r:
            val = f"  val psnr {r['val_psnr']:.4f} dB l1 {r['val_loss']:.4f}{' (best)' if best else ''}"
        mem = f"  {r['max_memory_gib']:.2f} GiB" if 'max_memory_gib' in r else ''
        self.log.info("epoch %d/%d  train loss %.4f%s  lr %.3g  %.1f s  %.2f it/s (data wait %.0f%%)%s",
                      r['epoch'], self.cfg['epoch_max'], r['train_loss'], val, r['lr'], r['epoch_seconds'],
                      r['steps_per_second'], 100 * r['data_wait_fraction'], mem)

    def run(self) -> int:
        """The epoch loop; returns the process exit code."""
        self._first_step = self.progress.global_step
        self.stopper.install()
        try:
            if self.progress.epoch > self.cfg['epoch_max']:
                self.log.info("nothing to do: epoch %d of epoch_max %d is done", self.progress.epoch - 1,
                              self.cfg['epoch_max'])
                return 0
            while self.progress.epoch <= self.cfg['epoch_max']:
                _, reason, complete = self._epoch()
                if reason is None and self._any_rank(self.stopper.reason(
                        self.progress.global_step - self._first_step) is not None):
                    reason = self.stopper.reason(self.progress.global_step - self._first_step) or 'another rank'
                if reason is not None:
                    return self._stop(reason)
            self._check_replicas()
            self.log.info("done: %d epochs, best val psnr %s", self.cfg['epoch_max'],
                          'n/a' if self.progress.best_val_psnr is None else f"{self.progress.best_val_psnr:.4f} dB")
            return 0
        finally:
            self.stopper.uninstall()
            self.monitor.close()
