#!/usr/bin/env python
"""Predict the classes of videos with a trained model (the multi-view test of each video).

    python tools/predict.py VIDEO_OR_FOLDER_OR_CSV... --cfg C.yaml --weights W.pyth
                            [--topk 5] [--json out.json] [--classes FILE] [KEY VALUE ...]

Inputs: video files, folders (the videos inside, by extension, recursively) and list files
(.csv / .txt: one video per line, the path first as in the dataset CSVs; a label after it is
ignored). Each video is decoded once and scored with TEST.NUM_ENSEMBLE_VIEWS x
TEST.NUM_SPATIAL_CROPS views aggregated by TEST.ENSEMBLE_METHOD, exactly as the test of
tools/run_net.py scores it. Class names come from --classes (lines 'index name' or one name per
line), else DATA.PATH_TO_DATA_DIR/classes.txt, else the class indices are printed.

A video that cannot be read, or whose scores are not finite, is reported on stderr and in the
JSON file (strict JSON: no NaN or Infinity); the others are scored. Exit status 0 when at least
one video was scored; 2 (one message, no traceback) for a missing config, weights file or input,
a folder where a file is expected (--cfg, --weights, --classes, --json), weights holding NaN or
inf, a config mistake, or when no video could be scored.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vidnl.cli import UsageError, check_files, cli_entry, split_opts_flag, split_overrides  # noqa: E402

def parse_args(argv=None) -> argparse.Namespace:
    argv, opts = split_opts_flag(argv)  # everything after --opts is KEY VALUE overrides
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("items", nargs="*", metavar="VIDEO_OR_FOLDER_OR_CSV ... [KEY VALUE ...]",
                   help="videos, folders of videos, lists of videos; then config overrides KEY VALUE")
    p.add_argument("--cfg", dest="cfg_file", required=True, help="YAML config the model was trained with")
    p.add_argument("--weights", required=True, help="checkpoint or weights file (any MODEL.WEIGHTS_FORMAT)")
    p.add_argument("--topk", type=int, default=5, help="classes shown per video (default 5)")
    p.add_argument("--json", default=None, help="write all results to this JSON file")
    p.add_argument("--classes", default=None, help="class names: lines 'index name' or one name per line")
    args = p.parse_intermixed_args(argv)
    args.inputs, args.overrides = split_overrides(args.items)
    args.overrides += opts
    return args


def check_paths(args: argparse.Namespace) -> None:
    """UsageError for a folder given where a file is expected, and for a --json path that
    cannot become a file; checked before anything is loaded or scored."""
    for flag, path, what in (("--cfg", args.cfg_file, "a YAML config file"), ("--weights", args.weights,
                             "a checkpoint file"), ("--classes", args.classes, "a class names file")):
        if path and os.path.isdir(path):
            raise UsageError(f"{flag} {path} is a folder; expected {what}")
    if args.json:
        if os.path.isdir(args.json):
            raise UsageError(f"--json {args.json} is a folder; expected the path of the JSON file to write, e.g. "
                             f"{os.path.join(args.json, 'predictions.json')}")
        folder = os.path.dirname(os.path.abspath(args.json))
        while not os.path.exists(folder):  # the nearest existing folder above it (the root exists)
            folder = os.path.dirname(folder)
        if not os.path.isdir(folder):
            raise UsageError(f"--json {args.json}: {folder} is a file, not a folder; expected the path of the JSON "
                             f"file to write")


def write_json(path: str, doc: dict) -> None:
    """Write ``doc`` to ``path`` as strict JSON (a NaN or an infinity is a ValueError: predict
    lets none through), atomically (no partial file, no temporary file left)."""
    from vidnl.engine.output_dir import write_text_atomic

    write_text_atomic(path, json.dumps(doc, indent=1, allow_nan=False))


def format_result(res: dict) -> str:
    """The lines printed for one video."""
    if "error" in res:
        return f"{res['path']}: {res['error']}"
    width = max(len(t["name"]) for t in res["topk"])
    lines = [f"{res['path']}  ({res['views']} views, {res['ensemble']}, {res['time_s']:.2f} s)"]
    lines += [f"  {r}. {t['name']:<{width}}  {t['prob']:.4f}  (score {t['score']:.4f})"
              for r, t in enumerate(res["topk"], 1)]
    lines += [f"  note: {n}" for n in res.get("notes", ())]
    return "\n".join(lines)


@cli_entry(tool="vidnl")
def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="vidnl: %(levelname)s: %(message)s", stream=sys.stderr)
    from vidnl.config import load_config

    check_paths(args)
    check_files(args.weights, args.inputs, "videos", "video files, folders or .csv/.txt lists")
    if args.topk < 1:
        raise UsageError(f"--topk must be at least 1, got {args.topk}")
    cfg = load_config(args.cfg_file, args.overrides)
    from vidnl.predict import PredictInputError, expand_inputs, predict_from_config, resolve_class_names

    d = cfg.DATA
    videos = expand_inputs(args.inputs, path_prefix=d.PATH_PREFIX, separator=d.PATH_LABEL_SEPARATOR,
                           frame_template=d.FRAME_TEMPLATE)
    names, source = resolve_class_names(cfg.MODEL.NUM_CLASSES, args.classes, d.PATH_TO_DATA_DIR)
    from vidnl.engine.setup import seed_everything

    seed_everything(cfg.RNG_SEED, cfg.NUM_THREADS)
    start = time.time()

    def show(res: dict) -> None:
        if "error" in res:
            print(f"vidnl: {format_result(res)}", file=sys.stderr)
        else:
            print(format_result(res), flush=True)

    results = predict_from_config(cfg, args.weights, videos, class_names=names, topk=args.topk, on_result=show)
    elapsed = time.time() - start
    scored = [r for r in results if "error" not in r]
    failed = [r for r in results if "error" in r]
    print(f"scored {len(scored)} of {len(results)} videos in {elapsed:.2f} s "
          f"({cfg.TEST.NUM_ENSEMBLE_VIEWS} x {cfg.TEST.NUM_SPATIAL_CROPS} views, {cfg.TEST.ENSEMBLE_METHOD}; "
          f"class names: {source})", flush=True)
    if args.json:
        out = {"config": args.cfg_file, "weights": args.weights, "overrides": args.overrides,
               "ensemble": cfg.TEST.ENSEMBLE_METHOD,
               "views_per_video": cfg.TEST.NUM_ENSEMBLE_VIEWS * cfg.TEST.NUM_SPATIAL_CROPS,
               "class_names": names, "class_names_source": source, "num_scored": len(scored),
               "num_failed": len(failed), "time_s": elapsed, "videos": results,
               "failed_videos": [{"path": r["path"], "reason": r["error"]} for r in failed]}
        write_json(args.json, out)
    if failed:
        print(f"vidnl: {len(failed)} of {len(results)} videos could not be scored: "
              + ", ".join(r["path"] for r in failed), file=sys.stderr)
    if not scored:
        raise PredictInputError(f"none of the {len(results)} videos could be scored"
                                + (f" (listed in {args.json})" if args.json else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
