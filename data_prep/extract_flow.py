#!/usr/bin/env python
"""Extract dense optical flow of every video, stored the way the two-stream community does.

For each video (listed in vidnl CSV files, or all videos below a folder), for each pair of
consecutive decoded frames k-1 -> k (k = 1..n-1):

    OUT/<key>/flow_x_0000k.jpg, flow_y_0000k.jpg   grey JPEGs: flow clipped to ±BOUND px and
                                                   mapped linearly to 0..255 (--format jpg)
    OUT/<key>/flow_0000k.npz                       array "flow" 2×H×W float16 (--format npz)
    OUT/<key>/done                                 JSON (format, bound, num_pairs, size), written last

<key> is the video's path relative to the CSV's folder (or --path-prefix, the same rule as
DATA.PATH_PREFIX; with --videos, relative to that folder) without its extension, leading
"../" dropped; the datasets find the flow there with DATA.FLOW_DIR OUT. Two videos that would
get one folder (``x/v.mp4`` and ``x/v.avi``) are refused before anything is written. Flow:
OpenCV Farneback (TV-L1 with --method tvl1 when opencv-contrib's cv2.optflow is installed), on
grey frames, optionally resized to --short-side first. Parallel over videos; resumable: videos
whose ``done`` marker exists are skipped, unfinished ones are redone.

A video with a display rotation (a phone video) is used as displayed, the way vidnl decodes its
RGB frames: the frames are turned before the flow is computed, so the flow's size and its x/y
components are those of the displayed frame (--short-side too refers to the displayed frame).

    python data_prep/extract_flow.py --csv data/ucf101/split1/train.csv data/ucf101/split1/test.csv --out data/ucf101_flow
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vidnl.cli import run_cli  # noqa: E402
from data_prep import common  # noqa: E402
from data_prep.check_videos import parse_csv  # noqa: E402
from vidnl.data.decoding import (  # noqa: E402
    DEFAULT_FRAME_TEMPLATE, IDENTITY, count_frame_files, frame_orientation, orient,
)
from vidnl.data.flow import (DEFAULT_BOUND, DONE_NAME, FLOW_FORMATS, flow_file_names, flow_key,  # noqa: E402
                             flow_methods, make_flow_fn, quantize)
from vidnl.engine.output_dir import write_json_atomic  # noqa: E402
from vidnl.errors import DatasetError  # noqa: E402


def iter_grey_frames(path: str, short_side: int = 0, source: str = "video",
                     frame_template: str = DEFAULT_FRAME_TEMPLATE):
    """Yield the decoded frames of a video (or frame folder) in order, as grey uint8 H×W,
    with the short side scaled to ``short_side`` (0: unchanged); a video's frames as displayed
    (its display rotation applied, ``short_side`` that of the displayed frame)."""
    if source == "frames" or os.path.isdir(path):
        import cv2
        from PIL import Image

        for i in range(count_frame_files(path, frame_template)):
            with Image.open(os.path.join(path, frame_template.format(i + 1))) as im:
                grey = np.asarray(im.convert("L"))
            if short_side:
                w, h = common.scaled_size(grey.shape[1], grey.shape[0], short_side)
                grey = cv2.resize(grey, (w, h), interpolation=cv2.INTER_AREA)
            yield grey
        return
    import av

    with av.open(path) as container:
        stream = common.video_stream(container)
        stream.thread_type = "AUTO"
        size = None
        for frame in container.decode(stream):
            if size is None:  # the display rotation and the size, from the first frame
                orientation = frame_orientation(frame)
                stored, size = common.display_sizes(frame.width, frame.height, orientation, short_side or None)
            grey = frame.reformat(width=stored[0], height=stored[1], format="gray").to_ndarray()
            # turned before the flow is computed: its x/y components are then the displayed axes
            yield grey if orientation == IDENTITY else orient(grey[..., None], orientation)[..., 0]


def is_done(out_dir: str, fmt: str) -> bool:
    try:
        with open(os.path.join(out_dir, DONE_NAME)) as f:
            return json.load(f).get("format") == fmt
    except (OSError, ValueError):
        return False


def extract_video(path: str, out_dir: str, fmt: str = "jpg", bound: float = DEFAULT_BOUND,
                  method: str = "farneback", short_side: int = 0, source: str = "video",
                  frame_template: str = DEFAULT_FRAME_TEMPLATE, jpeg_quality: int = 95) -> dict:
    """Write the flow of one video to ``out_dir`` (see the module doc); returns its metadata.
    Raises RuntimeError when the video cannot be read or has fewer than 2 frames."""
    import cv2

    cv2.setNumThreads(1)
    flow_fn = make_flow_fn(method)
    os.makedirs(out_dir, exist_ok=True)
    prev, pairs, shape = None, 0, None
    try:
        for grey in iter_grey_frames(path, short_side, source, frame_template):
            if prev is not None:
                flow = flow_fn(prev, grey)  # H×W×2 (x, y) pixels
                pairs += 1
                names = [os.path.join(out_dir, n) for n in flow_file_names(pairs, fmt)]
                if fmt == "jpg":
                    for name, plane in zip(names, (flow[..., 0], flow[..., 1])):
                        if not cv2.imwrite(name, quantize(plane, bound), [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]):
                            raise RuntimeError(f"cannot write {name}")
                else:
                    np.savez_compressed(names[0], flow=np.moveaxis(flow, -1, 0).astype(np.float16))
            prev, shape = grey, grey.shape
    except RuntimeError:
        raise
    except Exception as e:  # PyAV / Pillow / OpenCV errors
        raise RuntimeError(f"{type(e).__name__}: {e}") from None
    if pairs == 0:
        raise RuntimeError("fewer than 2 frames: no flow")
    meta = {"format": fmt, "bound": bound, "num_pairs": pairs, "num_frames": pairs + 1, "height": int(shape[0]),
            "width": int(shape[1]), "method": method, "video": os.path.abspath(path)}
    write_json_atomic(os.path.join(out_dir, DONE_NAME), meta)
    return meta


def _job(job):
    path, out_dir, kwargs = job
    if is_done(out_dir, kwargs["fmt"]):
        return path, None, None
    try:
        return path, None, extract_video(path, out_dir, **kwargs)
    except RuntimeError as e:
        return path, str(e), None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--csv", nargs="*", default=[], help="vidnl CSV files (path label) listing the videos")
    p.add_argument("--videos", default="", help="or: a folder; every video below it")
    p.add_argument("--out", required=True, help="flow folder (DATA.FLOW_DIR)")
    p.add_argument("--path-prefix", default="", help="DATA.PATH_PREFIX of the CSV files (default: their folder)")
    p.add_argument("--format", choices=FLOW_FORMATS, default="jpg", help="jpg: quantised grey JPEGs; npz: float16")
    p.add_argument("--bound", type=float, default=DEFAULT_BOUND, help="jpg: flow clipped to ±BOUND pixels")
    p.add_argument("--method", default="farneback", help=f"flow algorithm, here one of {', '.join(flow_methods())}")
    p.add_argument("--short-side", type=int, default=0, help="resize frames to this short side first (0: keep)")
    p.add_argument("--source", choices=("video", "frames"), default="video", help="DATA.SOURCE of the CSV paths")
    p.add_argument("--frame-template", default=DEFAULT_FRAME_TEMPLATE, help="DATA.FRAME_TEMPLATE")
    p.add_argument("--jpeg-quality", type=int, default=95)
    p.add_argument("--workers", type=int, default=common.default_workers())
    a = p.parse_args(argv)
    if not a.csv and not a.videos:
        p.error("give --csv FILE... or --videos DIR")
    if a.method not in flow_methods():
        p.error(f"--method {a.method!r} is not available here; choose one of {', '.join(flow_methods())}"
                + (" (TV-L1 needs opencv-contrib-python)" if a.method == "tvl1" else ""))
    if a.bound <= 0:
        p.error(f"--bound must be > 0, got {a.bound}")
    start = time.time()

    sources = []
    for csv_file in a.csv:
        if not os.path.isfile(csv_file):
            p.error(f"CSV file not found: {csv_file}")
        root = a.path_prefix or os.path.dirname(os.path.abspath(csv_file))
        sources += [(e["path"], root) for e in parse_csv(csv_file, a.path_prefix) if not e["error"]]
    if a.videos:
        if not os.path.isdir(a.videos):
            p.error(f"video folder not found: {a.videos}")
        sources += [(path, a.videos) for path in common.list_files(a.videos)]
    try:
        # the flow folder is the video's path without its extension (what the datasets look up); a video
        # listed below two roots gets both folders
        folders = common.check_distinct_outputs(
            [(os.path.abspath(path), os.path.join(a.out, flow_key(path, root))) for path, root in sources],
            "flow folder", a.out, reserved=(DONE_NAME, DONE_NAME + ".tmp"),
            hint="rename one of the videos (flow folders are named by the path without its extension)")
    except DatasetError as e:
        print(f"extract_flow: error: {e}", file=sys.stderr)
        return 2

    kwargs = dict(fmt=a.format, bound=a.bound, method=a.method, short_side=a.short_side, source=a.source,
                  frame_template=a.frame_template, jpeg_quality=a.jpeg_quality)
    jobs = [(path, out_dir, kwargs) for out_dir, path in sorted(folders.items())]
    done = skipped = pairs = 0
    failed = []
    for path, error, meta in common.parallel_map(_job, jobs, a.workers, "flow"):
        if error:
            failed.append(f"{path}: {error}")
        elif meta is None:
            skipped += 1
        else:
            done += 1
            pairs += meta["num_pairs"]
    os.makedirs(a.out, exist_ok=True)
    common.write_lines(os.path.join(a.out, "failed.txt"), failed)
    print(f"optical flow ({a.method}, {a.format}{f', ±{a.bound:g} px' if a.format == 'jpg' else ''}) of "
          f"{len(jobs)} videos -> {a.out} in {time.time() - start:.1f} s: {done} extracted ({pairs} frame pairs), "
          f"{skipped} already done, {len(failed)} failed")
    for line in failed[:10]:
        print(f"  failed: {line}")
    if failed:
        print(f"  all failures: {os.path.join(a.out, 'failed.txt')}")
    print(f"use with DATA.FLOW_DIR {a.out} DATA.FLOW_FORMAT {a.format} DATA.MODALITY flow (or rgb_flow)")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
