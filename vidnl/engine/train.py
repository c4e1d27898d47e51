"""The one training loop of every task: SGD/Adam(W) with a stateless LR schedule, optional AMP,
periodic validation, atomic epoch and mid-epoch checkpoints, auto-resume, json_stats and
TensorBoard logging, split-invariant BN/dropout, torchrun DDP, TRAIN.COMPILE. What differs
between video classification, MARS distillation and video re-ID (data, batches, loss,
validation) comes from a :class:`vidnl.engine.tasks.Task`.

Resume precedence (logged at start): a checkpoint of this run in OUTPUT_DIR/checkpoints
(auto-resume, when TRAIN.AUTO_RESUME) wins over TRAIN.CHECKPOINT_FILE_PATH (and the task's own
initial weights such as REID.PRETRAINED), which only initialise the weights of a new run.

Reproducibility: training clips depend only on (RNG_SEED, epoch, video index, retry), the order
only on (RNG_SEED, epoch), the data loaders draw from their own generators, and checkpoints hold
the global RNG states (dropout). A run killed at any point and resumed from its newest
checkpoint (epoch or mid-epoch) therefore ends with the same weights as an uninterrupted run on
the CPU.
"""

from __future__ import annotations

import logging
import os
import sys
import time

import torch
import torch.nn as nn
from tqdm import tqdm

from ..data.loader import FailureLog
from ..config import ConfigError
from ..errors import DatasetError
from ..models.weights import load_checkpoint_file, load_weights, unwrap
from .checkpoint import (BEST_NAME, RunState, atomic_torch_save, claim_checkpoints, find_resume_checkpoint,
                         list_checkpoints, restore_run, save_checkpoint)
from .distributed import (all_gather_objects, all_reduce_sum, barrier, broadcast_object, get_rank, get_world_size,
                          init_distributed, is_main_process)
from .inference import build_inference_model
from .logging import StepTimer, TensorBoardWriter, log_json_stats, log_run_header, memory_stats, setup_logging
from .metrics import topk_correct
from .optim import (NonFiniteStep, PlateauSchedule, TrainingDiverged, build_optimizer, lr_at_epoch,
                    optimization_step, set_lr)
from .output_dir import write_json_atomic, write_text_atomic
from .run_manifest import check_resume_config, write_manifest
from .precision import amp_dtype_of, autocast_context, needs_grad_scaler
from .setup import get_device, seed_everything
from .split_invariant import make_split_invariant, set_dropout_step
from .tasks import Task, task_for

logger = logging.getLogger(__name__)


def _load_initial_state(cfg, model, optimizer, scaler, task: Task) -> RunState:
    """Apply auto-resume, or initialise a new run (the task's own initial weights, e.g.
    REID.PRETRAINED, then TRAIN.CHECKPOINT_FILE_PATH). Rank 0 chooses the checkpoint to resume
    and every process loads that same file."""
    resume = None
    if cfg.TRAIN.AUTO_RESUME:
        found = find_resume_checkpoint(cfg.OUTPUT_DIR) if is_main_process() else None
        path = broadcast_object(found[0] if found else None)
        if path is not None:
            resume = (path, found[1] if is_main_process() else load_checkpoint_file(path))
    if resume is not None:
        path, ckpt = resume
        named = [f"{k}={cfg_value(cfg, k)}" for k in task.init_keys if cfg_value(cfg, k)]
        if named:
            logger.info("auto-resume from %s wins over %s (they only initialise a new run)", path, ", ".join(named))
        check_resume_config(path, ckpt, cfg)
        return restore_run(path, ckpt, model, optimizer, scaler)
    if cfg.TRAIN.REQUIRE_CHECKPOINT_FILE and not cfg.TRAIN.CHECKPOINT_FILE_PATH:
        raise ConfigError(
            "TRAIN.CHECKPOINT_FILE_PATH is empty, but this config fine-tunes pretrained weights "
            "(TRAIN.REQUIRE_CHECKPOINT_FILE True): set TRAIN.CHECKPOINT_FILE_PATH to the pretrained checkpoint "
            "(docs/pretrained.md), or TRAIN.REQUIRE_CHECKPOINT_FILE False to train from random weights.")
    task.init_new_run(model)
    if cfg.TRAIN.CHECKPOINT_FILE_PATH:
        path = cfg.TRAIN.CHECKPOINT_FILE_PATH
        ckpt = load_checkpoint_file(path)
        load_weights(model, path, ckpt=ckpt, fmt=cfg.MODEL.WEIGHTS_FORMAT, inflate=cfg.MODEL.INFLATE,
                     allow_shape_mismatch=cfg.TRAIN.CHECKPOINT_ALLOW_SHAPE_MISMATCH, skip=cfg.TRAIN.CHECKPOINT_SKIP)
        logger.info("initial weights from TRAIN.CHECKPOINT_FILE_PATH=%s (no checkpoint of this run to resume)", path)
        if cfg.TRAIN.CHECKPOINT_LOAD_OPTIMIZER and ckpt.get("optimizer_state") is not None:
            optimizer.load_state_dict(ckpt["optimizer_state"])
            return RunState(int(ckpt.get("epoch", 0)), int(ckpt.get("iteration", 0)), ckpt.get("best_metric"),
                            scheduler=ckpt.get("lr_scheduler_state"))
    return RunState()


