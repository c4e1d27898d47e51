"""Multi-view evaluation: every video's K temporal clips × S spatial crops are scored and the
scores aggregated per video (sum of softmax, as in Wang et al. 2018 (NL), §4.1, and mean of logits).

Videos that cannot be decoded are excluded from every metric and listed in the results.
Results carry the class names (``classes``; from the dataset or ``DATA.PATH_TO_DATA_DIR/classes.txt``,
else the indices as strings), per-class top-1 (``per_class``) and the confusion matrix
(``confusion_matrix``, rows = true class, columns = predicted class). Top-5 keys
(``video_top5``, ``clip_top5``, ...) are ``null`` when there are 5 classes or fewer: top-5 is then
100 % by construction.
"""

from __future__ import annotations

import logging
import os
import sys
import time

import torch
import torch.nn as nn
from tqdm import tqdm

from ..data.loader import build_test_loader
from ..errors import DatasetError
from ..models.weights import CheckpointError, load_weights
from .checkpoint import newest_run_checkpoint
from .output_dir import write_json_atomic
from .logging import TensorBoardWriter, log_json_stats, log_run_header, setup_logging
from .meters import ENSEMBLE_METHODS, MultiViewMeter
from .metrics import confusion_matrix, per_class_accuracy, topk_reported
from .inference import build_inference_model
from .distributed import all_gather_objects, get_rank, get_world_size, init_distributed, is_main_process
from .setup import get_device, seed_everything

logger = logging.getLogger(__name__)


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, *, clips_per_forward: int = 16,
             ensemble: str = "sum_softmax", desc: str = "test", class_names: list[str] | None = None) -> dict:
    """Score all videos of ``loader`` (a test loader of whole videos, possibly this process's
    shard). Results are gathered over all processes, so every process returns the metrics of
    the whole split, each video counted once.

    Returns clip-level and video-level top-1/top-5 (in %; top-5 ``None`` with 5 classes or
    fewer), per-video predictions (with ``label_name`` / ``pred_name``), ``classes`` (K names:
    ``class_names`` if it has one per model output, else ``"0".."K-1"``), ``per_class`` top-1,
    the K×K ``confusion_matrix`` (rows = true class) and the list of videos that could not be
    decoded.
    """
    start = time.time()
    shard = score_views(model, loader, device, clips_per_forward, desc)
    gathered = all_gather_objects(shard)
    meter = MultiViewMeter.merged([g[0] for g in gathered])
    failed = sorted((f for g in gathered for f in g[1]), key=lambda f: f["index"])
    truncated = sorted((n for g in gathered for n in g[2]), key=lambda n: n["path"])
    return format_results(meter, loader.dataset, ensemble, class_names, failed, truncated, time.time() - start)


def score_views(model: nn.Module, loader, device: torch.device, clips_per_forward: int = 16,
                desc: str = "test") -> tuple[MultiViewMeter, list[dict], list[dict]]:
    """The inference loop: every view of every video of ``loader`` through ``model`` in forward
    passes of ``clips_per_forward`` clips, into a ``MultiViewMeter``. Returns (meter, videos
    that could not be decoded, decoding notes such as truncation), for this process's shard."""
    model.eval()
    dataset = loader.dataset
    normalize = dataset.normalizer
    meter, failed, notes = MultiViewMeter(), [], []
    for batch in tqdm(loader, desc=desc, disable=not sys.stderr.isatty(), leave=False):
        for path, reason in batch["failures"]:
            logger.warning("%s: cannot decode %s: %s (excluded from the metrics)", desc, path, reason)
        for path, reason in batch.get("notes", ()):
            logger.warning("%s: %s: %s", desc, path, reason)
            notes.append({"path": path, "reason": reason})
        failed.extend({"index": i, "path": dataset.records[i].path, "reason": r}
                      for i, (_, r) in zip(batch["failed_indices"], batch["failures"]))
        if batch["inputs"] is None:
            continue
        inputs = batch["inputs"]
        logits = torch.cat([model(normalize(inputs[i:i + clips_per_forward], device)).float().cpu()
                            for i in range(0, inputs.shape[0], clips_per_forward)])
        meter.add(logits, batch["labels"], list(batch["views"]), batch["indices"].tolist())
    return meter, failed, notes


