#!/usr/bin/env python
"""Write the synthetic motion dataset: real H.264 MP4 videos whose class is a motion direction.

Every video shows a random colour texture covering the whole frame, translating in one of
``--num-classes`` directions (right, left, down, up, then the diagonals) at a random speed
from a random starting offset. Any single frame is just a random texture, so only motion
tells the class; a model needs temporal kernels (I3D, not C2D) to learn it.

Output (``--out``): ``videos/{train,val,test}/NNNNNN.mp4``, ``train.csv`` / ``val.csv`` /
``test.csv`` with ``path label`` lines (paths relative to ``--out``) and ``classes.txt``.

    python data_prep/make_synthetic_motion.py --out data/synthetic_motion
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vidnl.cli import run_cli  # noqa: E402

DIRECTIONS = [("right", 1, 0), ("left", -1, 0), ("down", 0, 1), ("up", 0, -1),
              ("down_right", 1, 1), ("up_left", -1, -1), ("down_left", -1, 1), ("up_right", 1, -1)]


def make_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random texture: a sum of smooth noise at a few scales, random colours. H×W×3 uint8."""
    import cv2

    tex = np.zeros((height, width, 3), np.float32)
    for cell, weight in ((16, 1.0), (6, 0.7), (3, 0.5)):
        small = rng.random((height // cell + 2, width // cell + 2, 3)).astype(np.float32)
        tex += weight * cv2.resize(small, (width + 2 * cell, height + 2 * cell),
                                   interpolation=cv2.INTER_CUBIC)[cell:cell + height, cell:cell + width]
    tex -= tex.min()
    tex /= max(tex.max(), 1e-6)
    tint = rng.uniform(0.4, 1.0, 3).astype(np.float32)
    return np.clip(255 * (0.15 + 0.85 * tex * tint), 0, 255).astype(np.uint8)


def render_video(rng: np.random.Generator, label: int, frames: int, height: int, width: int,
                 speed_range=(1.0, 3.0)) -> np.ndarray:
    """frames×H×W×3 uint8: a window sliding over a larger texture in direction ``label``."""
    _, dx, dy = DIRECTIONS[label]
    speed = rng.uniform(*speed_range)
    travel = int(np.ceil(speed * (frames - 1))) + 1
    tex = make_texture(rng, height + travel + 8, width + travel + 8)
    # the window moves against (dx, dy), so the texture content appears to move along it
    x0 = int(rng.integers(0, 8)) + (travel if dx > 0 else 0)
    y0 = int(rng.integers(0, 8)) + (travel if dy > 0 else 0)
    out = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        x = int(round(x0 - dx * speed * t))
        y = int(round(y0 - dy * speed * t))
        out[t] = tex[y:y + height, x:x + width]
    return out


def write_mp4(path: str, frames: np.ndarray, fps: int) -> None:
    """Encode frames (T×H×W×3 uint8, even H and W) as H.264 MP4 with PyAV."""
    import av

    tmp = path + ".tmp.mp4"
    with av.open(tmp, mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)


def _job(args):
    path, label, seed, frames, height, width, fps = args
    if not os.path.exists(path):
        rng = np.random.default_rng(seed)
        write_mp4(path, render_video(rng, label, frames, height, width), fps)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--num-classes", type=int, default=4, help="motion directions (2..8)")
    p.add_argument("--train", type=int, default=120, help="training videos per class")
    p.add_argument("--val", type=int, default=15, help="validation videos per class")
    p.add_argument("--test", type=int, default=30, help="test videos per class")
    p.add_argument("--frames", type=int, default=32, help="frames per video")
    p.add_argument("--height", type=int, default=96)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    a = p.parse_args(argv)
    if not 2 <= a.num_classes <= len(DIRECTIONS):
        p.error(f"--num-classes must be in 2..{len(DIRECTIONS)}, got {a.num_classes}")
    if a.height % 2 or a.width % 2:
        p.error(f"--height and --width must be even for H.264 (got {a.height}x{a.width})")
    if a.frames < 2:
        p.error(f"--frames must be >= 2, got {a.frames}")

    start = time.time()
    jobs, csv_lines = [], {}
    for split_no, (split, per_class) in enumerate((("train", a.train), ("val", a.val), ("test", a.test))):
        os.makedirs(os.path.join(a.out, "videos", split), exist_ok=True)
        lines = []
        for i in range(per_class * a.num_classes):
            label = i % a.num_classes
            rel = os.path.join("videos", split, f"{i:06d}.mp4")
            seed = [a.seed, split_no, i]
            jobs.append((os.path.join(a.out, rel), label, seed, a.frames, a.height, a.width, a.fps))
            lines.append(f"{rel} {label}\n")
        csv_lines[split] = lines

    from tqdm import tqdm

    with ProcessPoolExecutor(max_workers=max(1, a.workers)) as pool:
        for _ in tqdm(pool.map(_job, jobs, chunksize=8), total=len(jobs), desc="videos",
                      disable=not sys.stderr.isatty()):
            pass
    for split, lines in csv_lines.items():
        with open(os.path.join(a.out, f"{split}.csv"), "w") as f:
            f.writelines(lines)
    with open(os.path.join(a.out, "classes.txt"), "w") as f:
        f.writelines(f"{i} {DIRECTIONS[i][0]}\n" for i in range(a.num_classes))
    counts = ", ".join(f"{s}: {len(v)}" for s, v in csv_lines.items())
    print(f"synthetic motion dataset in {a.out}: {counts} videos, {a.num_classes} classes, "
          f"{a.frames} frames {a.width}x{a.height} @ {a.fps} fps ({time.time() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