def cfg_value(cfg, key: str):
    """``cfg`` value of a dotted key such as ``"REID.PRETRAINED"``."""
    node = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def set_train_mode(model: nn.Module, frozen_bn: bool) -> None:
    """model.train(), keeping BatchNorm layers in eval mode (running statistics) if frozen_bn."""
    model.train()
    if frozen_bn:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


class Trainer:
    """One training run (one process of it under torchrun) of ``task`` (default: ``task_for(cfg)``)."""

    def __init__(self, cfg, task: Task | None = None):
        self.cfg = cfg
        self.task = task = task if task is not None else task_for(cfg)
        init_distributed(use_cuda=cfg.NUM_GPUS > 0 and torch.cuda.is_available())
        self.rank, self.world, self.main = get_rank(), get_world_size(), is_main_process()
        if self.main:
            os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        setup_logging(cfg.OUTPUT_DIR if self.main else None, quiet=not self.main)
        log_run_header(cfg)
        if cfg.NUM_GPUS > 1 and self.world == 1:
            logger.warning("NUM_GPUS=%d but this is a single process: launch with torchrun --nproc_per_node %d "
                           "to use them all", cfg.NUM_GPUS, cfg.NUM_GPUS)
        seed_everything(cfg.RNG_SEED, cfg.NUM_THREADS)
        self.device = get_device(cfg)
        task.prepare()
        model = task.build_model()
        sync_bn = "none"
        if cfg.BN.NORM_TYPE != "batchnorm" and self.world > 1 and not cfg.BN.FROZEN:
            sync_bn = "cuda" if self.device.type == "cuda" else "global"
            logger.info("BN statistics over the global batch of all %d processes (%s)", self.world,
                        "nn.SyncBatchNorm" if sync_bn == "cuda" else "GlobalBatchNorm, all-reduce")
        model = make_split_invariant(model, seed=cfg.RNG_SEED, rank=self.rank, world=self.world, sync_bn=sync_bn)
        self.model = model.to(self.device)
        self.optimizer = build_optimizer(cfg, self.model)
        self.amp = amp_dtype_of(cfg, self.device)  # the autocast dtype, or None
        if self.amp is not None:
            logger.info("mixed precision: %s autocast%s", str(self.amp).replace("torch.", ""),
                        " with a gradient scaler" if needs_grad_scaler(self.amp) else "")
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=needs_grad_scaler(self.amp))
        self.state = _load_initial_state(cfg, self.model, self.optimizer, self.scaler, task)
        self.plateau = self.build_plateau()
        # the run is accepted (a resumed checkpoint's config matched): only now change the folder
        self.state.run_id = broadcast_object(self.state.run_id)
        if self.main:
            claim_checkpoints(cfg.OUTPUT_DIR, self.state.run_id)
            write_text_atomic(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), cfg.dump())
            write_manifest(cfg, self.model)
        n_params = sum(p.numel() for p in self.model.parameters())
        logger.info("model %s-R%d (%.2fM parameters) on %s x %d processes, nonlocal %s at %s", cfg.MODEL.ARCH,
                    cfg.RESNET.DEPTH, n_params / 1e6, self.device, self.world, cfg.NONLOCAL.TYPE,
                    list(map(list, cfg.NONLOCAL.LOCATION)))
        if self.world > 1:
            self.model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.eager_model = self.model  # the fallback if compiling fails
        # What validation runs: the eager model, or with TEST.COMPILE the model compiled for
        # inference at the first validation (the graph reads the current weights every time).
        self.val_model = build_inference_model(cfg, unwrap(self.model)) if cfg.TEST.COMPILE else self.model
        if cfg.TRAIN.COMPILE:
            logger.info("torch.compile (backend %s): the first training step compiles the model",
                        cfg.TRAIN.COMPILE_BACKEND)
            self.model = torch.compile(self.model, backend=cfg.TRAIN.COMPILE_BACKEND)
        task.build_data(self.rank, self.world)
        self.train_set, self.sampler, self.loader = task.train_set, task.sampler, task.loader
        if self.plateau is not None and not task.has_validation:
            raise ConfigError("SOLVER.LR_POLICY plateau needs a validation metric, but this run validates nothing "
                              f"(TRAIN.EVAL_PERIOD {cfg.TRAIN.EVAL_PERIOD}): set TRAIN.EVAL_PERIOD >= 1 or choose "
                              "another SOLVER.LR_POLICY.")
        self.failures = FailureLog()
        self.tb = TensorBoardWriter(cfg.OUTPUT_DIR, cfg.TENSORBOARD.ENABLE and self.main)

    # -- checkpoints ----------------------------------------------------------------------------
    def build_plateau(self) -> PlateauSchedule | None:
        """SOLVER.LR_POLICY plateau's schedule, with the state of the checkpoint the run resumed
        (or continues with TRAIN.CHECKPOINT_LOAD_OPTIMIZER) if it holds one; None for the other
        policies (their lr is a function of the position)."""
        cfg = self.cfg
        if cfg.SOLVER.LR_POLICY != "plateau":
            return None
        plateau = PlateauSchedule.from_cfg(cfg)
        saved = self.state.scheduler
        if saved is not None and saved.get("policy") == "plateau":
            plateau.load_state_dict(saved)
            logger.info("plateau schedule restored: lr %g, best %g after %d validations, %d bad, cooldown %d",
                        plateau.lr, plateau.best, plateau.steps, plateau.num_bad, plateau.cooldown_counter)
        elif self.state.epoch > 0 or self.state.iteration > 0:
            logger.warning("the checkpoint this run continues holds no plateau schedule state: the plateau "
                           "schedule starts afresh at SOLVER.BASE_LR %g", cfg.SOLVER.BASE_LR)
        return plateau

    def save(self, epoch: int, iteration: int = 0) -> None:
        """Rank 0 writes; everyone waits so no process runs ahead of a checkpoint."""
        if self.main:
            path = save_checkpoint(self.cfg.OUTPUT_DIR, epoch, self.model, self.optimizer, self.cfg, self.state.best,
                                   keep=self.cfg.TRAIN.KEEP_CHECKPOINTS, iteration=iteration, scaler=self.scaler,
                                   run_id=self.state.run_id,
                                   scheduler_state=self.plateau.state_dict() if self.plateau is not None else None)
            logger.info("saved %s", path)
        barrier()

    # -- one epoch -------------------------------------------------------------------------------
    def train_epoch(self, epoch: int, start_iter: int) -> dict:
        """One epoch from iteration ``start_iter``. The logged loss, its parts and the training
        top-1 are summed over every process's share of the global batches (weighted by clips)."""
        cfg, task = self.cfg, self.task
        set_train_mode(self.model, cfg.BN.FROZEN)
        iters = task.num_steps()
        if iters == 0:
            raise DatasetError(task.no_full_batch())
        task.set_epoch(epoch, start_iter)
        names = ("loss",) + task.loss_parts
        epoch_sums = dict.fromkeys(names + ("hits", "clips"), 0.0)
        period = dict.fromkeys(names + ("hits", "clips"), 0.0)
        lr = lr_at_epoch(cfg, epoch + start_iter / iters, self.plateau)
        start = time.time()
        timer = StepTimer()
        steps_left_after_epoch = (cfg.SOLVER.MAX_EPOCH - epoch - 1) * iters
        bar = tqdm(total=iters, initial=start_iter, desc=f"epoch {epoch + 1}/{cfg.SOLVER.MAX_EPOCH}",
                   disable=not sys.stderr.isatty(), leave=False)
        for it, batch in enumerate(self.loader, start=start_iter):
            timer.data_ready()
            if task.decodes_videos:
                self.failures.add(batch["failures"], batch.get("notes", ()))
                self.check_bad_fraction()
            lr = lr_at_epoch(cfg, epoch + it / iters, self.plateau)
            set_lr(self.optimizer, lr)
            set_dropout_step(self.model, epoch * iters + it)
            inputs, y = task.inputs(batch, self.device)
            with autocast_context(self.device, self.amp):
                outputs = self.forward(*inputs)
            loss, logits, parts = task.loss(outputs, y)
            try:
                optimization_step(loss, self.optimizer, self.scaler, self.model, cfg.TRAIN.CLIP_GRAD_NORM)
            except NonFiniteStep as e:
                raise self.diverged(e, epoch, it, iters, lr) from None
            n, step_loss = y.shape[0], loss.item()
            hits = topk_correct(logits.detach().float(), y, (1,))[1]
            timer.step_done()
            values = {"loss": step_loss, **parts}
            for sums in (epoch_sums, period):
                for k in names:
                    sums[k] += values[k] * n
                sums["hits"] += hits
                sums["clips"] += n
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.3f}", lr=f"{lr:.2g}")
            if (it + 1) % cfg.LOG_PERIOD == 0:
                self.log_period(period, timer.report(steps_left_after_epoch + iters - it - 1), epoch, it, iters, lr)
            ckpt_period = cfg.TRAIN.CHECKPOINT_PERIOD_ITERS
            if ckpt_period and (it + 1) % ckpt_period == 0 and it + 1 < iters:
                self.save(epoch, it + 1)
        bar.close()
        elapsed = time.time() - start
        totals = self.reduce(epoch_sums)  # every process's shard
        seen = totals["clips"]
        top1 = 100.0 * totals["hits"] / max(seen, 1)
        acc = task.acc_name
        return {"_type": "train_epoch", "epoch": epoch + 1, **{k: totals[k] / max(seen, 1) for k in names},
                f"{acc}_acc": top1, f"{acc}_err": 100.0 - top1, "lr": lr, "clips": int(seen), "time_s": elapsed,
                "clips_per_s": seen / max(elapsed, 1e-9), **memory_stats(self.device)}

    def diverged(self, e: NonFiniteStep, epoch: int, it: int, iters: int, lr: float) -> TrainingDiverged:
        """The user's message for a step whose loss or gradient norm was not finite (the weights
        were left as they were; nothing is saved after the last good checkpoint)."""
        cfg = self.cfg
        kept = list_checkpoints(cfg.OUTPUT_DIR)
        last = f"the last good checkpoint {kept[-1]}" if kept else "the start (no checkpoint was written yet)"
        msg = (f"training diverged: {e.what} is {e.value} at epoch {epoch + 1} iteration {it + 1} (step "
               f"{epoch * iters + it + 1}, learning rate {lr:.4g}); the weights of that step were not applied. ")
        if self.amp is not None:
            msg += (f"The run is in mixed precision ({str(self.amp).replace('torch.', '')}): the same command with "
                    f"TRAIN.MIXED_PRECISION False resumes from {last} in float32. Otherwise: ")
        msg += f"lower SOLVER.BASE_LR (now {cfg.SOLVER.BASE_LR:g})"
        if cfg.TRAIN.CLIP_GRAD_NORM <= 0:
            msg += " or set TRAIN.CLIP_GRAD_NORM (e.g. 1.0)"
        msg += " with a new OUTPUT_DIR"
        if kept:
            msg += f" (TRAIN.CHECKPOINT_FILE_PATH {kept[-1]} starts it from the last good weights)"
        return TrainingDiverged(msg + ".")

    def reduce(self, sums: dict) -> dict:
        """``sums`` summed over all processes (same keys, same order on every process)."""
        return dict(zip(sums, all_reduce_sum(list(sums.values()), self.device)))

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
        """One ``train_iter`` json_stats line for the iterations since the last one: the loss, its
        parts and the top-1 error over all processes, ``timing`` (StepTimer.report), memory.
        Resets ``period``."""
        totals = self.reduce(period)
        clips = max(totals["clips"], 1)
        names = ("loss",) + self.task.loss_parts
        stats = {"_type": "train_iter", "epoch": epoch + 1, "iter": it + 1, "iters": iters,
                 **{k: totals[k] / clips for k in names}, f"{self.task.acc_name}_err": 100.0 * (1 - totals["hits"] / clips),
                 "lr": lr, **timing, **memory_stats(self.device)}
        log_json_stats(stats)
        self.tb.add_scalars({**{k: stats[k] for k in names}, "lr": lr, "dt": timing["dt"]}, epoch * iters + it,
                            "train_iter")
        for k in period:
            period[k] = 0.0

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
        """Train the remaining epochs; returns {"last_epoch": stats, "last_eval": the last
        validation's scalars (or None), <task.best_key>: the best validation metric, "model"} and,
        for video tasks, "decode_failures"."""
        cfg, state = self.cfg, self.state
        last_stats: dict = {}
        last_eval = None
        if state.epoch >= cfg.SOLVER.MAX_EPOCH:
            logger.info("all %d epochs already done", cfg.SOLVER.MAX_EPOCH)
        for epoch in range(state.epoch, cfg.SOLVER.MAX_EPOCH):
            start_iter = state.iteration if epoch == state.epoch else 0
            stats = self.train_epoch(epoch, start_iter)
            if self.task.decodes_videos:
                stats.update(self.failures.end_epoch(epoch + 1))
            log_json_stats(stats)
            self.tb.add_scalars(stats, epoch + 1, "train")
            last_stats = stats
            is_last = epoch + 1 == cfg.SOLVER.MAX_EPOCH
            if self.task.has_validation and ((periodic := (epoch + 1) % cfg.TRAIN.EVAL_PERIOD == 0) or is_last):
                last_eval = self.validate(epoch, step_schedule=periodic)
            if (cfg.TRAIN.CHECKPOINT_PERIOD and (epoch + 1) % cfg.TRAIN.CHECKPOINT_PERIOD == 0) or is_last:
                self.save(epoch + 1)
        self.tb.close()
        out = {"last_epoch": last_stats, "last_eval": last_eval, self.task.best_key: state.best,
               "model": unwrap(self.model)}
        if self.task.decodes_videos:
            out["decode_failures"] = self.gather_failures()
        return out

    def validate(self, epoch: int, step_schedule: bool = True) -> dict:
        """The task's validation (every process takes part); rank 0 keeps checkpoint_best.pyth.
        With ``step_schedule`` (a periodic validation, not the extra one after the last epoch, so
        that extending a run's MAX_EPOCH keeps its schedule) the plateau schedule steps on the
        metric. Returns the logged scalars."""
        cfg, state = self.cfg, self.state
        res, metric, logged, scalars = self.task.validate(self.val_model, self.device, self.amp)
        if self.plateau is not None and step_schedule:
            # every process computes the metric of the whole split; rank 0's value makes the
            # schedules of all processes identical by construction
            value = float(broadcast_object(float(metric)))
            old_lr = self.plateau.lr
            if self.plateau.step(value):
                logger.info("plateau: %d validation(s) in a row without improving on the best %.4g by more than "
                            "SOLVER.PLATEAU_THRESHOLD (this one %.4g): lr %g -> %g", cfg.SOLVER.PLATEAU_PATIENCE + 1,
                            self.plateau.best, value, old_lr, self.plateau.lr)
        log_json_stats({"_type": "val_epoch", "epoch": epoch + 1, **logged})
        self.tb.add_scalars(scalars, epoch + 1, "val")
        if state.best is None or metric > state.best:
            state.best = metric
            if self.main:
                atomic_torch_save({"epoch": epoch + 1, "model_state": unwrap(self.model).state_dict(),
                                   "best_metric": state.best, "cfg": cfg.dump(), "run_id": state.run_id},
                                  os.path.join(cfg.OUTPUT_DIR, "checkpoints", BEST_NAME))
        logger.info("%s", self.task.val_line(epoch, res, state.best))
        return scalars

    def gather_failures(self) -> dict:
        merged: dict = {}
        for part in all_gather_objects(self.failures.as_dict()):
            for path, info in part.items():
                entry = merged.setdefault(path, {"count": 0, "reason": info["reason"], "kind": info["kind"]})
                entry["count"] += info["count"]
        if self.main:  # always written (empty when every video was fine)
            out = os.path.join(self.cfg.OUTPUT_DIR, "decode_failures.json")
            write_json_atomic(out, merged)
            if merged:
                logger.warning("%d training videos could not be decoded, were truncated or too short; see %s",
                               len(merged), out)
        return merged


def train(cfg) -> dict:
    """Train per ``cfg`` (one process, or each process of a torchrun launch); returns the last
    epoch's stats, the best validation top-1 and the decode failures."""
    return Trainer(cfg).run()