def format_results(meter: MultiViewMeter, dataset, ensemble: str, class_names: list[str] | None,
                   failed: list[dict], truncated: list[dict], time_s: float) -> dict:
    """The results dictionary of a whole split (what predictions_<split>.json holds)."""
    videos = meter.videos
    labels = meter.labels
    num_classes = int(videos[0][ensemble].shape[0]) if videos else len(class_names or ())
    names = _names(class_names, num_classes)
    top5 = topk_reported(num_classes, 5)
    results = {"split_videos": len(dataset), "num_videos": len(videos), "num_failed": len(failed),
               "num_clips": meter.num_clips, "views_per_video": dataset.views_per_video,
               "clip_top1": meter.clip_accuracy(1), "clip_top5": meter.clip_accuracy(5) if top5 else None,
               "ensemble": ensemble, "time_s": time_s}
    for method in ENSEMBLE_METHODS:
        results[f"video_top1_{method}"] = meter.video_accuracy(method, 1)
        results[f"video_top5_{method}"] = meter.video_accuracy(method, 5) if top5 else None
    results["video_top1"] = results[f"video_top1_{ensemble}"]
    results["video_top5"] = results[f"video_top5_{ensemble}"]
    results["num_classes"] = num_classes
    preds = [int(v[ensemble].argmax()) for v in videos]
    confusion = confusion_matrix(torch.tensor(preds, dtype=torch.long), labels, num_classes)
    results["classes"] = names
    results["per_class"] = per_class_accuracy(confusion, names)
    results["confusion_matrix"] = confusion.tolist()
    results["predictions"] = [
        {"index": v["index"], "path": dataset.records[v["index"]].path, "label": v["label"],
         "label_name": names[v["label"]], "pred": p, "pred_name": names[p],
         "scores": [round(float(x), 6) for x in v[ensemble]]}
        for v, p in zip(videos, preds)
    ]
    results["failed_videos"] = failed
    results["truncated_videos"] = truncated
    return results


def _names(class_names: list[str] | None, num_classes: int) -> list[str]:
    """``class_names`` if it names every one of the ``num_classes`` outputs, else the indices."""
    if class_names and len(class_names) == num_classes:
        return [str(n) for n in class_names]
    if class_names:
        logger.warning("%d class names for a model of %d outputs: classes are named by their index",
                       len(class_names), num_classes)
    return [str(i) for i in range(num_classes)]


def dataset_class_names(dataset, data_dir: str) -> tuple[list[str] | None, str]:
    """Class names of a test dataset and where they come from: the dataset's own
    (``class_names`` of the image datasets), else ``data_dir/classes.txt`` (``index name`` lines
    or one name per line, read as every class list is: :func:`vidnl.data.class_names.read_class_names`), else ``(None, "index")``. A
    malformed classes.txt is a warning (the names are then the indices), not an error."""
    from ..data.datasets.ucf101 import read_classes

    names = list(getattr(getattr(dataset, "cfg", None), "class_names", None) or [])
    if names:
        return names, "dataset"
    path = os.path.join(data_dir, "classes.txt") if data_dir else ""
    if path and os.path.isfile(path):
        try:
            return read_classes(path), path
        except (DatasetError, OSError, UnicodeDecodeError) as e:
            logger.warning("class names not read (%s); classes are named by their index", e)
    return None, "index"


def summary(results: dict) -> dict:
    """The scalar part of evaluation results (for json_stats; ``None`` values are left out, and
    the class bookkeeping ``num_classes`` / ``classes_source``, which the predictions file has)."""
    return {k: v for k, v in results.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)
            and k not in ("num_classes", "classes_source")}


def metric_summary(results: dict) -> dict:
    """The accuracy metrics only (``clip_top*``, ``video_top*``): what TensorBoard should get,
    without counts such as ``num_videos`` or ``time_s``."""
    return {k: v for k, v in summary(results).items()
            if k.startswith(("clip_top", "video_top")) and not isinstance(v, str)}


def resolve_test_checkpoint(cfg) -> str | None:
    if cfg.TEST.CHECKPOINT_FILE_PATH:
        return cfg.TEST.CHECKPOINT_FILE_PATH
    return newest_run_checkpoint(cfg.OUTPUT_DIR)


