"""Video person re-identification (MODEL.TASK reid): ``train(cfg)`` and ``test(cfg)``, split
handling, feature extraction and CMC/mAP evaluation.

Training runs the one :class:`vidnl.engine.train.Trainer` with :class:`vidnl.engine.tasks.ReIDTask`:
P×K identity batches (RandomIdentitySampler), clips of REID.SEQ_LEN frames, REID.CE_WEIGHT ·
cross-entropy (MODEL.LABEL_SMOOTHING) + REID.TRIPLET_WEIGHT · batch-hard triplet
(REID.TRIPLET_MARGIN), vidnl's optimizer and LR schedule, atomic epoch / mid-epoch checkpoints
with auto-resume, CMC/mAP on the query/gallery split every TRAIN.EVAL_PERIOD epochs.

Test: every frame of every query and gallery tracklet in chunks of SEQ_LEN, chunk embeddings
averaged per tracklet, REID.DISTANCE ranking, CMC ranks REID.RANKS and mAP; results in
OUTPUT_DIR/reid_results_test.json and json_stats log lines. With REID.SPLIT_ID -1 (iLIDS-VID,
PRID) every split is trained in OUTPUT_DIR/split_XX and the test reports the mean over splits.

Precedence of initial weights (logged): a checkpoint of this run in OUTPUT_DIR/checkpoints
(auto-resume) > TRAIN.CHECKPOINT_FILE_PATH (whole model) > REID.PRETRAINED (backbone only).

Under torchrun (docs/distributed.md) training, validation and test give the metrics and (up to
float summation order) the weights of one process: each process takes a contiguous slice of
every global P×K batch, the triplet loss is taken over the gathered global batch, BN statistics
over the global batch, and query/gallery features are extracted on each process's shard of the
tracklets and gathered; rank 0 writes logs, checkpoints and results.
"""

from __future__ import annotations

import logging
import os
import sys
import time

import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..config import ConfigError
from ..data.datasets.reid import (FrameTransform, ReIDData, ReIDTestClips, Tracklet, build_reid_data,
                                  collate_reid_test, num_splits)
from ..models import build_model
from ..data.samplers import shard_indices
from ..models.weights import CheckpointError, load_weights
from .checkpoint import newest_run_checkpoint
from .output_dir import write_json_atomic
from .inference import build_inference_model
from .distributed import all_gather_objects, barrier, get_rank, get_world_size, init_distributed, is_main_process
from .logging import TensorBoardWriter, log_json_stats, setup_logging
from .reid_metrics import average_results, distance_matrix, evaluate_ranking
from .precision import amp_dtype_of, autocast_context
from .setup import get_device, seed_everything

logger = logging.getLogger(__name__)

RESULTS_FILE = "reid_results_test.json"


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


def log_data(data: ReIDData) -> None:
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
                     desc: str = "features", rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """One embedding per tracklet (N×D, float32, CPU): the mean of the embeddings of its
    SEQ_LEN-frame chunks. Chunks of consecutive tracklets are packed into forward passes of
    TEST.BATCH_SIZE clips; one tracklet is decoded at a time per loader worker.

    With ``world_size`` W > 1 (torchrun; every process calls this) process ``rank`` embeds the
    tracklets ``rank, rank + W, ...`` and the shards are gathered: every process returns all N
    embeddings in the order of ``tracklets``, each computed once (with the model in eval mode a
    tracklet's embedding does not depend on the other tracklets of its forward passes)."""
    if world_size > 1:
        mine = shard_indices(len(tracklets), rank, world_size)
        feats = extract_features(model, [tracklets[i] for i in mine], cfg, device, desc)
        parts = all_gather_objects((mine, feats))
        dim = max(f.shape[1] for _, f in parts)
        out = torch.zeros(len(tracklets), dim)
        for idx, f in parts:
            if idx:
                out[torch.tensor(idx)] = f
        return out if len(tracklets) else torch.zeros(0, 0)
    model.eval()
    ds = ReIDTestClips(tracklets, FrameTransform.from_cfg(cfg), cfg.REID.SEQ_LEN)
    loader = DataLoader(ds, batch_size=1, shuffle=False, collate_fn=collate_reid_test,
                        num_workers=cfg.DATA_LOADER.NUM_WORKERS,
                        pin_memory=cfg.DATA_LOADER.PIN_MEMORY and device.type == "cuda")
    step, amp = cfg.TEST.BATCH_SIZE, amp_dtype_of(cfg, device)
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


def evaluate_reid(model: nn.Module, data: ReIDData, cfg, device: torch.device, rank: int = 0,
                  world_size: int = 1) -> dict:
    """Query/gallery features (sharded over ``world_size`` processes and gathered, see
    :func:`extract_features`), distances (REID.DISTANCE) and CMC/mAP of one split; every process
    returns the metrics of the whole split."""
    start = time.time()
    qf = extract_features(model, data.query, cfg, device, "query", rank, world_size)
    gf = extract_features(model, data.gallery, cfg, device, "gallery", rank, world_size)
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


