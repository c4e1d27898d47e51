#!/usr/bin/env python
"""Sliding windows over a long video: decode once, streamed (vidnl.long_video) vs the naive way.

Both cut exactly the same windows (one test clip every stride: ``--frames`` frames
``--rate`` apart, short side and centre crop ``--crop``):

* **stream**: ``vidnl.long_video.iter_windows``, every frame decoded once, front to back, only
  the frames pending windows still need kept (already cropped);
* **naive**: a per-window loop, ``read_frames`` of the window's frames (the test path: decode at
  the test scale, then ``test_views`` with one crop), as a loop over windows calling the
  single-clip path would do.

Each runs in its own fresh process: its peak resident set (VmHWM, reset after the imports) is
reported above the resident set before the first decode. The data path (decode + resize + crop) is timed
over the whole video; the network's time per window (``--model``: the I3D-R50 of
configs/Kinetics/I3D_8x8_R50.yaml, a tiny I3D-R18, or none) is measured on ``--model-batches``
batches and is the same for both, so windows/s end to end = 1 / (data s/window + model
s/window). The video is synthetic (a moving texture, H.264, ``--fps``, ``--height`` ×
``--width``), written once to ``--dir``.

    python benchmarks/long_video.py                      # 5 min at 25 fps, 320×240, 8×8 windows of 224², stride 1 s
    python benchmarks/long_video.py --seconds 20 --model none    # quick
    python benchmarks/long_video.py --memory-only --height 1080 --width 1920 --seconds 60 240   # RSS vs length
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def write_long_video(path: str, seconds: float, fps: int, height: int, width: int) -> str:
    """A moving random texture, encoded frame by frame (memory independent of the length)."""
    import av

    if os.path.exists(path):
        return path
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    tex = np.repeat(np.repeat(small, 8, 0), 8, 1)[:height, :width]
    tmp = path + ".tmp.mp4"
    with av.open(tmp, mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "23"}
        for i in range(int(round(seconds * fps))):
            frame = np.roll(tex, (i // 3, 2 * i), axis=(0, 1))  # direction changes slowly: a long video
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
    return path


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    raise KeyError(key)


def _reset_peak() -> bool:
    """Reset the peak resident set (VmHWM) to the current one (Linux: /proc/self/clear_refs 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rss_mb() -> float:
    """Peak resident set of this process in MB (since the last reset where supported)."""
    try:
        return _status_mb("VmHWM")
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_worker(args) -> dict:
    """One mode in this (fresh) process: time the data path over the whole video."""
    import torch

    from vidnl.data import transforms
    from vidnl.data.decoding import read_frames
    from vidnl.data.sampling import clip_span
    from vidnl.long_video import iter_windows, stride_in_frames, video_fps, window_indices, window_starts

    torch.set_num_threads(args.threads)
    fps = video_fps(args.video)
    stride = stride_in_frames(*args.stride_parsed, fps)
    span = clip_span(args.frames, args.rate)
    import av  # noqa: F401 - loaded before the baseline, as the decoders are
    try:
        import decord  # noqa: F401
    except ImportError:
        pass
    _reset_peak()
    baseline = _status_mb("VmRSS")  # the resident set before the first decode; the peak counts from here
    start = time.perf_counter()
    windows = 0
    checksum = 0
    if args.worker == "stream":
        stats = {}
        for batch in iter_windows(args.video, num_frames=args.frames, sampling_rate=args.rate, stride_frames=stride,
                                  short_side=args.crop, crop_size=args.crop, backend=args.backend,
                                  threads=args.decode_threads, batch_size=args.batch, stats=stats):
            windows += len(batch.starts)
            checksum += int(batch.clips[:, 0, 0, 0, 0].sum())
        extra = {"max_buffered_frames": stats["max_buffered_frames"], "backend": stats["backend"]}
    else:
        # the frame count, as a per-window loop learns it from its first read
        first = read_frames(args.video, lambda c: np.array([0]), args.backend, args.decode_threads)
        n = first.num_frames
        batch = []
        for s in window_starts(n, span, stride).tolist():
            decoded = read_frames(args.video, lambda c, s=s: window_indices(s, args.frames, args.rate), args.backend,
                                  args.decode_threads, short_side=args.crop)
            clip = transforms.test_views(transforms.frames_to_tensor(decoded.frames), crop_size=args.crop,
                                         num_crops=1)[0]
            batch.append(clip)
            if len(batch) == args.batch:
                checksum += int(torch.stack(batch)[:, 0, 0, 0, 0].sum())
                windows += len(batch)
                batch = []
        if batch:
            checksum += int(torch.stack(batch)[:, 0, 0, 0, 0].sum())
            windows += len(batch)
        extra = {"backend": first.backend}
    seconds = time.perf_counter() - start
    return {"mode": args.worker, "windows": windows, "data_s": seconds, "data_windows_per_s": windows / seconds,
            "peak_rss_mb": _rss_mb(), "baseline_rss_mb": baseline, "peak_above_baseline_mb": _rss_mb() - baseline,
            "checksum": checksum, "stride_frames": stride, "span_frames": span, **extra}


def model_seconds_per_window(args) -> dict:
    """The network's forward time per window (8 frames × crop², batches of ``--batch``)."""
    import torch

    from vidnl.config import load_config
    from vidnl.models import build_model

    if args.model == "none":
        return {"model": "none", "model_s_per_window": 0.0}
    torch.set_num_threads(args.threads)
    if args.model == "i3d_r50":
        cfg = load_config(os.path.join(ROOT, "configs", "Kinetics", "I3D_8x8_R50.yaml"),
                          ["NUM_GPUS", "0", "DATA.NUM_FRAMES", str(args.frames)])
    else:
        cfg = load_config(os.path.join(ROOT, "configs", "Synthetic", "I3D_R18_SNL.yaml"),
                          ["NUM_GPUS", "0", "DATA.NUM_FRAMES", str(args.frames), "RESNET.BASE_WIDTH", "8",
                           "MODEL.NUM_CLASSES", "10"])
    model = build_model(cfg).eval()
    x = torch.randn(args.batch, 3, args.frames, args.crop, args.crop)
    with torch.no_grad():
        model(x[:1])  # warm-up
        start = time.perf_counter()
        for _ in range(args.model_batches):
            model(x)
        seconds = time.perf_counter() - start
    return {"model": args.model, "model_s_per_window": seconds / (args.model_batches * args.batch)}


def _spawn(args, mode: str, video: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", mode, "--video", video] + args.passthrough
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, nargs="+", default=[300.0], help="video length(s) in seconds")
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--stride", default="1s", help="window stride: '1s', '0.5s' or '16f' (default 1s)")
    p.add_argument("--frames", type=int, default=8, help="frames per window (default 8)")
    p.add_argument("--rate", type=int, default=8, help="sampling rate (default 8: I3D 8x8)")
    p.add_argument("--crop", type=int, default=224)
    p.add_argument("--batch", type=int, default=8, help="windows per batch (TEST.BATCH_SIZE)")
    p.add_argument("--backend", default="auto", choices=["auto", "decord", "pyav"])
    p.add_argument("--decode-threads", type=int, default=1)
    p.add_argument("--threads", type=int, default=2, help="torch / OpenMP threads")
    p.add_argument("--model", default="i3d_r50", choices=["i3d_r50", "tiny", "none"])
    p.add_argument("--model-batches", type=int, default=1)
    p.add_argument("--memory-only", action="store_true", help="run the streamed path only (RSS vs length)")
    p.add_argument("--in-process", action="store_true",
                   help="run both ways in this process (a quick check; the peak memory is then not each way's own)")
    p.add_argument("--dir", default=os.path.join(ROOT, "benchmarks", "results", "videos"))
    p.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "results", "long_video.json"))
    p.add_argument("--worker", choices=["stream", "naive"], help=argparse.SUPPRESS)
    p.add_argument("--video", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    from vidnl.long_video import parse_stride

    args.stride_parsed = parse_stride(args.stride)
    args.passthrough = ["--stride", args.stride, "--frames", str(args.frames), "--rate", str(args.rate), "--crop",
                        str(args.crop), "--batch", str(args.batch), "--backend", args.backend, "--decode-threads",
                        str(args.decode_threads), "--threads", str(args.threads)]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(args)))
        return 0
    rows = []
    model = None if args.memory_only else model_seconds_per_window(args)
    for seconds in args.seconds:
        video = write_long_video(os.path.join(args.dir, f"long_{args.width}x{args.height}_{args.fps}fps_"
                                              f"{seconds:g}s.mp4"), seconds, args.fps, args.height, args.width)
        modes = ["stream"] if args.memory_only else ["stream", "naive"]
        if args.in_process:  # quick check: both ways in this process (their peak memory is not their own)
            import torch

            threads = torch.get_num_threads()
            try:
                res = {m: run_worker(argparse.Namespace(**{**vars(args), "worker": m, "video": video})) for m in modes}
            finally:
                torch.set_num_threads(threads)
        else:
            res = {m: _spawn(args, m, video) for m in modes}
        row = {"seconds": seconds, "video": os.path.basename(video), **{m: res[m] for m in modes}}
        if not args.memory_only:
            if res["stream"]["checksum"] != res["naive"]["checksum"] or res["stream"]["windows"] != res["naive"]["windows"]:
                raise RuntimeError("the two ways cut different windows")
            m = model["model_s_per_window"]
            row["data_speedup"] = res["naive"]["data_s"] / res["stream"]["data_s"]
            row["end_to_end_windows_per_s"] = {k: 1.0 / (res[k]["data_s"] / res[k]["windows"] + m) for k in modes}
            row["end_to_end_speedup"] = row["end_to_end_windows_per_s"]["stream"] / row["end_to_end_windows_per_s"]["naive"]
        rows.append(row)
        s = res["stream"]
        line = (f"{seconds:g} s of {args.width}x{args.height} at {args.fps} fps, {s['windows']} windows "
                f"({args.frames}x{args.rate}, {args.crop}², stride {s['stride_frames']} frames), {s['backend']}: "
                f"stream {s['data_windows_per_s']:.1f} windows/s, peak RSS +{s['peak_above_baseline_mb']:.0f} MB "
                f"(max {s['max_buffered_frames']} frames held)")
        if not args.memory_only:
            n = res["naive"]
            line += (f"; naive {n['data_windows_per_s']:.1f} windows/s, +{n['peak_above_baseline_mb']:.0f} MB; "
                     f"data path {row['data_speedup']:.1f}x; with {model['model']} "
                     f"({model['model_s_per_window'] * 1000:.0f} ms/window): stream "
                     f"{row['end_to_end_windows_per_s']['stream']:.2f} vs naive "
                     f"{row['end_to_end_windows_per_s']['naive']:.2f} windows/s ({row['end_to_end_speedup']:.2f}x)")
        print(line, flush=True)
    out = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": args.threads},
           "settings": {k: v for k, v in vars(args).items() if k not in ("passthrough", "worker", "video", "json",
                                                                         "dir", "stride_parsed")},
           "model": model, "rows": rows}
    if args.json:
        from vidnl.engine.output_dir import write_json_atomic

        write_json_atomic(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
