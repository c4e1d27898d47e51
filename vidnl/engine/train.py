"""The training loop: SGD/Adam(W) with a stateless LR schedule, optional AMP, periodic
validation, atomic epoch and mid-epoch checkpoints, auto-resume, torchrun DDP.

Resume precedence (logged at start): a checkpoint of this run in OUTPUT_DIR/checkpoints
(auto-resume, when TRAIN.AUTO_RESUME) wins over TRAIN.CHECKPOINT_FILE_PATH, which only
initialises the weights of a new run.

Reproducibility: training clips depend only on (RNG_SEED, epoch, video index, retry), the order
only on (RNG_SEED, epoch), the data loaders draw from their own generators, and checkpoints hold
the global RNG states (dropout). A run killed at any point and resumed from its newest
checkpoint (epoch or mid-epoch) therefore ends with the same weights as an uninterrupted run on
the CPU.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from ..data.datasets import build_dataset, preflight_split
from ..data.decoding import resolve_backend
from ..data.loader import FailureLog, build_test_loader, build_train_loader
from ..config import ConfigError
from ..errors import DatasetError
from ..data.samplers import GlobalBatchSampler
from ..models import build_model
from ..models.weights import load_checkpoint_file, load_weights, unwrap
from .checkpoint import RunState, atomic_torch_save, find_resume_checkpoint, restore_run, save_checkpoint
from .distributed import (all_gather_objects, all_reduce_sum, barrier, broadcast_object, get_rank, get_world_size,
                          init_distributed, is_main_process)
from .evaluate import evaluate, metric_summary, summary
from .logging import StepTimer, TensorBoardWriter, log_json_stats, log_run_header, memory_stats, setup_logging
from .metrics import topk_correct
from .optim import build_optimizer, lr_at_epoch, optimization_step, set_lr
from .run_manifest import check_resume_config, write_manifest
from .setup import autocast_context, get_device, seed_everything
from .split_invariant import make_split_invariant, set_dropout_step

logger = logging.getLogger(__name__)


def _load_initial_state(cfg, model, optimizer, scaler) -> RunState:
    """Apply auto-resume or TRAIN.CHECKPOINT_FILE_PATH. Rank 0 chooses the checkpoint and every
    process loads that same file."""
    resume = None
    if cfg.TRAIN.AUTO_RESUME:
        found = find_resume_checkpoint(cfg.OUTPUT_DIR) if is_main_process() else None
        path = broadcast_object(found[0] if found else None)
        if path is not None:
            resume = (path, found[1] if is_main_process() else load_checkpoint_file(path))
    if resume is not None:
        path, ckpt = resume
        if cfg.TRAIN.CHECKPOINT_FILE_PATH:
            logger.info("auto-resume from %s wins over TRAIN.CHECKPOINT_FILE_PATH=%s (that file only "
                        "initialises a new run)", path, cfg.TRAIN.CHECKPOINT_FILE_PATH)
        check_resume_config(path, ckpt, cfg)
        return restore_run(path, ckpt, model, optimizer, scaler)
    if cfg.TRAIN.REQUIRE_CHECKPOINT_FILE and not cfg.TRAIN.CHECKPOINT_FILE_PATH:
        raise ConfigError(
            "TRAIN.CHECKPOINT_FILE_PATH is empty, but this config fine-tunes pretrained weights "
            "(TRAIN.REQUIRE_CHECKPOINT_FILE True): set TRAIN.CHECKPOINT_FILE_PATH to the pretrained checkpoint "
            "(docs/pretrained.md), or TRAIN.REQUIRE_CHECKPOINT_FILE False to train from random weights.")
    if cfg.TRAIN.CHECKPOINT_FILE_PATH:
        path = cfg.TRAIN.CHECKPOINT_FILE_PATH
        ckpt = load_checkpoint_file(path)
        load_weights(model, path, ckpt=ckpt, fmt=cfg.MODEL.WEIGHTS_FORMAT, inflate=cfg.MODEL.INFLATE,
                     allow_shape_mismatch=cfg.TRAIN.CHECKPOINT_ALLOW_SHAPE_MISMATCH, skip=cfg.TRAIN.CHECKPOINT_SKIP)
        logger.info("initial weights from TRAIN.CHECKPOINT_FILE_PATH=%s (no checkpoint of this run to resume)", path)
        if cfg.TRAIN.CHECKPOINT_LOAD_OPTIMIZER and ckpt.get("optimizer_state") is not None:
            optimizer.load_state_dict(ckpt["optimizer_state"])
            return RunState(int(ckpt.get("epoch", 0)), int(ckpt.get("iteration", 0)), ckpt.get("best_metric"))
    return RunState()


def set_train_mode(model: nn.Module, frozen_bn: bool) -> None:
    """model.train(), keeping BatchNorm layers in eval mode (running statistics) if frozen_bn."""
    model.train()
    if frozen_bn:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


class Trainer:
    """One training run (one process of it under torchrun)."""

    def __init__(self, cfg):
        self.cfg = cfg
        init_distributed(use_cuda=cfg.NUM_GPUS > 0 and torch.cuda.is_available())
        self.rank, self.world, self.main = get_rank(), get_world_size(), is_main_process()
        if self.main:
            os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
            with open(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), "w") as f:
                f.write(cfg.dump())
        setup_logging(cfg.OUTPUT_DIR if self.main else None, quiet=not self.main)
        log_run_header(cfg)
        if cfg.NUM_GPUS > 1 and self.world == 1:
            logger.warning("NUM_GPUS=%d but this is a single process: launch with torchrun --nproc_per_node %d "
                           "to use them all", cfg.NUM_GPUS, cfg.NUM_GPUS)
        seed_everything(cfg.RNG_SEED, cfg.NUM_THREADS)
        self.device = get_device(cfg)
        model = build_model(cfg)
        sync_bn = "none"
        if cfg.BN.NORM_TYPE != "batchnorm" and self.world > 1 and not cfg.BN.FROZEN:
            sync_bn = "cuda" if self.device.type == "cuda" else "global"
            logger.info("BN statistics over the global batch of all %d processes (%s)", self.world,
                        "nn.SyncBatchNorm" if sync_bn == "cuda" else "GlobalBatchNorm, all-reduce")
        model = make_split_invariant(model, seed=cfg.RNG_SEED, rank=self.rank, world=self.world, sync_bn=sync_bn)
        self.model = model.to(self.device)
        self.optimizer = build_optimizer(cfg, self.model)
        self.amp = cfg.TRAIN.MIXED_PRECISION
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.device.type == "cuda")
        self.state = _load_initial_state(cfg, self.model, self.optimizer, self.scaler)
        if self.main:
            write_manifest(cfg, self.model)
        n_params = sum(p.numel() for p in self.model.parameters())
        logger.info("model %s-R%d (%.2fM parameters) on %s x %d processes, nonlocal %s at %s", cfg.MODEL.ARCH,
                    cfg.RESNET.DEPTH, n_params / 1e6, self.device, self.world, cfg.NONLOCAL.TYPE,
                    list(map(list, cfg.NONLOCAL.LOCATION)))
        if self.world > 1:
            self.model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.eager_model = self.model  # what validation runs, and the fallback if compiling fails
        if cfg.TRAIN.COMPILE:
            logger.info("torch.compile (backend %s): the first training step compiles the model",
                        cfg.TRAIN.COMPILE_BACKEND)
            self.model = torch.compile(self.model, backend=cfg.TRAIN.COMPILE_BACKEND)
        self.train_set = build_dataset(cfg.TRAIN.DATASET, cfg, "train")
        logger.info("video decoding: %s (DATA.DECODING_BACKEND %s)", resolve_backend(cfg.DATA.DECODING_BACKEND),
                    cfg.DATA.DECODING_BACKEND)
        if cfg.TEST.ENABLE:
            preflight_split(cfg.TEST.DATASET, cfg, cfg.TEST.SPLIT)  # its CSV and labels, before any training
        self.sampler = GlobalBatchSampler(len(self.train_set), cfg.TRAIN.BATCH_SIZE, cfg.RNG_SEED, self.rank, self.world)
        self.loader = build_train_loader(cfg, self.train_set, self.sampler)
        self.val_loader = None
        if cfg.TRAIN.EVAL_PERIOD > 0:
            self.val_loader = build_test_loader(cfg, "val", single_view=True, rank=self.rank, world_size=self.world)
        logger.info("training on %d videos (%d iterations/epoch, global batch %d = %d x %d), validating on %s",
                    len(self.train_set), self.sampler.num_steps(), cfg.TRAIN.BATCH_SIZE, self.world,
                    self.sampler.local, f"{len(self.val_loader.dataset)} videos" if self.val_loader else "nothing")
        self.failures = FailureLog()
        self.tb = TensorBoardWriter(cfg.OUTPUT_DIR, cfg.TENSORBOARD.ENABLE and self.main)

    # -- checkpoints ----------------------------------------------------------------------------
    def save(self, epoch: int, iteration: int = 0) -> None:
        """Rank 0 writes; everyone waits so no process runs ahead of a checkpoint."""
        if self.main:
            path = save_checkpoint(self.cfg.OUTPUT_DIR, epoch, self.model, self.optimizer, self.cfg, self.state.best,
                                   keep=self.cfg.TRAIN.KEEP_CHECKPOINTS, iteration=iteration, scaler=self.scaler)
            logger.info("saved %s", path)
        barrier()

    # -- one epoch -------------------------------------------------------------------------------
    def train_epoch(self, epoch: int, start_iter: int) -> dict:
        cfg = self.cfg
        set_train_mode(self.model, cfg.BN.FROZEN)
        iters = self.sampler.num_steps()
        if iters == 0:
            raise DatasetError(f"the training set ({len(self.train_set)} videos) gives no full batch of "
                               f"TRAIN.BATCH_SIZE={cfg.TRAIN.BATCH_SIZE}")
        self.train_set.set_epoch(epoch)
        self.sampler.set_epoch(epoch, start_step=start_iter)
        loss_sum, seen, hits1, lr = 0.0, 0, 0, lr_at_epoch(cfg, epoch + start_iter / iters)
        start = time.time()
        period = {"loss": 0.0, "hits": 0, "clips": 0}
        timer = StepTimer()
        steps_left_after_epoch = (cfg.SOLVER.MAX_EPOCH - epoch - 1) * iters
        bar = tqdm(total=iters, initial=start_iter, desc=f"epoch {epoch + 1}/{cfg.SOLVER.MAX_EPOCH}",
                   disable=not sys.stderr.isatty(), leave=False)
        for it, batch in enumerate(self.loader, start=start_iter):
            timer.data_ready()
            self.failures.add(batch["failures"], batch.get("notes", ()))
            self.check_bad_fraction()
            lr = lr_at_epoch(cfg, epoch + it / iters)
            set_lr(self.optimizer, lr)
            set_dropout_step(self.model, epoch * iters + it)
            x = self.train_set.normalizer(batch["inputs"], self.device)
            y = batch["labels"].to(self.device, non_blocking=True)
            with autocast_context(self.device, self.amp):
                if getattr(unwrap(self.model), "uses_flow", False):  # MARS: CE + α · distillation
                    if "flow" not in batch:
                        raise DatasetError("MODEL.ARCH mars trains with optical flow: set DATA.FLOW_DIR")
                    logits, aux = self.forward(x, batch["flow"].to(self.device, non_blocking=True))
                else:
                    logits, aux = self.forward(x), 0.0
                loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.MODEL.LABEL_SMOOTHING) + aux
            optimization_step(loss, self.optimizer, self.scaler, self.model, cfg.TRAIN.CLIP_GRAD_NORM,
                              f"epoch {epoch + 1} iteration {it + 1}", cfg.SOLVER.BASE_LR)
            n, step_loss = y.shape[0], loss.item()
            hits = topk_correct(logits.detach().float(), y, (1,))[1]
            timer.step_done()
            loss_sum, seen, hits1 = loss_sum + step_loss * n, seen + n, hits1 + hits
            period["loss"], period["hits"], period["clips"] = (period["loss"] + step_loss * n,
                                                               period["hits"] + hits, period["clips"] + n)
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.3f}", lr=f"{lr:.2g}")
            if (it + 1) % cfg.LOG_PERIOD == 0:
                self.log_period(period, timer.report(steps_left_after_epoch + iters - it - 1), epoch, it, iters, lr)
            ckpt_period = cfg.TRAIN.CHECKPOINT_PERIOD_ITERS
            if ckpt_period and (it + 1) % ckpt_period == 0 and it + 1 < iters:
                self.save(epoch, it + 1)
        bar.close()
        elapsed = time.time() - start
        loss_sum, seen, hits1 = all_reduce_sum([loss_sum, seen, hits1], self.device)  # every process's shard
        top1 = 100.0 * hits1 / max(seen, 1)
        return {"_type": "train_epoch", "epoch": epoch + 1, "loss": loss_sum / max(seen, 1), "top1_acc": top1,
                "top1_err": 100.0 - top1, "lr": lr, "clips": int(seen), "time_s": elapsed,
                "clips_per_s": seen / max(elapsed, 1e-9), **memory_stats(self.device)}

    def forward(self, *inputs):
        """The model's forward; if the compiled model fails on its first call, log why and go on
        with the eager model."""
        if self.model is self.eager_model or getattr(self, "compiled_ok", False):
            return self.model(*inputs)
        try:
            out = self.model(*inputs)
        except Exception as e:  # noqa: BLE001 - any compiler failure falls back to eager mode
            logger.warning("TRAIN.COMPILE: compiling failed (%s: %s); training in eager mode",
                           type(e).__name__, str(e).splitlines()[0][:300] if str(e) else "")
            self.model = self.eager_model
            return self.model(*inputs)
        self.compiled_ok = True
        return out

    def log_period(self, period: dict, timing: dict, epoch: int, it: int, iters: int, lr: float) -> None:
        """One ``train_iter`` json_stats line for the iterations since the last one: loss and
        top-1 error over all processes, ``timing`` (StepTimer.report), memory. Resets ``period``."""
        loss, hits, clips = all_reduce_sum([period["loss"], period["hits"], period["clips"]], self.device)
        stats = {"_type": "train_iter", "epoch": epoch + 1, "iter": it + 1, "iters": iters,
                 "loss": loss / max(clips, 1), "top1_err": 100.0 * (1 - hits / max(clips, 1)), "lr": lr,
                 **timing, **memory_stats(self.device)}
        log_json_stats(stats)
        self.tb.add_scalars({"loss": stats["loss"], "lr": lr, "dt": timing["dt"]}, epoch * iters + it, "train_iter")
        period.update(loss=0.0, hits=0, clips=0)

    def check_bad_fraction(self) -> None:
        limit = self.cfg.DATA_LOADER.MAX_BAD_FRACTION
        bad = len(self.failures.bad_files)
        if bad > limit * len(self.train_set):
            listed = ", ".join(sorted(self.failures.bad_files)[:10])
            raise DatasetError(
                f"{bad} of {len(self.train_set)} training videos cannot be decoded, more than "
                f"DATA_LOADER.MAX_BAD_FRACTION={limit}: the dataset looks broken (e.g. {listed}). Check it with "
                f"its CSV, or raise the limit."
            )

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> dict:
        cfg, state = self.cfg, self.state
        last_stats: dict = {}
        if state.epoch >= cfg.SOLVER.MAX_EPOCH:
            logger.info("all %d epochs already done", cfg.SOLVER.MAX_EPOCH)
        for epoch in range(state.epoch, cfg.SOLVER.MAX_EPOCH):
            start_iter = state.iteration if epoch == state.epoch else 0
            stats = self.train_epoch(epoch, start_iter)
            stats.update(self.failures.end_epoch(epoch + 1))
            log_json_stats(stats)
            self.tb.add_scalars(stats, epoch + 1, "train")
            last_stats = stats
            is_last = epoch + 1 == cfg.SOLVER.MAX_EPOCH
            if self.val_loader is not None and ((epoch + 1) % cfg.TRAIN.EVAL_PERIOD == 0 or is_last):
                self.validate(epoch)
            if (cfg.TRAIN.CHECKPOINT_PERIOD and (epoch + 1) % cfg.TRAIN.CHECKPOINT_PERIOD == 0) or is_last:
                self.save(epoch + 1)
        self.tb.close()
        failures = self.gather_failures()
        return {"last_epoch": last_stats, "best_val_top1": state.best, "model": unwrap(self.model),
                "decode_failures": failures}

    def validate(self, epoch: int) -> None:
        cfg, state = self.cfg, self.state
        with autocast_context(self.device, self.amp):
            res = evaluate(self.eager_model, self.val_loader, self.device, clips_per_forward=cfg.TEST.BATCH_SIZE, desc="val")
        log_json_stats({"_type": "val_epoch", "epoch": epoch + 1, **summary(res)})
        self.tb.add_scalars(metric_summary(res), epoch + 1, "val")
        if state.best is None or res["video_top1"] > state.best:
            state.best = res["video_top1"]
            if self.main:
                atomic_torch_save({"epoch": epoch + 1, "model_state": unwrap(self.model).state_dict(),
                                   "best_metric": state.best, "cfg": cfg.dump()},
                                  os.path.join(cfg.OUTPUT_DIR, "checkpoints", "checkpoint_best.pyth"))
        logger.info("epoch %d: val top-1 %.2f%% (best %.2f%%)", epoch + 1, res["video_top1"], state.best)

    def gather_failures(self) -> dict:
        merged: dict = {}
        for part in all_gather_objects(self.failures.as_dict()):
            for path, info in part.items():
                entry = merged.setdefault(path, {"count": 0, "reason": info["reason"], "kind": info["kind"]})
                entry["count"] += info["count"]
        if self.main:  # always written (empty when every video was fine)
            out = os.path.join(self.cfg.OUTPUT_DIR, "decode_failures.json")
            with open(out, "w") as f:
                json.dump(merged, f, indent=1)
            if merged:
                logger.warning("%d training videos could not be decoded, were truncated or too short; see %s",
                               len(merged), out)
        return merged


def train(cfg) -> dict:
    """Train per ``cfg`` (one process, or each process of a torchrun launch); returns the last
    epoch's stats, the best validation top-1 and the decode failures."""
    return Trainer(cfg).run()
