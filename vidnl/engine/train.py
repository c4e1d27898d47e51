"""The training loop: SGD/Adam(W) with a stateless LR schedule, periodic validation, atomic
checkpoints and auto-resume.

Resume precedence (logged at start): a checkpoint of this run in OUTPUT_DIR/checkpoints
(auto-resume, when TRAIN.AUTO_RESUME) wins over TRAIN.CHECKPOINT_FILE_PATH, which only
initialises the weights of a new run. Training clips depend only on (RNG_SEED, epoch, video
index) and the shuffling generator is reseeded every epoch, so a resumed run reproduces the
uninterrupted one exactly on the CPU.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from ..data.datasets import build_dataset
from ..data.loader import FailureLog, build_test_loader, build_train_loader
from ..models import build_model
from .checkpoint import (atomic_torch_save, extract_model_state, find_resume_checkpoint,
                         load_checkpoint_file, load_model_weights, save_checkpoint, set_rng_state, unwrap)
from .distributed import (GlobalBatchSampler, all_gather_objects, barrier, broadcast_object, get_rank,
                          get_world_size, init_distributed, is_main_process)
from .evaluate import evaluate, summary
from .logging import TensorBoardWriter, log_json_stats, setup_logging
from .metrics import topk_correct
from .optim import build_optimizer, lr_at_epoch, set_lr
from .setup import get_device, seed_everything

logger = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    pass


def _load_initial_state(cfg, model, optimizer) -> tuple[int, float | None]:
    """Apply auto-resume or TRAIN.CHECKPOINT_FILE_PATH. Returns (start_epoch, best_metric).
    Rank 0 chooses the checkpoint and every process loads that same file."""
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
        load_model_weights(model, extract_model_state(ckpt), source=path)
        if ckpt.get("optimizer_state") is not None:
            optimizer.load_state_dict(ckpt["optimizer_state"])
        if ckpt.get("rng") is not None:
            set_rng_state(ckpt["rng"])
        logger.info("resumed from %s: %d epochs done", path, ckpt["epoch"])
        return int(ckpt["epoch"]), ckpt.get("best_metric")
    if cfg.TRAIN.CHECKPOINT_FILE_PATH:
        path = cfg.TRAIN.CHECKPOINT_FILE_PATH
        ckpt = load_checkpoint_file(path)
        load_model_weights(model, extract_model_state(ckpt), source=path,
                           allow_shape_mismatch=cfg.TRAIN.CHECKPOINT_ALLOW_SHAPE_MISMATCH)
        logger.info("initial weights from TRAIN.CHECKPOINT_FILE_PATH=%s", path)
        if cfg.TRAIN.CHECKPOINT_LOAD_OPTIMIZER and ckpt.get("optimizer_state") is not None:
            optimizer.load_state_dict(ckpt["optimizer_state"])
            return int(ckpt.get("epoch", 0)), ckpt.get("best_metric")
    return 0, None


def set_train_mode(model: nn.Module, frozen_bn: bool) -> None:
    """model.train(), keeping BatchNorm layers in eval mode (running statistics) if frozen_bn."""
    model.train()
    if frozen_bn:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def train_epoch(cfg, model, loader, optimizer, device, epoch: int, failures: FailureLog,
                tb: TensorBoardWriter) -> dict:
    set_train_mode(model, cfg.BN.FROZEN)
    iters = len(loader)
    if iters == 0:
        raise RuntimeError(f"the training set gives no full batch of TRAIN.BATCH_SIZE={cfg.TRAIN.BATCH_SIZE}")
    loss_sum, seen, hits1 = 0.0, 0, 0
    start = time.time()
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.SOLVER.MAX_EPOCH}", disable=not sys.stderr.isatty(),
               leave=False)
    for it, batch in enumerate(bar):
        failures.add(batch["failures"])
        lr = lr_at_epoch(cfg, epoch + it / iters)
        set_lr(optimizer, lr)
        x = batch["inputs"].to(device, non_blocking=True)
        y = batch["labels"].to(device, non_blocking=True)
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=cfg.MODEL.LABEL_SMOOTHING)
        if not math.isfinite(loss.item()):
            raise TrainingDiverged(f"loss is {loss.item()} at epoch {epoch + 1} iteration {it + 1}; "
                                   f"lower SOLVER.BASE_LR (now {cfg.SOLVER.BASE_LR})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.TRAIN.CLIP_GRAD_NORM > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.TRAIN.CLIP_GRAD_NORM)
        optimizer.step()
        n = y.shape[0]
        loss_sum += loss.item() * n
        seen += n
        hits1 += topk_correct(logits.detach(), y, (1,))[1]
        bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2g}")
        if (it + 1) % cfg.LOG_PERIOD == 0:
            stats = {"_type": "train_iter", "epoch": epoch + 1, "iter": it + 1, "iters": iters,
                     "loss": loss.item(), "lr": lr}
            log_json_stats(stats)
            tb.add_scalars({"loss": loss.item(), "lr": lr}, epoch * iters + it, "train_iter")
    elapsed = time.time() - start
    return {"_type": "train_epoch", "epoch": epoch + 1, "loss": loss_sum / max(seen, 1),
            "top1_acc": 100.0 * hits1 / max(seen, 1), "lr": lr, "clips": seen, "time_s": elapsed,
            "clips_per_s": seen / max(elapsed, 1e-9)}


def train(cfg) -> dict:
    """Train per ``cfg`` (one process, or each process of a torchrun launch); returns the last
    epoch's stats and the best validation top-1."""
    init_distributed(use_cuda=cfg.NUM_GPUS > 0 and torch.cuda.is_available())
    rank, world, main = get_rank(), get_world_size(), is_main_process()
    if main:
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        with open(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), "w") as f:
            f.write(cfg.dump())
    setup_logging(cfg.OUTPUT_DIR if main else None, quiet=not main)
    if cfg.NUM_GPUS > 1 and world == 1:
        logger.warning("NUM_GPUS=%d but this is a single process: launch with torchrun --nproc_per_node %d "
                       "to use them all", cfg.NUM_GPUS, cfg.NUM_GPUS)
    seed_everything(cfg.RNG_SEED, cfg.NUM_THREADS)
    device = get_device(cfg)
    model = build_model(cfg).to(device)
    optimizer = build_optimizer(cfg, model)
    start_epoch, best = _load_initial_state(cfg, model, optimizer)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("model %s-R%d (%.2fM parameters) on %s x %d processes, nonlocal %s at %s", cfg.MODEL.ARCH,
                cfg.RESNET.DEPTH, n_params / 1e6, device, world, cfg.NONLOCAL.TYPE,
                list(map(list, cfg.NONLOCAL.LOCATION)))
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    train_set = build_dataset(cfg.TRAIN.DATASET, cfg, "train")
    sampler = GlobalBatchSampler(len(train_set), cfg.TRAIN.BATCH_SIZE, cfg.RNG_SEED, rank, world)
    loader = build_train_loader(cfg, train_set, sampler)
    val_loader = None
    if cfg.TRAIN.EVAL_PERIOD > 0:
        val_loader = build_test_loader(cfg, "val", single_view=True, rank=rank, world_size=world)
    logger.info("training on %d videos (%d iterations/epoch, global batch %d = %d x %d), validating on %s",
                len(train_set), len(loader), cfg.TRAIN.BATCH_SIZE, world, sampler.local,
                f"{len(val_loader.dataset)} videos" if val_loader else "nothing")
    failures = FailureLog()
    tb = TensorBoardWriter(cfg.OUTPUT_DIR, cfg.TENSORBOARD.ENABLE and main)
    last_stats: dict = {}
    if start_epoch >= cfg.SOLVER.MAX_EPOCH:
        logger.info("all %d epochs already done", cfg.SOLVER.MAX_EPOCH)
    for epoch in range(start_epoch, cfg.SOLVER.MAX_EPOCH):
        train_set.set_epoch(epoch)
        sampler.set_epoch(epoch)
        stats = train_epoch(cfg, model, loader, optimizer, device, epoch, failures, tb)
        stats.update(failures.end_epoch(epoch + 1))
        log_json_stats(stats)
        tb.add_scalars(stats, epoch + 1, "train")
        last_stats = stats
        is_last = epoch + 1 == cfg.SOLVER.MAX_EPOCH
        if val_loader is not None and ((epoch + 1) % cfg.TRAIN.EVAL_PERIOD == 0 or is_last):
            res = evaluate(model, val_loader, device, clips_per_forward=cfg.TEST.BATCH_SIZE, desc="val")
            val = {"_type": "val_epoch", "epoch": epoch + 1, **summary(res)}
            log_json_stats(val)
            tb.add_scalars(summary(res), epoch + 1, "val")
            if best is None or res["video_top1"] > best:
                best = res["video_top1"]
                if main:
                    atomic_torch_save({"epoch": epoch + 1, "model_state": unwrap(model).state_dict(),
                                       "best_metric": best, "cfg": cfg.dump()},
                                      os.path.join(cfg.OUTPUT_DIR, "checkpoints", "checkpoint_best.pyth"))
            logger.info("epoch %d: val top-1 %.2f%% (best %.2f%%)", epoch + 1, res["video_top1"], best)
        if (cfg.TRAIN.CHECKPOINT_PERIOD and (epoch + 1) % cfg.TRAIN.CHECKPOINT_PERIOD == 0) or is_last:
            if main:
                path = save_checkpoint(cfg.OUTPUT_DIR, epoch + 1, model, optimizer, cfg, best,
                                       keep=cfg.TRAIN.KEEP_CHECKPOINTS)
                logger.info("saved %s", path)
            barrier()
    tb.close()
    all_failures: dict = {}
    for part in all_gather_objects(failures.as_dict()):
        for path, info in part.items():
            entry = all_failures.setdefault(path, {"count": 0, "reason": info["reason"]})
            entry["count"] += info["count"]
    if all_failures and main:
        with open(os.path.join(cfg.OUTPUT_DIR, "decode_failures.json"), "w") as f:
            json.dump(all_failures, f, indent=1)
        logger.warning("%d videos could not be decoded during training; see %s", len(all_failures),
                       os.path.join(cfg.OUTPUT_DIR, "decode_failures.json"))
    return {"last_epoch": last_stats, "best_val_top1": best, "model": unwrap(model),
            "decode_failures": all_failures}
