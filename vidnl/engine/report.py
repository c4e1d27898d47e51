"""A run's report: one self-contained ``report.html`` (images embedded as base64 PNG, no external
CSS or JS; it opens offline) built from what a run leaves in its OUTPUT_DIR:

* **Summary**: run folder, model and data keys of ``config.yaml``, the test metrics;
* **Training curves**: loss, training top-1, validation top-1 and learning rate against the
  epoch, parsed from the ``json_stats:`` lines of ``log.txt`` (``train_iter``, ``train_epoch``,
  ``val_epoch``); every resume of the run is a dashed vertical line at the position it resumed
  from, and listed;
* **Test results** (``predictions_<split>.json``): confusion matrix with class names, per-class
  accuracy table, the worst-classified videos (lowest score on their true class) with their top-3
  predictions by name;
* **Attention maps**: the affinity row of the centre of the middle frame, for each nonlocal block
  (at most 4) and a few test clips, with a colorbar per row (:mod:`vidnl.engine.attention`); only
  when a model is given (:class:`AttentionSource`), otherwise a note says why the section is empty.

``write_report`` takes plain arguments; ``attention_source_from_run`` is the builder that reads a
run's config and newest checkpoint (used by ``tools/report.py``). The end of
:func:`vidnl.engine.evaluate.test` writes ``OUTPUT_DIR/report.html`` with the model in memory.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..errors import VidnlUserError, printable
from .output_dir import write_text_atomic

logger = logging.getLogger(__name__)

# How checkpoint.restore_run logs a resume (kept in sync with vidnl/engine/checkpoint.py).
RESUME_RE = re.compile(r"resumed from (?P<path>.+): (?P<epoch>\d+) epochs and (?P<iteration>\d+) iterations done")
MAX_BLOCKS = 4


class ReportError(VidnlUserError):
    """The folder given is not a run folder the report can be built from."""


# -- the log ------------------------------------------------------------------------------------
@dataclass
class RunLog:
    """``stats``: json_stats records grouped by ``_type``, in log order; ``resumes``: one dict per
    resume (``epoch`` and ``iteration`` done, ``path`` of the checkpoint, ``line`` of log.txt);
    ``skipped``: malformed json_stats lines (e.g. the last line of a killed process)."""

    stats: dict[str, list[dict]] = field(default_factory=dict)
    resumes: list[dict] = field(default_factory=list)
    skipped: int = 0


def read_log(path: str) -> RunLog:
    """Parse ``OUTPUT_DIR/log.txt``. A resume is the ``resumed from <ckpt>: N epochs and M
    iterations done`` line of ``restore_run``, or a ``json_stats`` record of ``_type`` ``resume``
    (with ``epoch`` / ``iteration`` / ``checkpoint``) if the trainer logs one; a resume logged both
    ways within 5 lines counts once."""
    if not os.path.isfile(path):
        raise ReportError(f"{path} not found: give the OUTPUT_DIR of a vidnl run (it holds log.txt, "
                          f"config.yaml, checkpoints/)")
    log = RunLog()
    text_resumes, json_resumes = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if "json_stats: " in line:
                try:
                    rec = json.loads(line.split("json_stats: ", 1)[1])
                except json.JSONDecodeError:
                    log.skipped += 1
                    continue
                if not isinstance(rec, dict):
                    log.skipped += 1
                    continue
                if rec.get("_type") == "resume":
                    json_resumes.append({"epoch": int(rec.get("epoch", 0)), "iteration": int(rec.get("iteration", 0)),
                                         "path": str(rec.get("path", rec.get("checkpoint", ""))), "line": lineno})
                else:
                    log.stats.setdefault(str(rec.get("_type", "?")), []).append(rec)
                continue
            m = RESUME_RE.search(line)
            if m:
                text_resumes.append({"epoch": int(m["epoch"]), "iteration": int(m["iteration"]),
                                     "path": m["path"], "line": lineno})
    # the same resume logged both ways (a json record next to restore_run's line) counts once
    same = {(r["epoch"], r["iteration"], r["line"] + d) for r in json_resumes for d in range(-5, 6)}
    text_only = [r for r in text_resumes if (r["epoch"], r["iteration"], r["line"]) not in same]
    log.resumes = sorted(json_resumes + text_only, key=lambda r: r["line"])
    return log


def _last_by(records: list[dict], key) -> list[dict]:
    """The last record for each key (a resumed run logs again what the killed one had logged
    after its checkpoint), sorted by key."""
    out = {}
    for r in records:
        try:
            out[key(r)] = r
        except (KeyError, TypeError, ValueError):
            continue
    return [out[k] for k in sorted(out)]


def _resume_x(resume: dict, iters_per_epoch: dict[int, int]) -> float:
    """Position (in epochs) a resume restarted from."""
    iters = iters_per_epoch.get(resume["epoch"] + 1, 0)
    return resume["epoch"] + (resume["iteration"] / iters if iters and resume["iteration"] else 0.0)


def _num(v) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


# -- figures ------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig, dpi: int = 80) -> bytes:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def curves_png(log: RunLog) -> bytes | None:
    """:func:`curves_figure` as PNG bytes (``None`` when the log has no training record)."""
    fig = curves_figure(log)
    return None if fig is None else _png(fig)


def curves_figure(log: RunLog):
    """2×2 panels (loss, training top-1, validation top-1, learning rate vs epoch) with each
    resume as a dashed vertical line labelled ``resumed`` at the position it restarted from;
    ``None`` when the log has no training record."""
    it = _last_by(log.stats.get("train_iter", []), lambda r: (int(r["epoch"]), int(r["iter"])))
    ep = _last_by(log.stats.get("train_epoch", []), lambda r: int(r["epoch"]))
    val = _last_by(log.stats.get("val_epoch", []), lambda r: int(r["epoch"]))
    if not (it or ep or val):
        return None
    iters = {int(r["epoch"]): int(r["iters"]) for r in it if r.get("iters")}
    plt = _plt()
    fig, axes = plt.subplots(2, 2, figsize=(10, 6))
    (ax_loss, ax_tr), (ax_val, ax_lr) = axes
    if it:
        x = [r["epoch"] - 1 + r["iter"] / max(r.get("iters") or 1, 1) for r in it]
        ax_loss.plot(x, [_num(r.get("loss")) for r in it], lw=0.8, alpha=0.6, label="iteration")
        ax_lr.plot(x, [_num(r.get("lr")) for r in it], lw=1.2, label="iteration")
    if ep:
        x = [r["epoch"] for r in ep]
        ax_loss.plot(x, [_num(r.get("loss")) for r in ep], "o-", label="epoch mean")
        ax_tr.plot(x, [_num(r.get("top1_acc")) for r in ep], "o-", label="train clips top-1")
        if not it:
            ax_lr.plot(x, [_num(r.get("lr")) for r in ep], "o-", label="end of epoch")
    if val:
        ax_val.plot([r["epoch"] for r in val], [_num(r.get("video_top1")) for r in val], "s-", color="C2",
                    label="val video top-1")
    ax_loss.set(title="loss", xlabel="epoch")
    ax_tr.set(title="train top-1 (%)", xlabel="epoch", ylim=(0, 100))
    ax_val.set(title="val top-1 (%)", xlabel="epoch", ylim=(0, 100))
    ax_lr.set(title="learning rate", xlabel="epoch")
    for i, res in enumerate(log.resumes):
        x = _resume_x(res, iters)
        for ax in axes.flat:
            ax.axvline(x, color="crimson", ls="--", lw=1.0, label="resumed" if i == 0 else None)
    for ax in axes.flat:
        if ax.lines:
            ax.legend(fontsize=7)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.09, top=0.95, wspace=0.22, hspace=0.42)
    return fig


def confusion_png(confusion: np.ndarray, names: list[str]) -> bytes:
    """K×K confusion matrix (rows = true class, columns = predicted), coloured by the fraction
    of the true class, counts written in the cells (K ≤ 20), class names on the axes (K ≤ 60),
    with a colorbar."""
    plt = _plt()
    k = len(names)
    rows = confusion.sum(1, keepdims=True)
    frac = np.divide(confusion, rows, out=np.zeros(confusion.shape, float), where=rows > 0)
    side = min(max(3.5, 0.35 * k + 2.0), 14.0)
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("fraction of the true class", fontsize=8)
    if k <= 60:
        fs = 8 if k <= 20 else 5
        ax.set_xticks(range(k), [_short(n) for n in names], rotation=90, fontsize=fs)
        ax.set_yticks(range(k), [_short(n) for n in names], fontsize=fs)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if confusion[i, j]:
                    ax.text(j, i, str(int(confusion[i, j])), ha="center", va="center", fontsize=8,
                            color="white" if frac[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted class", ylabel="true class")
    fig.tight_layout()
    return _png(fig)


def _short(name: str, n: int = 24) -> str:
    """A name as a figure label: at most ``n`` characters, control characters escaped and ``$``
    escaped (matplotlib reads text between two ``$`` as mathtext: "a$b$c" fails to parse)."""
    name = printable(name)
    name = name if len(name) <= n else name[:n - 1] + "…"
    return name.replace("$", r"\$")


# -- the test results ---------------------------------------------------------------------------
def probabilities(scores: list[float], ensemble: str) -> np.ndarray:
    """A video's class probabilities from its stored scores: the sum of the views' softmax is
    divided by its total; mean logits go through a softmax."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return s
    if ensemble == "mean_logits":
        e = np.exp(s - s.max())
        return e / e.sum()
    total = s.sum()
    return s / total if total > 0 else np.full_like(s, 1.0 / s.size)