def metrics_line(res: dict, ranks) -> str:
    cmc = "  ".join(f"rank-{k} {res[f'rank{k}']:.2f}%" for k in ranks)
    return f"mAP {res['mAP']:.2f}%  {cmc}"


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------
def train(cfg) -> dict:
    """Train on REID.SPLIT_ID (or every split with -1; one process or each process of a torchrun
    launch) with the Trainer and :class:`vidnl.engine.tasks.ReIDTask`. Returns the last split's
    {"last_epoch", "last_eval", "best_rank1", "model"}, and with several splits {"splits": [...]}."""
    from .tasks import ReIDTask
    from .train import Trainer

    out = []
    for k in split_ids(cfg):
        c = split_cfg(cfg, k)
        out.append(Trainer(c, ReIDTask(c)).run())
    return out[0] if len(out) == 1 else {"splits": out}


# ------------------------------------------------------------------------------------------------
# Testing
# ------------------------------------------------------------------------------------------------
def _test_weights(cfg) -> str:
    if cfg.TEST.CHECKPOINT_FILE_PATH:
        return cfg.TEST.CHECKPOINT_FILE_PATH
    found = newest_run_checkpoint(cfg.OUTPUT_DIR)
    if not found:
        raise CheckpointError(f"no weights to test: TEST.CHECKPOINT_FILE_PATH is empty and {cfg.OUTPUT_DIR}/checkpoints "
                              f"has no checkpoint. Train first or set TEST.CHECKPOINT_FILE_PATH.")
    return found


def _write_json(path: str, obj: dict) -> None:
    write_json_atomic(path, obj)


def test_split(cfg, split_id: int | None = None) -> dict:
    """Test one split's newest checkpoint (or TEST.CHECKPOINT_FILE_PATH); writes
    OUTPUT_DIR/reid_results_test.json. Under torchrun every process embeds its shard of the
    tracklets and gets the whole split's metrics; rank 0 writes and logs."""
    init_distributed(use_cuda=cfg.NUM_GPUS > 0 and torch.cuda.is_available())
    rank, world, main = get_rank(), get_world_size(), is_main_process()
    if main:
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    setup_logging(cfg.OUTPUT_DIR if main else None, quiet=not main)
    seed_everything(cfg.RNG_SEED, cfg.NUM_THREADS)
    device = get_device(cfg)
    data = build_reid_data(cfg, split_id)
    log_data(data)
    model = build_reid_model(cfg, data.num_train_pids)
    path = _test_weights(cfg)
    logger.info("testing weights from %s", path)
    load_weights(model, path, fmt=cfg.MODEL.WEIGHTS_FORMAT, inflate=cfg.MODEL.INFLATE)
    model.to(device)
    res = evaluate_reid(build_inference_model(cfg, model), data, cfg, device, rank, world)
    ranks = list(cfg.REID.RANKS)
    out = {"dataset": data.name, "split_id": data.split_id, "checkpoint": path, "distance": cfg.REID.DISTANCE,
           **scalar_summary(res), "cmc": [float(c) for c in res["cmc"]], "skipped_queries": res["skipped_queries"],
           "data": data.summary()}
    out["results_file"] = os.path.join(cfg.OUTPUT_DIR, RESULTS_FILE)
    if main:
        _write_json(out["results_file"], out)
        log_json_stats({"_type": "test_reid", "dataset": data.name, "split_id": data.split_id, "world_size": world,
                        **scalar_summary(res)})
        tb = TensorBoardWriter(cfg.OUTPUT_DIR, cfg.TENSORBOARD.ENABLE)
        tb.add_scalars(scalar_summary(res), 0, "test_reid")
        tb.close()
        logger.info("%s split %d: %s on %d queries (%d skipped: no match in the other cameras); results in %s",
                    data.name, data.split_id, metrics_line(res, ranks), res["num_queries"],
                    res["num_skipped_queries"], out["results_file"])
    barrier()
    return out


def test(cfg) -> dict:
    """Test REID.SPLIT_ID, or every split and their mean with -1 (one process or each process of
    a torchrun launch). Returns the metrics and a "headline" such as
    "rank-1 85.20% mAP 78.10% on MARS (1980 queries)"."""
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
    res["headline"] = (f"rank-1 {res['rank1']:.2f}% mAP {res['mAP']:.2f}% on {res['dataset']} (mean of "
                       f"{len(per_split)} splits, {res['num_queries']} queries)")
    if is_main_process():
        _write_json(res["results_file"], {k: v for k, v in res.items() if k != "headline"})
        setup_logging(cfg.OUTPUT_DIR)
        log_json_stats({"_type": "test_reid_mean", **scalar_summary(res)})
        logger.info("%s: %s", res["dataset"], res["headline"])
    barrier()
    return res
