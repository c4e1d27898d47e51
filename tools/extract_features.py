#!/usr/bin/env python
"""Re-ID embeddings of tracklets with a trained re-ID model, computed as the re-ID test does.

    python tools/extract_features.py --cfg configs/MARS/R50tp_SNL.yaml --weights W.pyth
                                     INPUT... --out features.npz [--json features.json] [KEY VALUE ...]

INPUT: a folder of frame images (one tracklet, frames in file-name order), a video file (one
tracklet, every frame), or a folder of such tracklets (its sub-folders and videos, recursively).
Writes ``features.npz`` with ``names`` (N) and ``features`` (N×D float32), plus ``num_frames``
(N); ``--json`` also writes names, features and the failures as JSON. A tracklet that cannot be
read is reported on stderr (and in the JSON) and left out. Exit status 0 when at least one
tracklet was embedded; 2 (one message, no traceback) for a missing config, weights file or
input, a config mistake, or when nothing could be embedded.
"""

from __future__ import annotations

import argparse
import io
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
                   help="folders of frames, videos, folders of tracklets; then config overrides KEY VALUE")
    p.add_argument("--cfg", dest="cfg_file", required=True, help="YAML config of the re-ID model (MODEL.TASK reid)")
    p.add_argument("--weights", required=True, help="checkpoint or weights file of the re-ID model")
    p.add_argument("--out", required=True, help="output .npz file (names, features N×D float32, num_frames)")
    p.add_argument("--json", default=None, help="also write names, features and failures to this JSON file")
    args = p.parse_intermixed_args(argv)
    args.inputs, args.overrides = split_overrides(args.items)
    args.overrides += opts
    return args


@cli_entry(tool="vidnl")
def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="vidnl: %(levelname)s: %(message)s", stream=sys.stderr)
    from vidnl.config import load_config
    from vidnl.errors import ConfigError

    check_files(args.weights, args.inputs, "tracklets", "folders of frames, video files or folders of them")
    cfg = load_config(args.cfg_file, args.overrides)
    if cfg.MODEL.TASK != "reid":
        raise ConfigError(f"MODEL.TASK is {cfg.MODEL.TASK!r} in {args.cfg_file}: feature extraction needs a re-ID "
                          f"config (MODEL.TASK reid, e.g. configs/MARS/R50tp_SNL.yaml)")
    import numpy as np

    from vidnl.engine.output_dir import write_bytes_atomic, write_json_atomic
    from vidnl.engine.setup import seed_everything
    from vidnl.reid_features import extract_features_from_config

    seed_everything(cfg.RNG_SEED, cfg.NUM_THREADS)
    start = time.time()
    out = extract_features_from_config(cfg, args.weights, args.inputs)
    elapsed = time.time() - start
    for f in out["failed"]:
        print(f"vidnl: cannot read tracklet {f['name']}: {f['reason']}", file=sys.stderr)
    n, total = len(out["names"]), len(out["names"]) + len(out["failed"])
    if n:
        names = np.array(out["names"], dtype=str)
        frames = np.array(out["num_frames"], dtype=np.int64)

        buffer = io.BytesIO()
        np.savez(buffer, names=names, features=out["features"], num_frames=frames)
        write_bytes_atomic(args.out, buffer.getbuffer())
    if args.json:
        doc = {"config": args.cfg_file, "weights": args.weights, "features_file": args.out if n else None,
               "feature_dim": int(out["features"].shape[1]), "names": out["names"],
               "num_frames": out["num_frames"], "features": out["features"].tolist(), "failed": out["failed"]}
        write_json_atomic(args.json, doc)
    if not n:
        raise UsageError(f"none of the {total} tracklets could be read; nothing written to {args.out}")
    print(f"{n} of {total} tracklets embedded ({out['features'].shape[1]}-d, REID.SEQ_LEN {cfg.REID.SEQ_LEN}) in "
          f"{elapsed:.2f} s; features in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