def class_tables(preds: dict) -> dict:
    """Class names, confusion matrix (K×K int numpy, rows = true class) and per-class rows of a
    predictions file; computed from its ``predictions`` when the file predates those fields."""
    from .metrics import confusion_matrix, per_class_accuracy

    videos = preds.get("predictions", [])
    k = int(preds.get("num_classes") or (len(videos[0]["scores"]) if videos else len(preds.get("classes", []))))
    names = [str(n) for n in preds.get("classes") or range(k)]
    if len(names) != k:
        names = [str(i) for i in range(k)]
    if "confusion_matrix" in preds and len(preds["confusion_matrix"]) == k:
        confusion = np.asarray(preds["confusion_matrix"], dtype=np.int64).reshape(k, k)
    else:
        confusion = confusion_matrix(torch.tensor([v["pred"] for v in videos], dtype=torch.long),
                                     torch.tensor([v["label"] for v in videos], dtype=torch.long), k).numpy()
    per_class = preds.get("per_class") or per_class_accuracy(torch.from_numpy(confusion), names)
    return {"names": names, "confusion": confusion, "per_class": per_class}


def worst_videos(preds: dict, names: list[str], n: int = 10, top: int = 3) -> list[dict]:
    """The ``n`` videos with the lowest probability on their true class, each with its
    ``top`` most probable classes ``(name, probability)``."""
    ensemble = preds.get("ensemble", "sum_softmax")
    rows = []
    for v in preds.get("predictions", []):
        p = probabilities(v["scores"], ensemble)
        if p.size == 0:
            continue
        order = np.argsort(-p, kind="stable")[:top]
        rows.append({"index": v["index"], "path": v["path"], "label": v["label"],
                     "label_name": v.get("label_name", names[v["label"]]), "p_true": float(p[v["label"]]),
                     "top": [(names[int(j)], float(p[j])) for j in order]})
    rows.sort(key=lambda r: (r["p_true"], r["index"]))
    return rows[:n]


