"""Video person re-identification engine (MODEL.TASK reid): ``train(cfg)`` and ``test(cfg)``.

Training: P×K identity batches (RandomIdentitySampler), clips of REID.SEQ_LEN frames,
REID.CE_WEIGHT · cross-entropy (MODEL.LABEL_SMOOTHING) + REID.TRIPLET_WEIGHT · batch-hard
triplet (REID.TRIPLET_MARGIN), vidnl's optimizer and LR schedule, atomic epoch / mid-epoch
checkpoints with auto-resume, CMC/mAP on the query/gallery split every TRAIN.EVAL_PERIOD epochs.

Test: every frame of every query and gallery tracklet in chunks of SEQ_LEN, chunk embeddings
averaged per tracklet, REID.DISTANCE ranking, CMC ranks REID.RANKS and mAP; results in
OUTPUT_DIR/reid_results_test.json and json_stats log lines. With REID.SPLIT_ID -1 (iLIDS-VID,
PRID) every split is trained in OUTPUT_DIR/split_XX and the test reports the mean over splits.

Precedence of initial weights (logged): a checkpoint of this run in OUTPUT_DIR/checkpoints
(auto-resume) > TRAIN.CHECKPOINT_FILE_PATH (whole model) > REID.PRETRAINED (backbone only).
One process only: a torchrun launch (WORLD_SIZE > 1) is refused.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..config import ConfigError
from ..data.datasets.reid import (FrameTransform, ReIDData, ReIDTestClips, ReIDTrainClips, Tracklet,
                                  build_reid_data, collate_reid_test, collate_reid_train, num_splits)
from ..data.reid_sampling import RandomIdentitySampler
from ..errors import DatasetError
from ..models import build_model
from ..models.weights import CheckpointError, load_weights
from .checkpoint import RunState, atomic_torch_save, find_resume_checkpoint, list_checkpoints, restore_run, save_checkpoint
from .logging import StepTimer, TensorBoardWriter, log_json_stats, log_run_header, memory_stats, setup_logging
from .losses import reid_loss
from .optim import build_optimizer, lr_at_epoch, optimization_step, set_lr
from .run_manifest import check_resume_config
from .reid_metrics import average_results, distance_matrix, evaluate_ranking
from .setup import autocast_context, get_device, seed_everything

logger = logging.getLogger(__name__)

RESULTS_FILE = "reid_results_test.json"



def _check_single_process() -> None:
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1:
        raise ConfigError(f"MODEL.TASK reid runs in a single process, but this was launched with WORLD_SIZE={world} "
                          f"(torchrun). Run tools/run_net.py directly with python.")


def split_ids(cfg) -> list[int]:
    """The splits a run covers: [REID.SPLIT_ID], or all of them when it is -1."""
    return list(range(num_splits(cfg))) if cfg.REID.SPLIT_ID == -1 else [cfg.REID.SPLIT_ID]


def split_cfg(cfg, split_id: int):
    """The config of one split: with REID.SPLIT_ID -1 its OUTPUT_DIR is OUTPUT_DIR/split_XX."""
    if cfg.REID.SPLIT_ID != -1:
        return cfg
    c = cfg.clone()
    c.defrost()
    c.OUTPUT_DIR = os.path.join(cfg.OUTPUT_DIR, f"split_{split_id:02d}")
    c.REID.SPLIT_ID = split_id
    c.freeze()
    return c


def build_reid_model(cfg, num_train_pids: int) -> nn.Module:
    """The configured MODEL.ARCH with one classifier output per training identity."""
    c = cfg.clone()
    c.defrost()
    c.MODEL.NUM_CLASSES = num_train_pids
    c.freeze()
    return build_model(c)


def _log_data(data: ReIDData) -> None:
    s = data.summary()
    logger.info("%s split %d/%d: train %d ids / %d tracklets, query %d ids / %d tracklets, gallery %d ids / %d "
                "tracklets", data.name, data.split_id, data.num_splits, s["train_ids"], s["train_tracklets"],
                s["query_ids"], s["query_tracklets"], s["gallery_ids"], s["gallery_tracklets"])
    log_json_stats({"_type": "reid_dataset", **s})


# ------------------------------------------------------------------------------------------------
# Features and evaluation
# ------------------------------------------------------------------------------------------------
@torch.no_grad()
def extract_features(model: nn.Module, tracklets: list[Tracklet], cfg, device: torch.device,
                     desc: str = "features") -> torch.Tensor:
    """One embedding per tracklet (N×D, float32, CPU): the mean of the embeddings of its
    SEQ_LEN-frame chunks. Chunks of consecutive tracklets are packed into forward passes of
    TEST.BATCH_SIZE clips; one tracklet is decoded at a time per loader worker."""
    model.eval()
    ds = ReIDTestClips(tracklets, FrameTransform.from_cfg(cfg), cfg.REID.SEQ_LEN)
    loader = DataLoader(ds, batch_size=1, shuffle=False, collate_fn=collate_reid_test,
                        num_workers=cfg.DATA_LOADER.NUM_WORKERS,
                        pin_memory=cfg.DATA_LOADER.PIN_MEMORY and device.type == "cuda")
    step, amp = cfg.TEST.BATCH_SIZE, cfg.TRAIN.MIXED_PRECISION
    normalize = ds.transform.normalizer
    sums: torch.Tensor | None = None
    counts = torch.zeros(len(ds))
    clips: list[torch.Tensor] = []
    owners: list[torch.Tensor] = []

    def forward(n: int) -> None:
        nonlocal sums, clips, owners
        x, own = torch.cat(clips), torch.cat(owners)
        for i in range(0, n, step):
            with autocast_context(device, amp):
                out = model(normalize(x[i:min(i + step, n)], device)).float().cpu()
            if sums is None:
                sums = torch.zeros(len(ds), out.shape[1])
            sums.index_add_(0, own[i:i + out.shape[0]], out)
        clips, owners = [x[n:]], [own[n:]]

    for batch in tqdm(loader, desc=desc, disable=not sys.stderr.isatty(), leave=False):
        clips.append(batch["inputs"])
        owners.append(torch.repeat_interleave(batch["indices"], torch.tensor(batch["chunks"])))
        counts[batch["indices"]] += torch.tensor(batch["chunks"], dtype=counts.dtype)
        pending = sum(c.shape[0] for c in clips)
        if pending >= step:
            forward(pending // step * step)
    if clips and sum(c.shape[0] for c in clips):
        forward(sum(c.shape[0] for c in clips))
    if sums is None:
        return torch.zeros(0, 0)
    return sums / counts[:, None]


def evaluate_reid(model: nn.Module, data: ReIDData, cfg, device: torch.device) -> dict:
    """Query/gallery features, distances (REID.DISTANCE) and CMC/mAP of one split."""
    start = time.time()
    qf = extract_features(model, data.query, cfg, device, "query")
    gf = extract_features(model, data.gallery, cfg, device, "gallery")
    feat_time = time.time() - start
    dist = distance_matrix(qf.double(), gf.double(), cfg.REID.DISTANCE)
    res = evaluate_ranking(dist, [t.pid for t in data.query], [t.pid for t in data.gallery],
                           [t.camid for t in data.query], [t.camid for t in data.gallery],
                           ranks=list(cfg.REID.RANKS), junk_pids=list(cfg.REID.JUNK_PIDS))
    res["feature_time_s"] = feat_time
    res["time_s"] = time.time() - start
    res["num_query_tracklets"], res["num_gallery_tracklets"] = len(data.query), len(data.gallery)
    res["feature_dim"] = int(qf.shape[1]) if qf.numel() else 0
    if res["num_skipped_queries"]:
        logger.warning("%d of %d queries have no true match in the gallery (other camera) and were skipped",
                       res["num_skipped_queries"], len(data.query))
    return res


def scalar_summary(res: dict) -> dict:
    """The scalar part of evaluation results (for logs and TensorBoard)."""
    return {k: v for k, v in res.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _metrics_line(res: dict, ranks) -> str:
    cmc = "  ".join(f"rank-{k} {res[f'rank{k}']:.2f}%" for k in ranks)
    return f"mAP {res['mAP']:.2f}%  {cmc}"


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------
class ReIDTrainer:
    """One training run on one split."""

    def __init__(self, cfg, data: ReIDData | None = None):
        self.cfg = cfg
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        with open(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), "w") as f:
            f.write(cfg.dump())
        setup_logging(cfg.OUTPUT_DIR)
        log_run_header(cfg)
        seed_everything(cfg.RNG_SEED, cfg.NUM_THREADS)
        self.device = get_device(cfg)
        self.data = data if data is not None else build_reid_data(cfg)
        _log_data(self.data)
        if self.data.num_train_pids < 2:
            raise DatasetError(f"{self.data.name}: {self.data.num_train_pids} training identities; re-ID training "
                               f"needs at least 2")
        self.model = build_reid_model(cfg, self.data.num_train_pids).to(self.device)
        self.optimizer = build_optimizer(cfg, self.model)
        self.amp = cfg.TRAIN.MIXED_PRECISION
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.device.type == "cuda")
        self.state = self._initial_state()
        r = cfg.REID
        self.sampler = RandomIdentitySampler([t.pid for t in self.data.train], cfg.TRAIN.BATCH_SIZE,
                                             r.NUM_INSTANCES, cfg.RNG_SEED)
        if self.sampler.num_steps() == 0:
            raise DatasetError(f"{self.data.name}: {self.data.num_train_pids} training identities give no full batch of "
                               f"TRAIN.BATCH_SIZE {cfg.TRAIN.BATCH_SIZE} / REID.NUM_INSTANCES {r.NUM_INSTANCES} = "
                               f"{self.sampler.p} identities")
        self.train_set = ReIDTrainClips(self.data.train, FrameTransform.from_cfg(cfg), r.SEQ_LEN, r.SAMPLE_MODE,
                                        r.RANDOM_FLIP, cfg.RNG_SEED)
        self.loader = DataLoader(self.train_set, batch_sampler=self.sampler, collate_fn=collate_reid_train,
                                 num_workers=cfg.DATA_LOADER.NUM_WORKERS,
                                 pin_memory=cfg.DATA_LOADER.PIN_MEMORY and self.device.type == "cuda")
        n_params = sum(p.numel() for p in self.model.parameters())
        logger.info("model %s (%.2fM parameters, embedding %d) on %s, nonlocal %s at %s; %d iterations/epoch of "
                    "%d identities x %d tracklets", cfg.MODEL.ARCH, n_params / 1e6, self.model.feature_dim,
                    self.device, cfg.NONLOCAL.TYPE, list(map(list, cfg.NONLOCAL.LOCATION)), self.sampler.num_steps(),
                    self.sampler.p, self.sampler.k)
        self.tb = TensorBoardWriter(cfg.OUTPUT_DIR, cfg.TENSORBOARD.ENABLE)

    def _initial_state(self) -> RunState:
        cfg = self.cfg
        found = find_resume_checkpoint(cfg.OUTPUT_DIR) if cfg.TRAIN.AUTO_RESUME else None
        if found is not None:
            path, ckpt = found
            if cfg.TRAIN.CHECKPOINT_FILE_PATH or cfg.REID.PRETRAINED:
                logger.info("auto-resume from %s wins over TRAIN.CHECKPOINT_FILE_PATH / REID.PRETRAINED (they only "
                            "initialise a new run)", path)
            check_resume_config(path, ckpt, cfg)
            return restore_run(path, ckpt, self.model, self.optimizer, self.scaler)
        if cfg.REID.PRETRAINED:
            self.model.load_backbone_weights(cfg.REID.PRETRAINED)
            logger.info("backbone initialised from REID.PRETRAINED=%s", cfg.REID.PRETRAINED)
        if cfg.TRAIN.CHECKPOINT_FILE_PATH:
            path = cfg.TRAIN.CHECKPOINT_FILE_PATH
            load_weights(self.model, path, fmt=cfg.MODEL.WEIGHTS_FORMAT, inflate=cfg.MODEL.INFLATE,
                         allow_shape_mismatch=cfg.TRAIN.CHECKPOINT_ALLOW_SHAPE_MISMATCH, skip=cfg.TRAIN.CHECKPOINT_SKIP)
            logger.info("initial weights from TRAIN.CHECKPOINT_FILE_PATH=%s", path)
        return RunState()

    def save(self, epoch: int, iteration: int = 0) -> None:
        path = save_checkpoint(self.cfg.OUTPUT_DIR, epoch, self.model, self.optimizer, self.cfg, self.state.best,
                               keep=self.cfg.TRAIN.KEEP_CHECKPOINTS, iteration=iteration, scaler=self.scaler)
        logger.info("saved %s", path)

    def train_epoch(self, epoch: int, start_iter: int) -> dict:
        cfg, r = self.cfg, self.cfg.REID
        self.model.train()
        if cfg.BN.FROZEN:
            for m in self.model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        iters = self.sampler.num_steps()
        self.train_set.set_epoch(epoch)
        self.sampler.set_epoch(epoch, start_step=start_iter)
        sums = {"loss": 0.0, "ce": 0.0, "triplet": 0.0}
        seen, hits, lr = 0, 0, lr_at_epoch(cfg, epoch + start_iter / iters)
        start = time.time()
        bar = tqdm(self.loader, desc=f"epoch {epoch + 1}/{cfg.SOLVER.MAX_EPOCH}", disable=not sys.stderr.isatty(),
                   leave=False, initial=start_iter, total=iters)
        timer = StepTimer()
        for it, batch in enumerate(bar, start=start_iter):
            timer.data_ready()
            lr = lr_at_epoch(cfg, epoch + it / iters)
            set_lr(self.optimizer, lr)
            x = self.train_set.transform.normalizer(batch["inputs"], self.device)
            y = batch["labels"].to(self.device, non_blocking=True)
            with autocast_context(self.device, self.amp):
                logits, feats = self.model(x)
            loss, parts = reid_loss(logits, feats.float(), y, ce_weight=r.CE_WEIGHT, triplet_weight=r.TRIPLET_WEIGHT,
                                    margin=r.TRIPLET_MARGIN, label_smoothing=cfg.MODEL.LABEL_SMOOTHING)
            optimization_step(loss, self.optimizer, self.scaler, self.model, cfg.TRAIN.CLIP_GRAD_NORM,
                              f"epoch {epoch + 1} iteration {it + 1}", cfg.SOLVER.BASE_LR)
            n = y.shape[0]
            timer.step_done()
            sums["loss"] += loss.item() * n
            sums["ce"] += parts["ce"] * n
            sums["triplet"] += parts["triplet"] * n
            hits += int((logits.detach().argmax(1) == y).sum())
            seen += n
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2g}")
            if (it + 1) % cfg.LOG_PERIOD == 0:
                steps_left = (cfg.SOLVER.MAX_EPOCH - epoch - 1) * iters + iters - it - 1
                log_json_stats({"_type": "train_iter", "epoch": epoch + 1, "iter": it + 1, "iters": iters,
                                "loss": loss.item(), **parts, "lr": lr, **timer.report(steps_left),
                                **memory_stats(self.device)})
                self.tb.add_scalars({"loss": loss.item(), **parts, "lr": lr}, epoch * iters + it, "train_iter")
            period = cfg.TRAIN.CHECKPOINT_PERIOD_ITERS
            if period and (it + 1) % period == 0 and it + 1 < iters:
                self.save(epoch, it + 1)
        elapsed = time.time() - start
        stats = {"_type": "train_epoch", "epoch": epoch + 1, "lr": lr, "clips": seen, "time_s": elapsed,
                 "clips_per_s": seen / max(elapsed, 1e-9), "id_top1_acc": 100.0 * hits / max(seen, 1),
                 **memory_stats(self.device)}
        stats.update({k: v / max(seen, 1) for k, v in sums.items()})
        return stats

    def validate(self, epoch: int) -> dict:
        cfg, state = self.cfg, self.state
        res = evaluate_reid(self.model, self.data, cfg, self.device)
        log_json_stats({"_type": "val_epoch", "epoch": epoch + 1, **scalar_summary(res)})
        self.tb.add_scalars(scalar_summary(res), epoch + 1, "val")
        if state.best is None or res["rank1"] > state.best:
            state.best = res["rank1"]
            atomic_torch_save({"epoch": epoch + 1, "model_state": self.model.state_dict(), "best_metric": state.best,
                               "cfg": cfg.dump()}, os.path.join(cfg.OUTPUT_DIR, "checkpoints", "checkpoint_best.pyth"))
        logger.info("epoch %d: %s on %d queries (best rank-1 %.2f%%)", epoch + 1,
                    _metrics_line(res, cfg.REID.RANKS), res["num_queries"], state.best)
        return res

    def run(self) -> dict:
        cfg, state = self.cfg, self.state
        last, last_eval = {}, None
        if state.epoch >= cfg.SOLVER.MAX_EPOCH:
            logger.info("all %d epochs already done", cfg.SOLVER.MAX_EPOCH)
        for epoch in range(state.epoch, cfg.SOLVER.MAX_EPOCH):
            start_iter = state.iteration if epoch == state.epoch else 0
            last = self.train_epoch(epoch, start_iter)
            log_json_stats(last)
            self.tb.add_scalars(last, epoch + 1, "train")
            is_last = epoch + 1 == cfg.SOLVER.MAX_EPOCH
            if cfg.TRAIN.EVAL_PERIOD > 0 and ((epoch + 1) % cfg.TRAIN.EVAL_PERIOD == 0 or is_last):
                last_eval = scalar_summary(self.validate(epoch))
            if (cfg.TRAIN.CHECKPOINT_PERIOD and (epoch + 1) % cfg.TRAIN.CHECKPOINT_PERIOD == 0) or is_last:
                self.save(epoch + 1)
        self.tb.close()
        return {"last_epoch": last, "last_eval": last_eval, "best_rank1": state.best, "model": self.model}


def train(cfg) -> dict:
    """Train on REID.SPLIT_ID (or every split with -1); returns the last split's summary, and
    with several splits {"splits": [...]}."""
    _check_single_process()
    ids = split_ids(cfg)
    out = [ReIDTrainer(split_cfg(cfg, k)).run() for k in ids]
    return out[0] if len(out) == 1 else {"splits": out}


# ------------------------------------------------------------------------------------------------
# Testing
# ------------------------------------------------------------------------------------------------
def _test_weights(cfg) -> str:
    if cfg.TEST.CHECKPOINT_FILE_PATH:
        return cfg.TEST.CHECKPOINT_FILE_PATH
    found = list_checkpoints(cfg.OUTPUT_DIR)
    if not found:
        raise CheckpointError(f"no weights to test: TEST.CHECKPOINT_FILE_PATH is empty and {cfg.OUTPUT_DIR}/checkpoints "
                              f"has no checkpoint. Train first or set TEST.CHECKPOINT_FILE_PATH.")
    return found[-1]


def _write_json(path: str, obj: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def test_split(cfg, split_id: int | None = None) -> dict:
    """Test one split's newest checkpoint (or TEST.CHECKPOINT_FILE_PATH); writes
    OUTPUT_DIR/reid_results_test.json."""
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    setup_logging(cfg.OUTPUT_DIR)
    seed_everything(cfg.RNG_SEED, cfg.NUM_THREADS)
    device = get_device(cfg)
    data = build_reid_data(cfg, split_id)
    _log_data(data)
    model = build_reid_model(cfg, data.num_train_pids)
    path = _test_weights(cfg)
    logger.info("testing weights from %s", path)
    load_weights(model, path, fmt=cfg.MODEL.WEIGHTS_FORMAT, inflate=cfg.MODEL.INFLATE)
    model.to(device)
    res = evaluate_reid(model, data, cfg, device)
    ranks = list(cfg.REID.RANKS)
    out = {"dataset": data.name, "split_id": data.split_id, "checkpoint": path, "distance": cfg.REID.DISTANCE,
           **scalar_summary(res), "cmc": [float(c) for c in res["cmc"]], "skipped_queries": res["skipped_queries"],
           "data": data.summary()}
    out["results_file"] = os.path.join(cfg.OUTPUT_DIR, RESULTS_FILE)
    _write_json(out["results_file"], out)
    log_json_stats({"_type": "test_reid", "dataset": data.name, "split_id": data.split_id, **scalar_summary(res)})
    tb = TensorBoardWriter(cfg.OUTPUT_DIR, cfg.TENSORBOARD.ENABLE)
    tb.add_scalars(scalar_summary(res), 0, "test_reid")
    tb.close()
    logger.info("%s split %d: %s on %d queries (%d skipped: no match in the other cameras); results in %s", data.name,
                data.split_id, _metrics_line(res, ranks), res["num_queries"], res["num_skipped_queries"],
                out["results_file"])
    return out


def test(cfg) -> dict:
    """Test REID.SPLIT_ID, or every split and their mean with -1. Returns the metrics and a
    "headline" such as "rank-1 85.20% mAP 78.10% on MARS (1980 queries)"."""
    _check_single_process()
    ids = split_ids(cfg)
    if len(ids) > 1 and cfg.TEST.CHECKPOINT_FILE_PATH:
        raise ConfigError("TEST.CHECKPOINT_FILE_PATH names one model, but REID.SPLIT_ID -1 tests every split with "
                          "its own model (OUTPUT_DIR/split_XX/checkpoints); leave it empty or choose one split.")
    per_split = [test_split(split_cfg(cfg, k), k) for k in ids]
    if len(per_split) == 1:
        res = per_split[0]
        res["headline"] = (f"rank-1 {res['rank1']:.2f}% mAP {res['mAP']:.2f}% on {res['dataset']} "
                           f"({res['num_queries']} queries)")
        return res
    ranks = list(cfg.REID.RANKS)
    res = {"dataset": per_split[0]["dataset"], **average_results(per_split, ranks), "splits": per_split}
    res["results_file"] = os.path.join(cfg.OUTPUT_DIR, RESULTS_FILE)
    _write_json(res["results_file"], res)
    setup_logging(cfg.OUTPUT_DIR)
    log_json_stats({"_type": "test_reid_mean", **scalar_summary(res)})
    res["headline"] = (f"rank-1 {res['rank1']:.2f}% mAP {res['mAP']:.2f}% on {res['dataset']} (mean of "
                       f"{len(per_split)} splits, {res['num_queries']} queries)")
    logger.info("%s: %s", res["dataset"], res["headline"])
    return res
