#!/usr/bin/env python
"""Experiment: does a nonlocal block help when the class is a relation between distant objects?

Synthetic videos (real H.264 files): a static random background and two textured squares, one
in the left third and one in the right third of a wide frame, each moving up or down at its
own random speed. The class is whether they move the **same** way (0) or **opposite** ways (1).
Each square alone is uninformative (each direction is 50/50 in both classes), and the two are
at least half a frame apart, so a network must relate distant positions: hard for local
receptive fields by construction. The task is not tuned to show a gap.

The same tiny I3D ResNet-18 (the demo's backbone) is trained with no block, one NL block and one
SNL block (after block 1 of res3), same budget, for several seeds; the script reports mean ± std
video top-1 on held-out videos.

    python benchmarks/does_nonlocal_help.py                # 3 seeds x (none, nl, snl), ~15 min on 2 cores
    python benchmarks/does_nonlocal_help.py --seeds 0 --epochs 4 --train 160
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from data_prep.make_synthetic_motion import make_texture, write_mp4  # noqa: E402

BLOCKS = {"none": None, "nl": "nl", "snl": "snl"}


def render_relation_video(rng: np.random.Generator, label: int, frames: int, height: int, width: int,
                          size: int) -> np.ndarray:
    """frames×H×W×3 uint8: two squares moving vertically, same (label 0) or opposite (1) ways."""
    background = make_texture(rng, height, width)
    background = (background.astype(np.float32) * 0.5).astype(np.uint8)  # darker, static
    d_left = rng.choice([-1, 1])
    d_right = d_left if label == 0 else -d_left
    out = np.repeat(background[None], frames, axis=0)
    third = width // 3
    for direction, x_lo in ((d_left, 0), (d_right, 2 * third)):
        speed = rng.uniform(1.0, 2.0)
        travel = int(np.ceil(speed * (frames - 1)))
        x0 = int(rng.integers(x_lo, x_lo + third - size + 1))
        y_start = int(rng.integers(0, max(1, height - size - travel)))
        y0 = y_start if direction > 0 else y_start + travel
        patch = make_texture(rng, size, size)
        for t in range(frames):
            y = int(round(y0 + direction * speed * t))
            y = min(max(y, 0), height - size)
            out[t, y:y + size, x0:x0 + size] = patch
    return out


def _write(job):
    path, label, seed, frames, height, width, size = job
    if not os.path.exists(path):
        write_mp4(path, render_relation_video(np.random.default_rng(seed), label, frames, height, width, size), 25)


def make_dataset(out: str, n_train: int, n_test: int, frames: int, height: int, width: int, size: int,
                 workers: int) -> None:
    jobs, lines = [], {}
    for split_no, (split, n) in enumerate((("train", n_train), ("val", max(2, n_test // 4)), ("test", n_test))):
        os.makedirs(os.path.join(out, "videos", split), exist_ok=True)
        lines[split] = []
        for i in range(n):
            label = i % 2
            rel = os.path.join("videos", split, f"{i:05d}.mp4")
            jobs.append((os.path.join(out, rel), label, [7, split_no, i], frames, height, width, size))
            lines[split].append(f"{rel} {label}\n")
    with ProcessPoolExecutor(max(1, workers)) as pool:
        list(pool.map(_write, jobs, chunksize=8))
    for split, ls in lines.items():
        with open(os.path.join(out, f"{split}.csv"), "w") as f:
            f.writelines(ls)


def run_one(data: str, out: str, block: str, seed: int, epochs: int, frames: int, crop: int, workers: int) -> dict:
    from vidnl.config import load_config
    from vidnl.engine import test, train

    opts = ["OUTPUT_DIR", out, "DATA.PATH_TO_DATA_DIR", data, "RNG_SEED", str(seed), "MODEL.NUM_CLASSES", "2",
            "SOLVER.MAX_EPOCH", str(epochs), "TRAIN.EVAL_PERIOD", "0", "TENSORBOARD.ENABLE", "False",
            "DATA.NUM_FRAMES", "8", "DATA.SAMPLING_RATE", str(max(1, frames // 8 - 1)),
            "DATA.TRAIN_JITTER_SCALES", f"[{crop}, {crop}]", "DATA.TRAIN_CROP_SIZE", str(crop),
            "DATA.TEST_CROP_SIZE", str(crop), "TEST.NUM_ENSEMBLE_VIEWS", "3", "TEST.NUM_SPATIAL_CROPS", "1",
            "DATA_LOADER.NUM_WORKERS", str(workers), "LOG_PERIOD", "1000", "NUM_GPUS", "0"]
    if BLOCKS[block]:
        opts += ["NONLOCAL.TYPE", BLOCKS[block], "NONLOCAL.LOCATION", "[[], [1], [], []]", "NONLOCAL.POOL", "[]"]
    else:
        opts += ["NONLOCAL.LOCATION", "[[], [], [], []]"]
    cfg = load_config(os.path.join(ROOT, "configs", "Synthetic", "I3D_R18_SNL.yaml"), opts)
    start = time.time()
    trained = train(cfg)
    res = test(cfg)
    return {"block": block, "seed": seed, "video_top1": res["video_top1"], "train_top1": trained["last_epoch"]["top1_acc"],
            "train_loss": trained["last_epoch"]["loss"], "time_s": time.time() - start}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "relation"))
    p.add_argument("--train", type=int, default=320, help="training videos (half per class)")
    p.add_argument("--test", type=int, default=160)
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--size", type=int, default=16, help="square side in pixels")
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--blocks", nargs="+", default=list(BLOCKS), choices=list(BLOCKS))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "results", "does_nonlocal_help.json"))
    a = p.parse_args(argv)
    data = os.path.join(a.out, "data")
    make_dataset(data, a.train, a.test, a.frames, a.height, a.width, a.size, a.workers)
    logging.disable(logging.INFO)  # the runs' own logs go to their OUTPUT_DIR/log.txt
    runs = []
    for block in a.blocks:
        for seed in a.seeds:
            r = run_one(data, os.path.join(a.out, f"{block}_seed{seed}"), block, seed, a.epochs, a.frames, a.crop,
                        a.workers)
            runs.append(r)
            print(f"{block:5} seed {seed}: test video top-1 {r['video_top1']:5.1f}%  (train clips {r['train_top1']:5.1f}%, "
                  f"loss {r['train_loss']:.3f}, {r['time_s']:.0f} s)", flush=True)
    logging.disable(logging.NOTSET)
    summary = {}
    print(f"\n# same-vs-opposite motion of two distant squares: {a.train} train / {a.test} test videos, "
          f"{a.epochs} epochs, I3D-R18 width 16, chance 50%")
    for block in a.blocks:
        acc = [r["video_top1"] for r in runs if r["block"] == block]
        mean = statistics.mean(acc)
        std = statistics.stdev(acc) if len(acc) > 1 else 0.0
        summary[block] = {"mean": mean, "std": std, "runs": acc}
        print(f"{block:5}: {mean:5.1f} ± {std:4.1f} % over seeds {a.seeds}")
    os.makedirs(os.path.dirname(a.json) or ".", exist_ok=True)
    with open(a.json, "w") as f:
        json.dump({"settings": vars(a), "runs": runs, "summary": summary}, f, indent=1)
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