def test(cfg, model: nn.Module | None = None) -> dict:
    """Multi-view test of ``cfg.TEST.SPLIT``; writes ``OUTPUT_DIR/predictions_<split>.json``."""
    from ..models import build_model

    init_distributed(use_cuda=cfg.NUM_GPUS > 0 and torch.cuda.is_available())
    device = get_device(cfg)
    main = is_main_process()
    if main:
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    setup_logging(cfg.OUTPUT_DIR if main else None, quiet=not main)
    log_run_header(cfg)
    seed_everything(cfg.RNG_SEED, cfg.NUM_THREADS)
    if model is None:
        model = build_model(cfg)
        path = resolve_test_checkpoint(cfg)
        if path is None:
            raise CheckpointError(
                f"no weights to test: TEST.CHECKPOINT_FILE_PATH is empty and {cfg.OUTPUT_DIR}/checkpoints "
                f"has no checkpoint. Train first or set TEST.CHECKPOINT_FILE_PATH."
            )
        logger.info("testing weights from %s", path)
        load_weights(model, path, fmt=cfg.MODEL.WEIGHTS_FORMAT, inflate=cfg.MODEL.INFLATE)
    model.to(device)
    split = cfg.TEST.SPLIT
    loader = build_test_loader(cfg, split, rank=get_rank(), world_size=get_world_size())
    logger.info("test on %s.csv: %d videos x %d views (%d clips x %d crops), decoded once per video",
                split, len(loader.dataset), loader.dataset.views_per_video, cfg.TEST.NUM_ENSEMBLE_VIEWS,
                cfg.TEST.NUM_SPATIAL_CROPS)
    names, names_source = dataset_class_names(loader.dataset, cfg.DATA.PATH_TO_DATA_DIR)
    results = evaluate(build_inference_model(cfg, model), loader, device, clips_per_forward=cfg.TEST.BATCH_SIZE,
                       ensemble=cfg.TEST.ENSEMBLE_METHOD, desc=f"test/{split}", class_names=names)
    out = os.path.join(cfg.OUTPUT_DIR, f"predictions_{split}.json")
    results["predictions_file"] = out
    results["classes_source"] = names_source if results["classes"] == names else "index"
    if not main:
        return results
    write_json_atomic(out, results)
    log_json_stats({"_type": f"test_{split}", "world_size": get_world_size(), **summary(results)})
    tb = TensorBoardWriter(cfg.OUTPUT_DIR, cfg.TENSORBOARD.ENABLE)
    tb.add_scalars(metric_summary(results), 0, f"test_{split}")
    tb.close()
    top5 = results["video_top5"]
    logger.info(
        "%s: video top-1 %.2f%%  top-5 %s (%s over %d views)  clip top-1 %.2f%%  on %d videos%s; "
        "predictions in %s", split, results["video_top1"],
        f"{top5:.2f}%" if top5 is not None else f"n/a ({results['num_classes']} classes)", results["ensemble"],
        results["views_per_video"], results["clip_top1"], results["num_videos"],
        f", {results['num_failed']} undecodable videos excluded (listed there)" if results["num_failed"] else "",
        out,
    )
    write_run_report(cfg, model, loader.dataset, device, split)
    _check_decoded(cfg, results, out)
    return results


def write_run_report(cfg, model: nn.Module, dataset, device: torch.device, split: str) -> str | None:
    """Write ``OUTPUT_DIR/report.html`` (:mod:`vidnl.engine.report`) with the model in memory for
    the attention maps. Never fails the test: a failure is logged as a warning. Returns the
    report's path, or ``None`` when it could not be written."""
    from .report import AttentionSource, write_report

    start = time.time()
    path = os.path.join(cfg.OUTPUT_DIR, "report.html")
    try:
        write_report(cfg.OUTPUT_DIR, path, split=split,
                     attention=AttentionSource(model=model, dataset=dataset, device=device))
    except Exception as e:  # noqa: BLE001 - the report is a by-product of the test
        logger.warning("could not write %s: %s: %s (the test results are in predictions_%s.json)",
                       path, type(e).__name__, e, split)
        return None
    logger.info("report in %s (%.2f s)", path, time.time() - start)
    return path


def _check_decoded(cfg, results: dict, predictions_file: str) -> None:
    """A test in which no video decodes, or more than DATA_LOADER.MAX_BAD_FRACTION fail, is an
    error (its metrics would describe another test set), after the predictions file is written."""
    total, failed = results["split_videos"], results["num_failed"]
    limit = cfg.DATA_LOADER.MAX_BAD_FRACTION
    if results["num_videos"] == 0 or (total and failed / total > limit):
        raise DatasetError(
            f"{failed} of {total} test videos could not be decoded (more than DATA_LOADER.MAX_BAD_FRACTION="
            f"{limit}); they are listed under failed_videos in {predictions_file}. Check them with "
            f"python data_prep/check_videos.py <csv>.")


__all__ = ["evaluate", "test", "summary", "metric_summary", "dataset_class_names", "write_run_report"]
