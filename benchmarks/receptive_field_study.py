#!/usr/bin/env python
"""Where does a nonlocal block help? A controlled receptive-field study (CPU, in-memory data).

Claim under test: when the label is a relation between two objects farther apart than the
backbone's receptive field (RF), a backbone ending in global average pooling (GAP) and a linear
head cannot represent it: every feature sees at most one object, so the pooled vector is (up to
border effects) a sum of one-object terms and the logit difference is g(A) + g(B). One block whose
affinity is bilinear in two positions' features (θ(x_i)·φ(x_j)) can relate them. When the RF spans
both objects, the backbone alone can. So a gap should appear at small RF and vanish at large RF.

Data (generated tensors, B×3×T×16×48; two 5×5 objects whose left edges are DIST = 28 px apart,
the gap between them 23 px; the pair shifts jointly left/right, each object up/down):

- ``texture`` (images, T = 1): each object is a random ±1 colour pattern; label 0 = the two
  patterns are identical, 1 = independent. Every pattern is new, so nothing is memorised per
  class. Relation-blind bound: a threshold on g(A)+g(A) vs g(A)+g(B) is near chance (≈ 54 % if g
  is Gaussian; not a proof for every g).
- ``motion`` (videos, T = 4): two random patterns on a static noise background, each moving 1
  px/frame up or down; label 0 = same direction, 1 = opposite. Relation-blind bound: 75 % (a
  half-plane rule, g(up) = 1, g(down) = 0, gets every "opposite" clip and half the "same" ones;
  no sum of one-object terms does better, since opposite pairs always score g(up)+g(down)).
- ``control`` (images): one object is striped (period 2), the other a random pattern; label =
  stripe orientation (0 horizontal, 1 vertical): visible locally, every network must fit it.

Backbones (``BACKBONES``; RF = spatial receptive field in input pixels, ``receptive_field``):
plain conv-BN-ReLU stacks of 3×3 convolutions (video: 3×3×3 in the first two layers, temporal
RF 5 ≥ 4 frames), 16 channels, a stride-2 first layer then dilated layers — ``rf11`` (RF 11 <
gap 23), ``rf31`` (RF 31 ≈ DIST + 3, sees both objects only partly: 33 needed), ``rf63`` (RF 63
> the 48-px canvas) — and the demo's I3D-R18
(``vidnl.create_model("i3d_r18")``, base width 8, RF 435; its block goes after res3 block 1 as
in the demo). Blocks: none, nl, snl, gsnl, cgnl, a2, cc, ns (``build_nonlocal_block`` defaults,
"paper" style), one block after the last plain layer, before GAP.

Every run: the same generated train / test sets for a (task, seed) (so blocks are compared on
identical data), AdamW (lr 3e-3, one-cycle: 15 % warm-up, cosine decay), batch 32, a fixed
number of epochs (``BUDGETS``). Reported: test accuracy and final training-set accuracy (eval
mode), mean ± std over seeds, the paired gap to no block, CPU seconds per epoch per block, a
markdown table and a PNG plot.

    python benchmarks/receptive_field_study.py              # full grid, 2 workers, resumable
    python benchmarks/receptive_field_study.py --quick      # 2 cells end to end (CI), seconds
    python benchmarks/receptive_field_study.py --report     # tables and plot from the results only

Results are appended as JSON lines to ``OUT/receptive_field_study.jsonl``; a rerun skips cells
already there (a cell is claimed with a lock file while it runs, so two invocations can share the
grid). Writes ``OUT/receptive_field_study.md`` and ``.png``.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import json
import math
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from vidnl.errors import VidnlUserError  # noqa: E402
from vidnl.nonlocal_blocks import list_blocks  # noqa: E402

# ----------------------------------------------------------------------------------------------
# geometry and tasks

HEIGHT, WIDTH = 16, 48  # canvas
SIZE = 5  # object side
DIST = 28  # horizontal distance between the two objects' left edges (gap between them: DIST - SIZE)
VIDEO_FRAMES = 4
TASKS = ("texture", "motion", "control")
BLOCKS = ("none",) + list_blocks()  # no block, then every registered block type
RELATION_BLIND_BOUND = {"texture": "≈54 % (Gaussian g)", "motion": "75 %", "control": "100 %"}


class StudyError(VidnlUserError, ValueError):
    """A bad results file or argument of the study; the message names it."""


@dataclass
class Obj:
    """One object: a 3×SIZE×SIZE pattern, top-left (y, x) in frame 0, vertical speed dy px/frame."""

    pattern: np.ndarray
    y: int
    x: int
    dy: int = 0
    kind: str = "random"  # "random", "stripes_h", "stripes_v"


@dataclass
class Scene:
    """What a sample shows: objects on a background (3×H×W, static), over ``frames`` frames."""

    objects: list[Obj]
    background: np.ndarray
    frames: int = 1
    meta: dict = field(default_factory=dict)


def scene_label(task: str, scene: Scene) -> int:
    """The label as a function of the scene's content (never of the requested label):
    texture: 0 identical patterns, 1 not; motion: 0 same vertical direction, 1 opposite;
    control: the striped object's orientation, 0 horizontal, 1 vertical."""
    a, b = scene.objects
    if task == "texture":
        return 0 if np.array_equal(a.pattern, b.pattern) else 1
    if task == "motion":
        if a.dy == 0 or b.dy == 0:
            raise ValueError("motion scenes need moving objects")
        return 0 if np.sign(a.dy) == np.sign(b.dy) else 1
    if task == "control":
        kinds = [o.kind for o in scene.objects if o.kind != "random"]
        if len(kinds) != 1:
            raise ValueError("a control scene has exactly one striped object")
        return 0 if kinds[0] == "stripes_h" else 1
    raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")