# -- attention ----------------------------------------------------------------------------------
@dataclass
class AttentionSource:
    """What the attention section needs: the model (eval mode is set), its test ``dataset``
    (``dataset[i]["inputs"]``: V×T×H×W×C uint8 views, ``dataset.normalizer``, ``dataset.records``)
    and the device of the model; ``num_clips`` test clips are shown."""

    model: nn.Module
    dataset: Any
    device: torch.device | str = "cpu"
    num_clips: int = 2


def _one_view(dataset):
    """A copy of a video test dataset that decodes only the middle clip, centre crop (a clip
    config with one ensemble view and one crop), or ``dataset`` itself when it has no such config."""
    import copy
    import dataclasses

    clip = getattr(dataset, "clip", None)
    if dataclasses.is_dataclass(clip) and {"num_ensemble_views", "num_spatial_crops"} <= set(vars(clip)):
        one = copy.copy(dataset)
        one.clip = dataclasses.replace(clip, num_ensemble_views=1, num_spatial_crops=1)
        return one
    return dataset


def attention_pngs(source: AttentionSource, videos: list[dict]) -> tuple[list[tuple[str, bytes]], list[str]]:
    """One PNG for ``videos`` (dicts with ``index``, ``path``, ``label_name``, ``pred_name``):
    the middle clip, centre crop of each, one row per (video, nonlocal block) (at most
    MAX_BLOCKS blocks, evenly spread), the query at the centre of the middle frame, a colorbar
    per row. The clips go through the model together, up to the last block. Returns
    ``[(caption, png)]`` (empty when nothing could be drawn) and notes."""
    from .attention import attention_figure, block_attention_maps, nonlocal_block_names
    from ..models.weights import unwrap

    model = unwrap(source.model)
    blocks = nonlocal_block_names(model)
    if not blocks:
        return [], ["The model has no nonlocal block (NONLOCAL.LOCATION is empty): there is no attention to show."]
    notes = []
    if len(blocks) > MAX_BLOCKS:
        keep = sorted({round(i * (len(blocks) - 1) / (MAX_BLOCKS - 1)) for i in range(MAX_BLOCKS)})
        notes.append(f"{len(blocks)} nonlocal blocks; shown: {', '.join(blocks[i] for i in keep)}.")
        blocks = [blocks[i] for i in keep]
    dataset = _one_view(source.dataset)
    records = getattr(dataset, "records", None)
    clips, shown = [], []
    for v in videos:
        index = v["index"]
        if records is None or index >= len(records) or records[index].path != v["path"]:
            notes.append(f"{v['path']}: not at index {index} of the test dataset (the test CSV changed?); skipped.")
            continue
        item = dataset[index]
        if item.get("inputs") is None:
            notes.append(f"{v['path']}: cannot be decoded now ({item['failures'][0][1]}); skipped.")
            continue
        views = item["inputs"]  # V×T×H×W×C uint8: V = 1 for the video datasets (middle clip, centre crop)
        clips.append(views[views.shape[0] // 2])
        shown.append(v)
    if not clips:
        return [], notes
    clip = dataset.normalizer(torch.stack(clips), source.device)  # N×C×T×H×W
    if clip.shape[1] not in (1, 3):
        return [], notes + [f"inputs have {clip.shape[1]} channels (not an image): attention maps not drawn."]
    t = clip.shape[2]
    was_training = model.training
    model.eval()
    try:
        by_block = block_attention_maps(model, blocks, clip, [(t // 2, 0.5, 0.5)])
    finally:
        model.train(was_training)
    maps, labels = [], []
    for b, v in enumerate(shown):
        for name in blocks:
            maps.append(by_block[name][b])
            labels.append(f"{_short(os.path.basename(v['path']), 20)}\n{name.replace('.nonlocal_blocks.', ' NL ')}")
    norm = dataset.normalizer
    fig = attention_figure(clip, maps, norm.mean, norm.std,
                           f"affinity of the centre of frame {t // 2} (star) with every position", row_labels=labels)
    caption = "; ".join(f"{os.path.basename(v['path'])}: true {v['label_name']}, predicted {v['pred_name']}"
                        for v in shown)
    caption += (f". Rows: {len(shown)} test videos (middle clip, centre crop) x {len(blocks)} nonlocal blocks; "
                f"each row has its own colour scale.")
    return [(caption, _png(fig))], notes


def attention_source_from_run(output_dir: str, split: str, cfg_file: str | None = None,
                              checkpoint: str | None = None, opts=()) -> AttentionSource | str:
    """Builder for the report tool: the model of ``cfg_file`` (default ``OUTPUT_DIR/config.yaml``)
    with the weights of ``checkpoint`` (default: TEST.CHECKPOINT_FILE_PATH, else the newest
    checkpoint of the run), on the CPU, and its ``split`` test dataset. A file given explicitly
    that is wrong raises a :class:`VidnlUserError`; what is missing from the run folder gives a
    note (a string) instead: the attention section then says why it is empty."""
    from ..config import load_config
    from ..data.datasets import build_dataset
    from .attention import nonlocal_block_names
    from ..models.weights import load_weights
    from .evaluate import resolve_test_checkpoint

    explicit = bool(cfg_file) or bool(opts)
    if cfg_file and not os.path.isfile(cfg_file):
        raise ReportError(f"--cfg {cfg_file}: file not found")
    cfg_file = cfg_file or os.path.join(output_dir, "config.yaml")
    if not os.path.isfile(cfg_file):
        return f"No attention maps: {cfg_file} not found (give --cfg)."
    try:
        cfg = load_config(cfg_file, list(opts) + ["OUTPUT_DIR", output_dir])
    except VidnlUserError as e:
        if explicit:  # the user's own --cfg / --opts: their mistake to hear about
            raise
        return f"No attention maps: {cfg_file} cannot be read ({e})."
    from ..models import build_model

    model = build_model(cfg).eval()
    if not nonlocal_block_names(model):
        return "The model has no nonlocal block (NONLOCAL.LOCATION is empty): there is no attention to show."
    path = checkpoint or resolve_test_checkpoint(cfg)
    if not path:
        return f"No attention maps: no checkpoint in {output_dir}/checkpoints (give --checkpoint)."
    if checkpoint and not os.path.isfile(checkpoint):
        raise ReportError(f"--checkpoint {checkpoint}: file not found")
    try:
        load_weights(model, path, fmt=cfg.MODEL.WEIGHTS_FORMAT, inflate=cfg.MODEL.INFLATE)
    except VidnlUserError as e:
        if checkpoint:
            raise
        return f"No attention maps: the weights of {path} do not load into this config's model ({e})."
    try:
        dataset = build_dataset(cfg.TEST.DATASET, cfg, split)
    except (VidnlUserError, OSError) as e:
        return f"No attention maps: the {split} set cannot be read here ({e})."
    return AttentionSource(model=model, dataset=dataset, device="cpu")


# -- HTML ---------------------------------------------------------------------------------------
_CSS = """body{font-family:sans-serif;margin:1.5em;max-width:1100px;color:#222}
h1{font-size:1.4em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
td,th{border:1px solid #ddd;padding:.25em .5em;text-align:left}
th{background:#f3f3f3}td.num{text-align:right}.note{color:#666;font-style:italic}img{max-width:100%}
.bar{background:#4a7ebb;height:.7em;display:inline-block}figure{margin:.8em 0}figcaption{font-size:.8em;color:#444}"""


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _fmt(v, digits: int = 2) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _table(header: list[str], rows: list[list[str]], num_cols=()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i in num_cols else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _config_rows(output_dir: str) -> list[list[str]]:
    path = os.path.join(output_dir, "config.yaml")
    if not os.path.isfile(path):
        return []
    import yaml

    try:
        with open(path) as f:
            c = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError):
        return []

    def get(key):
        node = c
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    keys = ["MODEL.ARCH", "RESNET.DEPTH", "MODEL.NUM_CLASSES", "NONLOCAL.TYPE", "NONLOCAL.LOCATION",
            "TEST.DATASET", "DATA.PATH_TO_DATA_DIR", "DATA.NUM_FRAMES", "SOLVER.MAX_EPOCH", "SOLVER.BASE_LR",
            "TEST.NUM_ENSEMBLE_VIEWS", "TEST.NUM_SPATIAL_CROPS", "TEST.ENSEMBLE_METHOD", "MODEL.TEST_HEAD"]
    return [[_e(k), _e(get(k))] for k in keys if get(k) is not None]


def build_html(output_dir: str, split: str = "test", attention: AttentionSource | str | None = None,
               worst: int = 10) -> str:
    """The report of ``output_dir`` as one HTML string (see the module docstring)."""
    log = read_log(os.path.join(output_dir, "log.txt"))
    parts = [f"<h1>vidnl run report: {_e(os.path.abspath(output_dir))}</h1>",
             f'<p class="note">generated {_e(datetime.datetime.now().isoformat(timespec="seconds"))}; '
             f"regenerate with <code>python tools/report.py {_e(output_dir)}</code></p>"]

    pred_path = os.path.join(output_dir, f"predictions_{split}.json")
    preds, preds_error = None, ""
    if os.path.isfile(pred_path):
        try:
            with open(pred_path) as f:
                preds = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            preds_error = f"{pred_path} cannot be read ({e})."
    else:
        preds_error = f"No {os.path.basename(pred_path)}: the run has not been tested on {split} yet."

    # Summary
    parts.append('<h2 id="summary">Summary</h2>')
    rows = _config_rows(output_dir)
    if rows:
        parts.append(_table(["config key", "value"], rows))
    if preds is not None:
        metrics = [("video top-1 (%)", preds.get("video_top1")), ("video top-5 (%)", preds.get("video_top5")),
                   ("clip top-1 (%)", preds.get("clip_top1")),
                   ("video top-1, sum of softmax (%)", preds.get("video_top1_sum_softmax")),
                   ("video top-1, mean of logits (%)", preds.get("video_top1_mean_logits")),
                   ("ensemble", preds.get("ensemble")), ("views per video", preds.get("views_per_video")),
                   ("videos scored", preds.get("num_videos")), ("videos not decodable", preds.get("num_failed")),
                   ("classes", preds.get("num_classes"))]
        parts.append(_table([f"{split} metric", "value"], [[_e(k), _e(_fmt(v))] for k, v in metrics]))
        if preds.get("video_top5") is None and "video_top5" in preds:
            parts.append(_note("top-5 is n/a with 5 classes or fewer (it would be 100 % by construction)."))

    # Training curves
    parts.append('<h2 id="curves">Training curves</h2>')
    png = curves_png(log)
    if png is None:
        parts.append(_note("log.txt has no training json_stats (train_iter / train_epoch / val_epoch)."))
    else:
        parts.append(_img(png, "training curves"))
        epochs = {int(r["epoch"]) for r in log.stats.get("train_epoch", []) if "epoch" in r}
        parts.append(f"<p>{len(epochs)} epochs trained, {len(log.stats.get('val_epoch', []))} validations.</p>")
    if log.resumes:
        items = "".join(f'<li class="resume">resumed at epoch {r["epoch"]} (iteration {r["iteration"]}) from '
                        f'<code>{_e(r["path"])}</code> (log.txt line {r["line"]})</li>' for r in log.resumes)
        parts.append(f"<p>Resumes (dashed red lines):</p><ul>{items}</ul>")
    else:
        parts.append(_note("The run was never resumed."))
    if log.skipped:
        parts.append(_note(f"{log.skipped} malformed json_stats lines of log.txt skipped."))

    # Test results
    parts.append(f'<h2 id="test">Test results ({_e(split)})</h2>')
    tables = None
    if preds is None:
        parts.append(_note(preds_error))
    else:
        tables = class_tables(preds)
        names, confusion = tables["names"], tables["confusion"]
        parts.append('<h3 id="confusion">Confusion matrix</h3>')
        if confusion.size:
            parts.append(_img(confusion_png(confusion, names), "confusion matrix"))
            parts.append(_note("Rows: true class; columns: predicted class; colour: fraction of the true class."))
        else:
            parts.append(_note("No video was scored."))
        parts.append('<h3 id="per-class">Per-class accuracy</h3>')
        rows = []
        for r in tables["per_class"]:
            top1 = r.get("top1")
            bar = f'<span class="bar" style="width:{top1:.0f}px"></span> ' if top1 is not None else ""
            rows.append([_e(r["index"]), _e(r["name"]), _e(r["num_videos"]), _e(r.get("correct", "")),
                         bar + _e(_fmt(top1))])
        parts.append(_table(["index", "class", "videos", "correct", "top-1 (%)"], rows, num_cols=(0, 2, 3)))
        parts.append('<h3 id="worst">Worst-classified videos</h3>')
        bad = worst_videos(preds, names, worst)
        if bad:
            parts.append(_note(f"The {len(bad)} videos with the lowest probability on their true class "
                               f"({preds.get('ensemble', 'sum_softmax')} over the views)."))
            parts.append(_table(
                ["video", "true class", "p(true)", "top-3 predictions"],
                [[f'<span title="{_e(b["path"])}">{_e(os.path.basename(b["path"]))}</span>', _e(b["label_name"]),
                  _fmt(b["p_true"], 3), _e(", ".join(f"{n} ({p:.3f})" for n, p in b["top"]))] for b in bad],
                num_cols=(2,)))
        else:
            parts.append(_note("No video was scored." if worst else "Not listed (--worst 0)."))
        failed = preds.get("failed_videos") or []
        if failed:
            parts.append(_note(f"{len(failed)} videos could not be decoded and are not counted (listed under "
                               f"failed_videos in {os.path.basename(pred_path)})."))

    # Attention maps
    parts.append('<h2 id="attention">Attention maps</h2>')
    if isinstance(attention, str):
        parts.append(_note(attention))
    elif attention is None:
        parts.append(_note("Not rendered: no model was given (tools/report.py renders them from "
                           "OUTPUT_DIR/config.yaml and the newest checkpoint)."))
    elif preds is None or not preds.get("predictions"):
        parts.append(_note("Not rendered: no scored test video to show."))
    else:
        bad = worst_videos(preds, tables["names"], len(preds["predictions"]))
        chosen = [bad[0]] + ([bad[-1]] if len(bad) > 1 else [])  # the worst and the best classified
        chosen += [b for b in bad[1:-1]][:max(0, attention.num_clips - 2)]
        by_index = {v["index"]: v for v in preds["predictions"]}
        videos = [{**by_index[b["index"]], "label_name": b["label_name"],
                   "pred_name": by_index[b["index"]].get("pred_name", b["top"][0][0])}
                  for b in chosen[:attention.num_clips]]
        try:
            images, notes = attention_pngs(attention, videos)
        except Exception as e:  # noqa: BLE001 - a model the maps cannot be drawn for is a note, not a failure
            images, notes = [], [f"attention maps not drawn: {type(e).__name__}: {e}"]
        for n in notes:
            parts.append(_note(n))
        for caption, png in images:
            parts.append(f"<figure>{_img(png, 'attention map')}<figcaption>{_e(caption)}</figcaption></figure>")
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>vidnl report: '
            f"{_e(os.path.basename(os.path.abspath(output_dir)))}</title><style>{_CSS}</style></head>\n"
            f"<body>\n{body}\n</body></html>\n")


def write_report(output_dir: str, out: str | None = None, split: str = "test",
                 attention: AttentionSource | str | None = None, worst: int = 10) -> str:
    """Write :func:`build_html` atomically to ``out`` (default ``OUTPUT_DIR/report.html``);
    returns the path."""
    out = out or os.path.join(output_dir, "report.html")
    text = build_html(output_dir, split, attention, worst)
    return write_text_atomic(out, text)


__all__ = ["AttentionSource", "ReportError", "RunLog", "read_log", "build_html", "write_report",
           "attention_source_from_run", "curves_figure", "worst_videos", "class_tables"]
