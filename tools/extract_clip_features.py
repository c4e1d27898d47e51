#!/usr/bin/env python
"""Clip features of whole video datasets with a trained classification model (any video backbone).

    python tools/extract_clip_features.py INPUT... --cfg C.yaml --weights W.pyth --out FEATURES_DIR
                                          [--window-stride 16f] [--max-videos N] [KEY VALUE ...]
    torchrun --nproc_per_node 4 tools/extract_clip_features.py INPUT... --cfg C.yaml --weights W.pyth --out DIR

INPUT: video files, folders (the videos inside, recursively) and list files (.csv / .txt, one
video per line, as tools/predict.py takes them). Every video is cut into windows of one clip
(DATA.NUM_FRAMES frames DATA.SAMPLING_RATE apart) every --window-stride ('16f': frames, '1s':
seconds, rounded to frames of each video), decoded once and streamed (DATA_LOADER.NUM_WORKERS
decoding processes), cut as the single test view (short side DATA.TEST_CROP_SIZE, centre crop)
and run through the model in batches of TEST.BATCH_SIZE windows (TEST.COMPILE applies). A
window's feature is the input of the model's final classifier (e.g. the pooled res5 of an
I3D-R50, 2048-d).

Writes FEATURES_DIR/<video-id>.npy (num_windows x D float32, row t = the window starting at frame
t * stride), index.json (settings; per video: path, fps, frames, every window's first/last frame
and start/end in seconds; failures) and index.csv (one row per video). The layout is the I3D
features of temporal action localisation (THUMOS-14 / ActivityNet releases; ActionFormer's
feat_stride = the stride, num_frames = the span). A run that stops (killed, --max-videos) is
resumed by running it again: finished videos are skipped, the index is rebuilt. Under torchrun
each process takes every WORLD_SIZE-th video and rank 0 writes the index at the end.

A video that cannot be read is reported on stderr and listed as failed in the index; the others
go on. Exit status 0 when at least one video has features; 2 (one message, no traceback) for a
missing config, weights file or input, an output path that is a file, an output folder made with
other settings, a config mistake, or when no video could be read.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vidnl.cli import UsageError, check_files, cli_entry, split_opts_flag, split_overrides  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    argv, opts = split_opts_flag(argv)  # everything after --opts is KEY VALUE overrides
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("items", nargs="*", metavar="INPUT ... [KEY VALUE ...]",
                   help="videos, folders of videos, lists of videos; then config overrides KEY VALUE")
    p.add_argument("--cfg", dest="cfg_file", required=True, help="YAML config the model was trained with")
    p.add_argument("--weights", required=True, help="checkpoint or weights file (any MODEL.WEIGHTS_FORMAT)")
    p.add_argument("--out", required=True, help="folder for <video-id>.npy, index.json and index.csv")
    p.add_argument("--window-stride", default="16f",
                   help="windows every N frames ('16f', the default) or seconds ('1s', '0.5s')")
    p.add_argument("--max-videos", type=int, default=None,
                   help="extract at most N videos (per process) and stop; run again to go on")
    args = p.parse_intermixed_args(argv)
    args.inputs, args.overrides = split_overrides(args.items)
    args.overrides += opts
    return args


@cli_entry(tool="vidnl")
def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="vidnl: %(levelname)s: %(message)s", stream=sys.stderr)
    if os.path.isdir(args.cfg_file):
        raise UsageError(f"--cfg {args.cfg_file} is a folder; expected a YAML config file")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"--out {args.out} is a file; expected a folder (one .npy per video plus index.json)")
    if args.max_videos is not None and args.max_videos < 1:
        raise UsageError(f"--max-videos must be at least 1, got {args.max_videos}")
    check_files(args.weights, args.inputs, "videos", "video files, folders or .csv/.txt lists")
    from vidnl.clip_features import ClipFeatureError, extract_clip_features_from_config, parse_stride
    from vidnl.config import load_config

    stride = parse_stride(args.window_stride)  # checked before anything is loaded
    cfg = load_config(args.cfg_file, args.overrides)
    from vidnl.engine.setup import seed_everything

    seed_everything(cfg.RNG_SEED, cfg.NUM_THREADS)

    def report(rec: dict) -> None:
        if rec["status"] == "failed":
            print(f"vidnl: cannot extract {rec['path']}: {rec['reason']}", file=sys.stderr, flush=True)

    start = time.time()
    out = extract_clip_features_from_config(cfg, args.weights, args.inputs, args.out, stride=stride,
                                            max_videos=args.max_videos, on_video=report)
    elapsed = time.time() - start
    who = f"rank {out['rank']}/{out['world_size']}: " if out["world_size"] > 1 else ""
    n = len(out["done"])
    print(f"{who}extracted {n} video{'s' * (n != 1)} ({out['windows']} windows, {n / max(out['time_s'], 1e-9):.2f} "
          f"videos/s), "
          f"{len(out['skipped'])} done earlier, {len(out['failed'])} failed, {len(out['pending'])} left "
          f"(--max-videos) in {elapsed:.2f} s", flush=True)
    index = out["index"]
    if index is None:  # another rank writes the index
        return 0
    print(f"features of {index['num_done']} of {index['num_videos']} videos in {args.out} ({index['feature_dim']}-d; "
          f"index.json, index.csv); {index['num_failed']} failed, {index['num_pending']} pending", flush=True)
    if index["num_failed"]:
        print(f"vidnl: {index['num_failed']} of {index['num_videos']} videos could not be read: "
              + ", ".join(f["path"] for f in index["failed"]), file=sys.stderr)
    if not index["num_done"]:
        listed = "" if index["num_pending"] else f" (listed in {os.path.join(args.out, 'index.json')})"
        raise ClipFeatureError(f"none of the {index['num_videos']} videos could be read{listed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