def render(scene: Scene) -> np.ndarray:
    """Scene -> float32 3×T×H×W: the background in every frame, objects pasted at (y + t·dy, x)."""
    t = scene.frames
    out = np.repeat(scene.background[:, None], t, axis=1).astype(np.float32)
    for o in scene.objects:
        for i in range(t):
            y = o.y + i * o.dy
            if not (0 <= y <= HEIGHT - SIZE and 0 <= o.x <= WIDTH - SIZE):
                raise ValueError(f"object leaves the canvas at frame {i}: y={y}, x={o.x}")
            out[:, i, y:y + SIZE, o.x:o.x + SIZE] = o.pattern
    return out


def random_pattern(rng: np.random.Generator) -> np.ndarray:
    return rng.choice(np.array([-1.0, 1.0], np.float32), size=(3, SIZE, SIZE))


def stripes(rng: np.random.Generator, vertical: bool) -> np.ndarray:
    """3×SIZE×SIZE stripes of period 2 (random phase, random colour signs)."""
    line = (np.arange(SIZE) + rng.integers(2)) % 2 * 2.0 - 1.0
    p = np.tile(line[None, :], (SIZE, 1)) if vertical else np.tile(line[:, None], (1, SIZE))
    return (p[None] * rng.choice([-1.0, 1.0], size=(3, 1, 1))).astype(np.float32)


def sample_scene(task: str, label: int, rng: np.random.Generator) -> Scene:
    """A random scene of ``task`` whose content has ``label``: two objects DIST px apart
    horizontally (jointly shifted), independent vertical positions."""
    frames = VIDEO_FRAMES if task == "motion" else 1
    travel = frames - 1
    x0 = int(rng.integers(1, WIDTH - DIST - SIZE))  # 1 .. 14
    background = (rng.normal(0.0, 0.15, size=(3, HEIGHT, WIDTH))).astype(np.float32)
    objs = []
    for k in range(2):
        if task == "motion":
            dy = int(rng.choice([-1, 1])) if k == 0 else (objs[0].dy if label == 0 else -objs[0].dy)
            y_lo = travel if dy < 0 else 0
            y = int(rng.integers(y_lo, HEIGHT - SIZE - travel + y_lo + 1))
        else:
            dy, y = 0, int(rng.integers(0, HEIGHT - SIZE + 1))
        objs.append(Obj(random_pattern(rng), y, x0 + k * DIST, dy))
    if task == "texture" and label == 0:
        objs[1].pattern = objs[0].pattern.copy()
    if task == "control":
        k = int(rng.integers(2))
        objs[k].pattern = stripes(rng, vertical=bool(label))
        objs[k].kind = "stripes_v" if label else "stripes_h"
    scene = Scene(objs, background, frames)
    assert scene_label(task, scene) == label
    return scene


