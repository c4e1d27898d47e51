#!/usr/bin/env python
"""Predict the classes of videos with a trained model (the multi-view test of each video), or
what happens when in one long video (sliding windows).

    python tools/predict.py VIDEO_OR_FOLDER_OR_CSV... --cfg C.yaml --weights W.pyth
                            [--topk 5] [--json out.json] [--classes FILE] [KEY VALUE ...]
    python tools/predict.py VIDEO --cfg C.yaml --weights W.pyth --window-stride 1s
                            [--timeline out.json|out.csv] [--segments-threshold 0.5]
                            [--render out.mp4] [--timeline-png out.png] [--attention [BLOCK]]
                            [--query t,y,x] [KEY VALUE ...]

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

Sliding windows (--window-stride S; docs/predict.md "Long videos"): every window of one test
clip (DATA.NUM_FRAMES frames DATA.SAMPLING_RATE apart, the centre crop) starting every S along
the video, S in seconds ("1s", "0.5s": rounded to the nearest frame) or in frames ("16f"); each
frame is decoded once, windows are scored in batches of TEST.BATCH_SIZE (TEST.COMPILE applies).
--timeline writes every window's start, end and top-k classes (JSON: also every class's
probability and the segments; CSV: one row per window, the segments in NAME_segments.csv);
segments are runs of consecutive windows with the same top class at probability >=
--segments-threshold. --render writes the video with the labels drawn (and, with --attention,
a nonlocal block's attention as a heat map; --query t,y,x picks a query point, else the block's
mean attention); --timeline-png plots the top classes' probabilities over time.
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
    w = p.add_argument_group("long videos (sliding windows over one video)")
    w.add_argument("--window-stride", default=None, metavar="S",
                   help="score a window of one clip every S: seconds ('1s', '0.5s') or frames ('16f')")
    w.add_argument("--timeline", default=None, metavar="OUT.json|OUT.csv",
                   help="write the windows' times and top-k classes (and the segments) to this file")
    w.add_argument("--segments-threshold", type=float, default=0.5, metavar="P",
                   help="segments: consecutive windows whose top class is the same with probability >= P "
                        "(default 0.5)")
    w.add_argument("--render", default=None, metavar="OUT.mp4", help="write the video with the labels drawn on it")
    w.add_argument("--timeline-png", default=None, metavar="OUT.png", help="plot the top classes over time")
    w.add_argument("--attention", nargs="?", const="", default=None, metavar="BLOCK",
                   help="with --render: overlay a nonlocal block's attention (default: the last block)")
    w.add_argument("--query", default=None, metavar="t,y,x",
                   help="with --attention: the query point, fractions in [0, 1] of the clip's duration, height "
                        "and width (default: the block's mean attention)")
    args = p.parse_intermixed_args(argv)
    args.inputs, args.overrides = split_overrides(args.items)
    args.overrides += opts
    return args


def _check_output(flag: str, path: str, example: str) -> None:
    """UsageError for an output path that is a folder or lies under a file."""
    if os.path.isdir(path):
        raise UsageError(f"{flag} {path} is a folder; expected the path of the file to write, e.g. "
                         f"{os.path.join(path, example)}")
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(folder):  # the nearest existing folder above it (the root exists)
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise UsageError(f"{flag} {path}: {folder} is a file, not a folder; expected the path of the file to write")


WINDOW_OUTPUTS = (("--timeline", "timeline", (".json", ".csv"), "timeline.json"),
                  ("--render", "render", (".mp4", ".mkv", ".mov", ".avi"), "labels.mp4"),
                  ("--timeline-png", "timeline_png", (".png",), "timeline.png"))


def check_paths(args: argparse.Namespace) -> None:
    """UsageError for a folder given where a file is expected, an output path that cannot become
    a file, a bad --window-stride / --segments-threshold / --query, and window flags without
    --window-stride; checked before anything is loaded or scored."""
    from vidnl.long_video import parse_stride

    for flag, path, what in (("--cfg", args.cfg_file, "a YAML config file"), ("--weights", args.weights,
                             "a checkpoint file"), ("--classes", args.classes, "a class names file")):
        if path and os.path.isdir(path):
            raise UsageError(f"{flag} {path} is a folder; expected {what}")
    if args.json:
        _check_output("--json", args.json, "predictions.json")
    window_flags = [flag for flag, dest, _, _ in WINDOW_OUTPUTS if getattr(args, dest)]
    window_flags += ["--attention"] * (args.attention is not None) + ["--query"] * (args.query is not None)
    if args.window_stride is None:
        if window_flags:
            raise UsageError(f"{window_flags[0]} needs --window-stride (sliding windows over one video), e.g. "
                             f"--window-stride 1s")
        return
    try:
        args.stride = parse_stride(args.window_stride)
    except ValueError as e:
        raise UsageError(f"--window-stride: {e}") from None
    if not 0.0 <= args.segments_threshold <= 1.0:
        raise UsageError(f"--segments-threshold must be a probability in [0, 1], got {args.segments_threshold}")
    for flag, dest, exts, example in WINDOW_OUTPUTS:
        path = getattr(args, dest)
        if path:
            if not path.lower().endswith(exts):
                raise UsageError(f"{flag} {path}: expected a file name ending in {' or '.join(exts)}")
            _check_output(flag, path, example)
    if (args.attention is not None or args.query is not None) and not args.render:
        raise UsageError(f"{'--attention' if args.attention is not None else '--query'} draws on the rendered "
                         f"video: give --render OUT.mp4 too")
    if args.query is not None:
        if args.attention is None:
            args.attention = ""
        try:
            q = tuple(float(v) for v in args.query.split(","))
        except ValueError:
            q = ()
        if len(q) != 3 or not all(0.0 <= v <= 1.0 for v in q):
            raise UsageError(f"--query {args.query!r}: expected t,y,x, three numbers in [0, 1] (fractions of the "
                             f"clip's duration, the crop's height and width), e.g. 0.5,0.5,0.5")
        args.query = q


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

    if args.window_stride is not None:
        if len(videos) != 1:
            raise UsageError(f"--window-stride scores one video; {len(videos)} were given ({', '.join(videos[:3])}"
                             f"{', ...' if len(videos) > 3 else ''})")
        return predict_windows(args, cfg, videos[0], names, source)
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


def predict_windows(args: argparse.Namespace, cfg, video: str, names, source: str) -> int:
    """--window-stride: score the windows of ``video``, print the segments, write the outputs."""
    from vidnl.engine.inference import build_inference_model
    from vidnl.engine.output_dir import write_text_atomic
    from vidnl.errors import printable
    from vidnl.long_video import (merge_segments, predict_timeline, segments_csv, stride_in_frames, timeline_csv,
                                  video_fps)
    from vidnl.predict import build_predictor, window_settings

    from vidnl.data.decoding import DecodeError
    from vidnl.predict import PredictInputError

    settings = window_settings(cfg)
    try:
        fps = video_fps(video)
    except DecodeError as e:
        raise PredictInputError(f"cannot read {e}") from None
    try:
        stride = stride_in_frames(*args.stride, fps)
    except ValueError as e:
        raise UsageError(f"--window-stride {args.window_stride}: {e} ({video})") from None
    model = build_predictor(cfg, args.weights)
    heatmaps, on_batch = None, None
    if args.attention is not None:
        from vidnl.render import window_heatmaps

        heatmaps = []

        def on_batch(batch, probs):
            heatmaps.extend(window_heatmaps(model, batch.clips, mean=settings["mean"], std=settings["std"],
                                            block_name=args.attention or None, query=args.query))
    start = time.time()
    try:
        doc = predict_timeline(video, build_inference_model(cfg, model), stride_frames=stride, class_names=names,
                               topk=args.topk, on_batch=on_batch, **settings)
    except DecodeError as e:
        raise PredictInputError(f"cannot read {e}") from None
    elapsed = time.time() - start
    timeline = doc["windows"]
    segments = merge_segments(timeline, args.segments_threshold)
    doc = {**doc, "config": args.cfg_file, "weights": args.weights, "overrides": args.overrides,
           "class_names": names, "class_names_source": source, "segments_threshold": args.segments_threshold,
           "time_s": elapsed, "segments": segments}
    secs = f" = {stride / fps:.3g} s" if fps > 0 else ""

    def when(rec) -> str:
        if rec["start"] is None:
            return f"frames {rec['start_frame']}-{rec['end_frame']}"
        return f"{rec['start']:8.2f} - {rec['end']:8.2f} s"

    print(f"{printable(video)}: {len(timeline)} windows of {doc['span_frames']} frames every {stride} frames{secs} "
          f"({doc['num_video_frames']} frames at {fps:.3g} fps) in {elapsed:.2f} s "
          f"({len(timeline) / max(elapsed, 1e-9):.1f} windows/s; class names: {source})", flush=True)
    print(f"{len(segments)} segments (consecutive windows with the same top class at probability >= "
          f"{args.segments_threshold:g}):")
    for seg in segments:
        print(f"  {when(seg)}  {printable(seg['name'])}  (mean probability {seg['mean_prob']:.3f}, "
              f"{seg['num_windows']} windows)")
    if args.timeline:
        if args.timeline.lower().endswith(".csv"):
            write_text_atomic(args.timeline, timeline_csv(timeline))
            seg_path = os.path.splitext(args.timeline)[0] + "_segments.csv"
            write_text_atomic(seg_path, segments_csv(segments))
            print(f"timeline: {args.timeline}, segments: {seg_path}")
        else:
            write_json(args.timeline, doc)
            print(f"timeline: {args.timeline}")
    if args.json:
        write_json(args.json, doc)
    if args.timeline_png:
        from vidnl.render import plot_timeline

        plot_timeline(timeline, args.timeline_png, top_classes=min(5, cfg.MODEL.NUM_CLASSES), segments=segments,
                      title=os.path.basename(video), class_names=names)
        print(f"timeline plot: {args.timeline_png}")
    if args.render:
        from vidnl.render import render_video

        # where the windows' clips came from in each frame (the maps are drawn there)
        crop = (settings["short_side"], settings["crop_size"], settings["spatial_rounding"])
        out = render_video(video, timeline, args.render, topk=min(args.topk, 3), heatmaps=heatmaps, crop=crop,
                           backend=settings["backend"], threads=settings["threads"])
        print(f"rendered video: {args.render} ({out.get('frames')} frames)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
