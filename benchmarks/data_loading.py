#!/usr/bin/env python
"""Video loading, side by side in one run.

1. Training clips/s: vidnl's training loader (``--workers`` processes, decode + scale jitter +
   crop + flip, uint8 clips) vs the raw decord decode of exactly the same frame indices in the
   same number of processes (the limit) vs a PyAV decode per clip. The loader hands raw uint8
   pixels; normalisation runs on the training device (vidnl.data.model_input): its cost on this
   CPU is printed as well, per clip, for the main process.
2. Multi-view test: all K×S views (10 clips × 3 crops) of a video cut from one decode
   (vidnl's test item) vs decoding once per view (same uint8 views; both are normalised on the
   device afterwards, so that step is the same work in both and not timed).

The videos are written first (UCF-101-like 320×240, 25 fps, H.264; or the real ones in
``../shared/data/videos`` with ``--real``). Prints ratios and writes a JSON file.

    python benchmarks/data_loading.py [--videos 24 --frames 150 --workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from data_prep.make_synthetic_motion import render_video, write_mp4  # noqa: E402


def make_videos(folder: str, count: int, frames: int) -> list[str]:
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(count):
        path = os.path.join(folder, f"v{i:03d}.mp4")
        if not os.path.exists(path):
            write_mp4(path, render_video(np.random.default_rng(i), i % 4, frames, 240, 320), 25)
        paths.append(path)
    return paths


def _decord_clip(args):
    import decord

    path, idx = args
    vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    return vr.get_batch(list(idx)).asnumpy().shape


def _pyav_clip(args):
    from vidnl.data.decoding import _decode_pyav

    path, idx = args
    return _decode_pyav(path, lambda n: np.asarray(idx), 1).frames.shape


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=48)
    p.add_argument("--frames", type=int, default=150)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--epochs", type=int, default=2, help="passes over the videos for the clip rate")
    p.add_argument("--real", action="store_true", help="use ../shared/data/videos instead")
    p.add_argument("--dir", default=os.path.join(ROOT, "benchmarks", "results", "videos"))
    p.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "results", "data_loading.json"))
    a = p.parse_args(argv)

    import torch

    from vidnl.config import load_config
    from vidnl.data import sampling
    from vidnl.data.datasets.video_csv import ClipConfig, VideoCSVDataset, VideoRecord
    from vidnl.data.loader import build_train_loader

    if a.real:
        folder = os.path.join(ROOT, "..", "shared", "data", "videos")
        paths = sorted(os.path.join(folder, f) for f in os.listdir(folder))
    else:
        paths = make_videos(a.dir, a.videos, a.frames)
    data_dir = os.path.join(a.dir, "csv")
    os.makedirs(data_dir, exist_ok=True)
    with open(os.path.join(data_dir, "train.csv"), "w") as f:
        f.writelines(f"{path} 0\n" for path in paths)
    cfg = load_config(None, ["DATA.PATH_TO_DATA_DIR", data_dir, "DATA.NUM_FRAMES", "16", "DATA.SAMPLING_RATE", "4",
                             "TRAIN.BATCH_SIZE", "8", "DATA_LOADER.NUM_WORKERS", str(a.workers),
                             "DATA.TRAIN_JITTER_SCALES", "[256, 320]", "DATA.TRAIN_CROP_SIZE", "224"])
    from vidnl.data.decoding import decord_available

    if not decord_available():
        print("data_loading.py compares vidnl's loader with raw decord: decord is not installed "
              "(pip install 'vidnl[decord]')", file=sys.stderr)
        return 2
    print(f"# video loading, {len(paths)} videos, {platform.machine()} {os.cpu_count()} cores, {a.workers} workers")

    # -- 1. training clips ------------------------------------------------------------------
    loader = build_train_loader(cfg)
    ds = loader.dataset
    import decord

    lengths = [len(decord.VideoReader(r.path)) for r in ds.records]
    jobs = []  # the clips the loader draws: same (seed, epoch, index) -> same frame indices
    for epoch in range(a.epochs):
        for index, rec in enumerate(ds.records):
            rng = np.random.default_rng([cfg.RNG_SEED, epoch, index, 0])
            jobs.append((rec.path, sampling.train_clip_indices(lengths[index], 16, 4, rng).tolist()))
    clips, steady_clips, steady_time = 0, 0, 0.0

    def run_loader():
        """All epochs; steady state = from each epoch's first batch on (worker start-up excluded)."""
        nonlocal clips, steady_clips, steady_time
        for epoch in range(a.epochs):
            ds.set_epoch(epoch)
            loader.sampler.set_epoch(epoch)
            first = None
            for batch in loader:
                n = batch["inputs"].shape[0]
                clips += n
                if first is None:
                    first = time.perf_counter()
                else:
                    steady_clips += n
            steady_time += time.perf_counter() - first
    t_loader, _ = timed(run_loader)
    batch = next(iter(loader))
    normalize = ds.normalizer
    t_norm = min(timed(lambda: normalize(batch["inputs"]))[0] for _ in range(3)) / batch["inputs"].shape[0]
    with ProcessPoolExecutor(a.workers) as pool:
        t_decord, _ = timed(lambda: list(pool.map(_decord_clip, jobs, chunksize=4)))
        t_pyav, _ = timed(lambda: list(pool.map(_pyav_clip, jobs, chunksize=4)))
    rates = {"vidnl_loader": steady_clips / steady_time, "vidnl_loader_with_startup": clips / t_loader,
             "decord_limit": len(jobs) / t_decord, "pyav": len(jobs) / t_pyav}
    print(f"device-side normalisation (uint8 -> float B×C×T×H×W) on this CPU, main process, "
          f"{torch.get_num_threads()} threads: {1000 * t_norm:.1f} ms per clip")
    print(f"training clips/s: vidnl loader {rates['vidnl_loader']:.1f} (steady; {rates['vidnl_loader_with_startup']:.1f} "
          f"with worker start-up each epoch) | raw decord decode of the same clips {rates['decord_limit']:.1f} | PyAV "
          f"{rates['pyav']:.1f} || loader = {100 * rates['vidnl_loader'] / rates['decord_limit']:.0f}% of the decord "
          f"limit, {rates['vidnl_loader'] / rates['pyav']:.1f}x PyAV")

    # -- 2. multi-view test -----------------------------------------------------------------
    clip = ClipConfig(num_frames=16, sampling_rate=4, test_crop_size=256, num_ensemble_views=10,
                      num_spatial_crops=3)
    test_ds = VideoCSVDataset([VideoRecord(p_, 0) for p_ in paths[: min(len(paths), 8)]], "test", clip)
    t_once, _ = timed(lambda: [test_ds[i]["inputs"].shape for i in range(len(test_ds))])

    def per_view():
        from vidnl.data import transforms
        from vidnl.data.decoding import read_frames

        for rec in test_ds.records:
            for k in range(10):
                for s in range(3):
                    decoded = read_frames(rec.path, lambda n: sampling.test_clip_indices(n, 16, 4, 10)[k])
                    video = transforms.frames_to_tensor(decoded.frames)
                    transforms.test_views(video, crop_size=256, num_crops=3)[s].contiguous()
    t_views, _ = timed(per_view)
    print(f"multi-view test (10 clips x 3 crops, {len(test_ds)} videos): decode once {t_once:.2f} s | decode per view "
          f"{t_views:.2f} s || decode-once {t_views / t_once:.1f}x faster")
    os.makedirs(os.path.dirname(a.json) or ".", exist_ok=True)
    with open(a.json, "w") as f:
        json.dump({"machine": platform.platform(), "cores": os.cpu_count(), "workers": a.workers,
                   "clips_per_s": rates, "loader_fraction_of_decord": rates["vidnl_loader"] / rates["decord_limit"],
                   "normalize_ms_per_clip_main_process": 1000 * t_norm, "multiview_decode_once_s": t_once, "multiview_per_view_s": t_views,
                   "decode_once_speedup": t_views / t_once, "torch_threads": torch.get_num_threads()}, f, indent=1)
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