def make_data(task: str, n: int, seed: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """n samples, half per label: x float32 n×3×T×H×W, y int64 n."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    rng.shuffle(labels)
    x = np.stack([render(sample_scene(task, int(lab), rng)) for lab in labels])
    return torch.from_numpy(x), torch.from_numpy(labels.astype(np.int64))


# ----------------------------------------------------------------------------------------------
# backbones and receptive fields

# plain backbones: (kernel, stride, dilation) of each spatial layer, all 3×3
BACKBONES = {
    "rf11": [(3, 2, 1), (3, 1, 1), (3, 1, 1)],
    "rf31": [(3, 2, 1), (3, 1, 1), (3, 1, 2), (3, 1, 4)],
    "rf63": [(3, 2, 1), (3, 1, 1), (3, 1, 2), (3, 1, 4), (3, 1, 8)],
    "i3d_r18": None,
}
STATED_RF = {"rf11": 11, "rf31": 31, "rf63": 63, "i3d_r18": 435}
WIDTH_CHANNELS = 16
TEMPORAL_LAYERS = 2  # video: 3×3×3 in the first two layers (temporal RF 5 ≥ 4 frames), 1×3×3 after


def receptive_field(layers) -> int:
    """Receptive field (input pixels, one axis) of a chain of (kernel, stride, dilation) layers:
    1 + Σ_l (k_l − 1)·d_l·Π_{m<l} s_m."""
    rf, jump = 1, 1
    for k, s, d in layers:
        rf += (k - 1) * d * jump
        jump *= s
    return rf


def main_path_layers(model: nn.Module) -> list[tuple[int, int, int]]:
    """(kernel, stride, dilation) along W of every convolution / pooling on the longest path of a
    vidnl VideoResNet or PlainCNN, in forward order (shortcut 1×1 convs and nonlocal blocks,
    which are 1×1 or global, excluded)."""
    out = []
    for name, m in model.named_modules():
        if "downsample" in name or "nonlocal" in name or name.startswith("head") or name.startswith("block"):
            continue
        if isinstance(m, (nn.Conv3d, nn.MaxPool3d, nn.Conv2d, nn.MaxPool2d)):
            def last(v):
                return v[-1] if isinstance(v, (tuple, list)) else v
            out.append((last(m.kernel_size), last(m.stride), last(m.dilation)))
    return out


class PlainCNN(nn.Module):
    """conv-BN-ReLU layers (``layers``: spatial (k, stride, dilation); temporal kernel ``kt`` in the
    first ``temporal_layers`` layers, 1 after; temporal stride 1), an optional nonlocal block,
    global average pooling, a linear head. B×3×T×H×W -> B×num_classes."""

    def __init__(self, layers, width: int, kt: int, block: str, num_classes: int = 2,
                 temporal_layers: int = TEMPORAL_LAYERS):
        super().__init__()
        mods, cin = [], 3
        for i, (k, s, d) in enumerate(layers):
            t = kt if i < temporal_layers else 1
            mods += [nn.Conv3d(cin, width, (t, k, k), stride=(1, s, s), dilation=(1, d, d),
                               padding=(t // 2, d * (k // 2), d * (k // 2)), bias=False),
                     nn.BatchNorm3d(width), nn.ReLU(inplace=True)]
            cin = width
        self.features = nn.Sequential(*mods)
        if block == "none":
            self.block = nn.Identity()
        else:
            from vidnl.nonlocal_blocks import build_nonlocal_block

            self.block = build_nonlocal_block(block, width)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(self.block(self.features(x)).mean((2, 3, 4)))


def build_backbone(backbone: str, block: str, frames: int) -> nn.Module:
    if backbone not in BACKBONES:
        raise StudyError(f"unknown backbone {backbone!r}; choose one of {list(BACKBONES)}")
    if BACKBONES[backbone] is not None:
        return PlainCNN(BACKBONES[backbone], WIDTH_CHANNELS, 3 if frames > 1 else 1, block)
    import vidnl

    cfg = {"RESNET.BASE_WIDTH": 8, "DATA.NUM_FRAMES": frames, "MODEL.DROPOUT_RATE": 0.0}
    if frames == 1:
        cfg["RESNET.POOL2_TEMPORAL"] = []  # no temporal pooling of a single frame
    nonlocal_blocks = (dict(type=block, location=[[], [1], [], []], pool=[]) if block != "none"
                       else dict(location=[[], [], [], []]))
    return vidnl.create_model("i3d_r18", num_classes=2, config=cfg, nonlocal_blocks=nonlocal_blocks)


# ----------------------------------------------------------------------------------------------
# budgets and one cell

@dataclass(frozen=True)
class Budget:
    n_train: int
    n_test: int
    epochs: int
    batch: int = 32
    lr: float = 3e-3


BUDGETS = {
    # chosen from measured per-epoch CPU times so the full grid (288 runs) takes ~20 min of two idle cores
    # control: 3 epochs at first; I3D-R18 did not fit its training set (74-86 %, seed 0), so 12 (the one
    # change the study allows after seeing results: make the no-relation control fit)
    "full": {"texture": Budget(1024, 512, 6), "motion": Budget(512, 256, 6), "control": Budget(512, 256, 12)},
    "quick": {t: Budget(32, 32, 1) for t in TASKS},
    # a follow-up chosen AFTER seeing the "full" grid (every network memorised 512-1024 samples and
    # none generalised; an exploratory seed with 8x the samples learnt the relations): 8x the
    # training samples, 3 epochs (4x the compute per run); the control keeps its budget
    "large": {"texture": Budget(8192, 512, 3), "motion": Budget(4096, 256, 3), "control": Budget(512, 256, 12)},
}


def cell_key(task, backbone, block, seed, budget_name) -> str:
    return f"{budget_name}/{task}/{backbone}/{block}/seed{seed}"


def is_current(row: dict) -> bool:
    """Whether a result row was trained with the current budget of its task (rows of an earlier
    budget stay in the file as a record and are neither counted as done nor reported)."""
    b = BUDGETS.get(row.get("budget"), {}).get(row.get("task"))
    used = (row.get("n_train"), row.get("n_test"), row.get("epochs"))
    return b is not None and used == (b.n_train, b.n_test, b.epochs)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 128) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            correct += (model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
    return 100.0 * correct / len(x)


def run_cell(task: str, backbone: str, block: str, seed: int, budget_name: str, threads: int = 1) -> dict:
    """Train one (task, backbone, block, seed) cell with its budget; return its result row."""
    torch.set_num_threads(threads)
    b = BUDGETS[budget_name][task]
    task_no = TASKS.index(task)
    xtr, ytr = make_data(task, b.n_train, [seed, task_no, 0])
    xte, yte = make_data(task, b.n_test, [seed, task_no, 1])
    torch.manual_seed(seed)
    model = build_backbone(backbone, block, xtr.shape[2])
    opt = torch.optim.AdamW(model.parameters(), lr=b.lr, weight_decay=1e-4)
    steps_per_epoch = math.ceil(b.n_train / b.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, b.lr, total_steps=b.epochs * steps_per_epoch, pct_start=0.15)
    gen = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    epoch_s, epoch_cpu_s, losses = [], [], []
    start, start_cpu = time.time(), time.process_time()
    for _ in range(b.epochs):
        model.train()
        t0, c0 = time.time(), time.process_time()
        order = torch.randperm(b.n_train, generator=gen)
        total = 0.0
        for i in range(0, b.n_train, b.batch):
            idx = order[i:i + b.batch]
            loss = loss_fn(model(xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        losses.append(total / b.n_train)
        epoch_s.append(time.time() - t0)
        epoch_cpu_s.append(time.process_time() - c0)
    return {"key": cell_key(task, backbone, block, seed, budget_name), "task": task, "backbone": backbone,
            "rf": STATED_RF[backbone], "block": block, "seed": seed, "budget": budget_name,
            "n_train": b.n_train, "n_test": b.n_test, "epochs": b.epochs,
            "train_acc": accuracy(model, xtr, ytr), "test_acc": accuracy(model, xte, yte),
            "final_loss": losses[-1], "losses": losses, "epoch_s": statistics.median(epoch_s),
            "epoch_cpu_s": statistics.median(epoch_cpu_s), "time_s": time.time() - start,
            "cpu_s": time.process_time() - start_cpu, "threads": threads,
            "params": sum(p.numel() for p in model.parameters())}


# ----------------------------------------------------------------------------------------------
# results file: append-only JSON lines, per-cell claims

def read_results(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                row["key"], row["test_acc"]  # noqa: B018 (required fields)
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise StudyError(f"{path}, line {no}: not a result row of this study ({e}); "
                                 "remove that line or pass another --out") from None
            rows.append(row)
    return rows


def append_result(path: str, row: dict) -> None:
    """Append one line under an exclusive lock (several processes may append)."""
    data = (json.dumps(row) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, data)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.EPERM
    return True


def claim(claims_dir: str, key: str) -> str | None:
    """Create a claim file for ``key`` (exclusive); a claim whose process is gone is taken over.
    Returns its path, or None if another live process holds it."""
    path = os.path.join(claims_dir, key.replace("/", "__"))
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                pid = int(open(path).read().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and _pid_alive(pid):
                return None
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
            continue
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return path
    return None


def _worker(job):
    results, claims_dir, task, backbone, block, seed, budget = job
    key = cell_key(task, backbone, block, seed, budget)
    path = claim(claims_dir, key)
    if path is None:
        return key, None
    try:
        if any(r["key"] == key and is_current(r) for r in read_results(results)):  # done by another process
            return key, None
        row = run_cell(task, backbone, block, seed, budget)
        append_result(results, row)
        return key, row
    finally:
        os.remove(path)


# ----------------------------------------------------------------------------------------------
# report

def _ms(v: list[float]) -> str:
    if not v:
        return "–"
    return f"{statistics.mean(v):.1f} ± {statistics.stdev(v) if len(v) > 1 else 0.0:.1f}"


def summarise(rows: list[dict]) -> dict:
    """(task, backbone, block) -> {test, train, epoch_s, n}."""
    cells: dict = {}
    for r in rows:
        c = cells.setdefault((r["task"], r["backbone"], r["block"]), {"test": [], "train": [], "epoch_s": [],
                                                                       "epoch_cpu_s": [], "seeds": []})
        c["test"].append(r["test_acc"])
        c["train"].append(r["train_acc"])
        c["epoch_s"].append(r["epoch_s"])
        c["epoch_cpu_s"].append(r.get("epoch_cpu_s", r["epoch_s"]))
        c["seeds"].append(r["seed"])
    return cells


def markdown(rows: list[dict], budget_name: str) -> str:
    cells = summarise(rows)
    tasks = [t for t in TASKS if any(k[0] == t for k in cells)]
    backbones = [b for b in BACKBONES if any(k[1] == b for k in cells)]
    blocks = [b for b in BLOCKS if any(k[2] == b for k in cells)]
    n_seeds = len({r["seed"] for r in rows})
    lines = []
    for task in tasks:
        b = BUDGETS[budget_name][task]
        lines += [f"### {task}: test accuracy %, mean ± std over seeds (training-set accuracy)", "",
                  f"{b.n_train} train / {b.n_test} test samples, {b.epochs} epochs, batch {b.batch}; chance 50 %, "
                  f"relation-blind GAP + linear bound {RELATION_BLIND_BOUND[task]}.", "",
                  "| backbone (RF) | " + " | ".join(blocks) + " |", "|---|" + "---|" * len(blocks)]
        for bb in backbones:
            row = [f"{bb} ({STATED_RF[bb]})"]
            for bl in blocks:
                c = cells.get((task, bb, bl))
                row.append("–" if c is None else f"{_ms(c['test'])} ({statistics.mean(c['train']):.0f})"
                           + (f" [n={len(c['test'])}]" if len(c["test"]) != n_seeds else ""))
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    lines += ["### Gap: test accuracy of each block minus no block, paired by seed (same data), mean ± std", "",
              "| task / backbone (RF) | " + " | ".join(b for b in blocks if b != "none") + " |",
              "|---|" + "---|" * (len(blocks) - ("none" in blocks))]
    for task in tasks:
        for bb in backbones:
            row = [f"{task} / {bb} ({STATED_RF[bb]})"]
            base = {r["seed"]: r["test_acc"] for r in rows
                    if (r["task"], r["backbone"], r["block"]) == (task, bb, "none")}
            for bl in blocks:
                if bl == "none":
                    continue
                d = [r["test_acc"] - base[r["seed"]] for r in rows
                     if (r["task"], r["backbone"], r["block"]) == (task, bb, bl) and r["seed"] in base]
                row.append(f"{'+' if d and statistics.mean(d) >= 0 else ''}{_ms(d)}" if d else "–")
            lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines += ["### Cost: CPU seconds per training epoch (median over seeds, 1 thread), by block", "",
              "| task / backbone | " + " | ".join(blocks) + " |", "|---|" + "---|" * len(blocks)]
    for task in tasks:
        for bb in backbones:
            row = [f"{task} / {bb}"]
            for bl in blocks:
                c = cells.get((task, bb, bl))
                row.append("–" if c is None else f"{statistics.median(c['epoch_cpu_s']):.2f}")
            lines.append("| " + " | ".join(row) + " |")
    n = len(rows)
    cpu = sum(r.get("cpu_s", r["time_s"]) for r in rows)
    lines += ["", f"{n} runs; summed CPU time {cpu / 60:.1f} min (idle 2-core estimate with 2 workers: "
              f"{cpu / 120:.1f} min); summed wall time of the runs {sum(r['time_s'] for r in rows) / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = summarise(rows)
    tasks = [t for t in TASKS if any(k[0] == t for k in cells)]
    backbones = [b for b in BACKBONES if any(k[1] == b for k in cells)]
    blocks = [b for b in BLOCKS if any(k[2] == b for k in cells)]
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for j, bl in enumerate(blocks):
            xs, ms, ss = [], [], []
            for i, bb in enumerate(backbones):
                c = cells.get((task, bb, bl))
                if c:
                    xs.append(i + (j - (len(blocks) - 1) / 2) * 0.05)
                    ms.append(statistics.mean(c["test"]))
                    ss.append(statistics.stdev(c["test"]) if len(c["test"]) > 1 else 0.0)
            ax.errorbar(xs, ms, yerr=ss, marker="o", ms=3, capsize=2, lw=2.2 if bl == "none" else 1.1,
                        color="black" if bl == "none" else None, label=bl)
        ax.axhline(50, color="grey", ls=":", lw=0.8)
        if task == "motion":
            ax.axhline(75, color="grey", ls="--", lw=0.8)
            ax.text(len(backbones) - 1, 76, "relation-blind bound", fontsize=6, ha="right", color="grey")
        ax.set_xticks(range(len(backbones)))
        ax.set_xticklabels([f"{b}\nRF {STATED_RF[b]}" for b in backbones], fontsize=7)
        ax.set_ylim(40, 102)
        ax.set_title(f"{task} (objects {DIST} px apart)", fontsize=9)
        ax.set_ylabel("test accuracy %", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"), help="folder of the results")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    p.add_argument("--blocks", nargs="+", default=list(BLOCKS), choices=BLOCKS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--workers", type=int, default=2, help="worker processes (1 thread each)")
    p.add_argument("--quick", action="store_true", help="2 cells (texture, rf11, none / nl, seed 0), tiny budget")
    p.add_argument("--budget", default="full", choices=[b for b in BUDGETS if b != "quick"],
                   help="full: the pre-registered grid (~20 min on 2 idle cores); large: 8x the training samples "
                        "(results in receptive_field_study_large.*)")
    p.add_argument("--report", action="store_true", help="only write the table and plot from the results")
    a = p.parse_args(argv)
    if a.workers < 1:
        p.error(f"--workers must be >= 1, got {a.workers}")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    try:
        return _main(a)
    except VidnlUserError as e:
        print(f"vidnl: error: {e}", file=sys.stderr)
        return 2


def _main(a) -> int:
    budget = "quick" if a.quick else a.budget
    if a.quick:
        a.tasks, a.backbones, a.blocks, a.seeds = ["texture"], ["rf11"], ["none", "nl"], [0]
    os.makedirs(a.out, exist_ok=True)
    stem = os.path.join(a.out, "receptive_field_study" + ("" if budget == "full" else f"_{budget}"))
    results, claims_dir = stem + ".jsonl", stem + ".claims"
    os.makedirs(claims_dir, exist_ok=True)
    done = {r["key"] for r in read_results(results) if is_current(r)}
    jobs = [(results, claims_dir, t, bb, bl, s, budget) for t in a.tasks for bb in a.backbones for bl in a.blocks
            for s in a.seeds if cell_key(t, bb, bl, s, budget) not in done]
    # seed by seed (an interrupted run leaves whole seeds); within a seed the images before the
    # videos and the plain backbones before I3D-R18 (cheapest first)
    jobs.sort(key=lambda j: (j[5], j[2] == "motion", j[3] == "i3d_r18"))
    if not a.report and jobs:
        print(f"{len(jobs)} cells to run ({len(done)} already in {results}), {a.workers} workers", flush=True)
        start = time.time()
        if a.workers == 1:
            it = map(_worker, jobs)
            pool = None
        else:
            pool = ProcessPoolExecutor(a.workers)
            it = pool.map(_worker, jobs)
        try:
            for n, (key, row) in enumerate(it, 1):
                if row is None:
                    print(f"[{n}/{len(jobs)}] {key}: done by another process, skipped", flush=True)
                    continue
                print(f"[{n}/{len(jobs)}] {key}: test {row['test_acc']:5.1f} %  train {row['train_acc']:5.1f} %  "
                      f"loss {row['final_loss']:.3f}  {row['epoch_s']:.2f} s/epoch  ({time.time() - start:.0f} s)",
                      flush=True)
        finally:
            if pool is not None:
                pool.shutdown()
        print(f"wall time {time.time() - start:.0f} s", flush=True)
    try:
        os.rmdir(claims_dir)  # only when empty (no other invocation is running a cell)
    except OSError:
        pass
    wanted = {cell_key(t, bb, bl, s, budget) for t in a.tasks for bb in a.backbones for bl in a.blocks
              for s in a.seeds}
    rows = [r for r in read_results(results) if r["key"] in wanted and is_current(r)]
    if not rows:
        raise StudyError(f"{results}: no results for the requested grid; run without --report first")
    text = markdown(rows, budget)
    with open(stem + ".md", "w", encoding="utf-8") as f:
        f.write(text)
    plot(rows, stem + ".png")
    print("\n" + text)
    print(f"wrote {results}, {stem}.md, {stem}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
