#!/usr/bin/env python
"""Clip-feature extraction throughput for many short videos, and what bounds it.

For each model: the videos/s of ``vidnl.clip_features.extract_clip_features`` with ``--workers``
loader processes (decode + crop in the workers, the network in the main process), and, to see
which part bounds it, the same decode alone (the same window stream through the same loader,
no network) and the network alone (forward passes of random uint8 windows of the same shape
and batch, normalisation included; measured on ``--net-windows`` windows and scaled to the
windows of the videos). The bound is the slower part; with both on the same CPU cores, the
full run also pays for the other part's share of the cores.

Models: "i3d_r50" (configs/Kinetics/I3D_8x8_R50.yaml, 8×8 windows of 224², 2048-d features)
and "tiny" (I3D-R18 of width 8, 8×8 windows of 112², 64-d), random weights (speed only).
Videos: synthetic UCF-101-like 320×240 H.264 (data_prep/make_synthetic_motion.py), ``--seconds``
long at 25 fps. Prints a table and writes JSON.

    python benchmarks/clip_features.py [--videos 40 --seconds 3 --workers 2 --models i3d_r50,tiny]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from data_prep.make_synthetic_motion import render_video, write_mp4  # noqa: E402

MODELS = {
    # windows slide over the file's frames with vidnl's sampling and rounding (decoded at the test scale)
    "i3d_r50": (os.path.join(ROOT, "configs", "Kinetics", "I3D_8x8_R50.yaml"),
                ["DATA.TEST_CROP_SIZE", "224", "DATA.TEMPORAL_SAMPLING", "vidnl", "DATA.TARGET_FPS", "0",
                 "DATA.SPATIAL_ROUNDING", "vidnl", "MODEL.TEST_HEAD", "global"]),
    "tiny": (None, ["MODEL.ARCH", "i3d", "RESNET.DEPTH", "18", "RESNET.BASE_WIDTH", "8", "DATA.NUM_FRAMES", "8",
                    "DATA.SAMPLING_RATE", "8", "DATA.TEST_CROP_SIZE", "112"]),
}


def make_videos(folder: str, count: int, frames: int, fps: int) -> list[str]:
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(count):
        path = os.path.join(folder, f"v{i:03d}_{frames}f.mp4")
        if not os.path.exists(path):
            write_mp4(path, render_video(np.random.default_rng(i), i % 4, frames, 240, 320), fps)
        paths.append(path)
    return paths


def measure(name: str, paths: list[str], a) -> dict:
    import torch

    from vidnl import clip_features as cf
    from vidnl.config import load_config
    from vidnl.data.model_input import InputNormalizer
    from vidnl.models import build_model

    cfg_file, opts = MODELS[name]
    cfg = load_config(cfg_file, opts + ["TEST.BATCH_SIZE", str(a.batch), "DATA_LOADER.NUM_WORKERS", str(a.workers)])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    settings = cf.window_settings(cfg, a.stride)

    # decode only: the extraction's window stream through the same loader
    stream = cf._WindowStream(list(enumerate(paths)), settings, a.batch)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=a.workers, collate_fn=cf._first_item)
    start, windows = time.perf_counter(), 0
    for item in loader:
        windows += len(item["starts"]) if item["kind"] == "batch" else 0
        if item["kind"] == "failed":
            raise RuntimeError(f"{paths[item['video']]}: {item['reason']}")
    t_decode = time.perf_counter() - start

    # network only: random windows of the same shape, normalised and run in batches
    net, normalize = cf.feature_model(model), InputNormalizer(settings.mean, settings.std)
    clips = torch.randint(0, 256, (a.batch, settings.num_frames, settings.crop_size, settings.crop_size, 3),
                          dtype=torch.uint8)
    with torch.no_grad():
        dim = net(normalize(clips)).shape[1]  # warm-up
        passes = max(1, -(-min(a.net_windows, windows) // a.batch))
        start = time.perf_counter()
        for _ in range(passes):
            net(normalize(clips))
        per_window = (time.perf_counter() - start) / (passes * a.batch)
    t_network = per_window * windows

    # both: the extraction itself
    out_dir = tempfile.mkdtemp(prefix="clip_features_bench_")
    try:
        start = time.perf_counter()
        out = cf.extract_clip_features(paths, model, out_dir, settings, batch_size=a.batch, num_workers=a.workers,
                                       progress=False)
        t_both = time.perf_counter() - start
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    assert len(out["done"]) == len(paths) and out["windows"] == windows, out
    n = len(paths)
    row = {"model": name, "feature_dim": dim, "window": f"{settings.num_frames}x{settings.sampling_rate} "
           f"{settings.crop_size}^2", "stride": settings.record()["stride"], "videos": n,
           "windows": windows, "decode_s": t_decode, "network_s": t_network, "both_s": t_both,
           "videos_per_s": {"decode_only": n / t_decode, "network_only": n / t_network, "both": n / t_both},
           "network_s_per_window": per_window, "bound": "network" if t_network > t_decode else "decoding",
           "both_over_slower_part": t_both / max(t_decode, t_network),
           "both_over_sum_of_parts": t_both / (t_decode + t_network)}
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=40)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--workers", type=int, default=2, help="loader processes that decode")
    p.add_argument("--batch", type=int, default=8, help="windows per forward pass (TEST.BATCH_SIZE)")
    p.add_argument("--stride", default="16f", help="window stride (frames 'Nf' or seconds 'Ns')")
    p.add_argument("--models", default="i3d_r50,tiny", help=f"comma-separated, of {', '.join(MODELS)}")
    p.add_argument("--net-windows", type=int, default=24, help="windows timed for the network-only rate")
    p.add_argument("--dir", default=os.path.join(ROOT, "benchmarks", "results", "videos"))
    p.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "results", "clip_features.json"))
    a = p.parse_args(argv)
    names = [m.strip() for m in a.models.split(",") if m.strip()]
    bad = [m for m in names if m not in MODELS]
    if bad:
        print(f"clip_features.py: unknown model {bad[0]!r}; choose from {', '.join(MODELS)}", file=sys.stderr)
        return 2
    import torch

    paths = make_videos(a.dir, a.videos, int(round(a.seconds * a.fps)), a.fps)
    print(f"# clip features: {len(paths)} videos of {a.seconds:g} s (320x240, {a.fps} fps), {a.workers} loader "
          f"workers, batch {a.batch}, stride {a.stride}; {platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads")
    rows = []
    for name in names:
        r = measure(name, paths, a)
        rows.append(r)
        v = r["videos_per_s"]
        print(f"{name:8s} ({r['window']}, {r['feature_dim']}-d, {r['windows']} windows): videos/s decode only "
              f"{v['decode_only']:.2f} | network only {v['network_only']:.2f} | both {v['both']:.2f} || bound: "
              f"{r['bound']} ({max(r['decode_s'], r['network_s']) / min(r['decode_s'], r['network_s']):.1f}x slower "
              f"than the other part); both = {r['both_over_slower_part']:.2f}x the slower part, "
              f"{r['both_over_sum_of_parts']:.2f}x the sum", flush=True)
    os.makedirs(os.path.dirname(a.json) or ".", exist_ok=True)
    with open(a.json, "w") as f:
        json.dump({"machine": platform.platform(), "cores": os.cpu_count(), "torch": torch.__version__,
                   "torch_threads": torch.get_num_threads(), "workers": a.workers, "batch": a.batch,
                   "seconds": a.seconds, "fps": a.fps, "rows": rows}, f, indent=1)
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
