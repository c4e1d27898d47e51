#!/usr/bin/env python
"""Decode videos into frame folders (DATA.SOURCE frames) and write CSV files that list them.

For each video of the given CSV files (or below --videos), every decoded frame is written as
OUT/<key>/img_00001.jpg, img_00002.jpg, ... (--template, numbered from 1), short side scaled
to --short-side if given; <key> is the video's path relative to its CSV's folder (or
--path-prefix) without extension, leading "../" dropped. Two videos that would get one folder
(``x/v.mp4`` and ``x/v.avi``) are refused before anything is written. A ``done`` file is
written last, so a second run skips finished videos (resumable); parallel over videos. A video
with a display rotation (a phone video) is written as displayed, the way vidnl decodes it: the
frames turned, --short-side that of the displayed frame.

For each input CSV, a CSV of the same name listing the frame folders is written to --csv-out
(default OUT); train with DATA.PATH_TO_DATA_DIR <csv-out> DATA.SOURCE frames. For UCF-101, run
once per split with --csv-out OUT/split{N} (the frames of videos already done are reused).

    python data_prep/extract_frames.py --csv data/ucf101/split1/*.csv --out data/ucf101_frames --csv-out data/ucf101_frames/split1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vidnl.cli import run_cli  # noqa: E402
from data_prep import common  # noqa: E402
from data_prep.check_videos import parse_csv  # noqa: E402
from vidnl.data.decoding import (  # noqa: E402
    DEFAULT_FRAME_TEMPLATE, IDENTITY, NoVideoStream, frame_orientation, orient,
)
from vidnl.data.flow import flow_key  # noqa: E402
from vidnl.errors import DatasetError  # noqa: E402

DONE = "done"


def extract_frames(path: str, out_dir: str, template: str = DEFAULT_FRAME_TEMPLATE, short_side: int = 0,
                   quality: int = 95) -> int:
    """Write every frame of video ``path`` as ``out_dir/template.format(k)`` (k from 1) with
    PyAV + Pillow, as displayed (a display rotation applied, ``short_side`` that of the displayed
    frame: what ``read_frames`` returns); returns the frame count. Raises RuntimeError when the
    video cannot be read."""
    import av
    from PIL import Image

    os.makedirs(out_dir, exist_ok=True)
    n, size = 0, None
    try:
        with av.open(path) as container:
            stream = common.video_stream(container)
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                if size is None:  # the display rotation and the size, from the first frame
                    orientation = frame_orientation(frame)
                    stored, size = common.display_sizes(frame.width, frame.height, orientation, short_side or None)
                n += 1
                image = frame.reformat(width=stored[0], height=stored[1], format="rgb24")
                image = image.to_image() if orientation == IDENTITY else Image.fromarray(
                    orient(image.to_ndarray(), orientation))
                image.save(os.path.join(out_dir, template.format(n)), quality=quality)
    except NoVideoStream as e:
        raise RuntimeError(str(e)) from None
    except Exception as e:  # PyAV / Pillow errors
        raise RuntimeError(f"{type(e).__name__}: {e}") from None
    if n == 0:
        raise RuntimeError("no frames")
    with open(os.path.join(out_dir, DONE), "w") as f:
        json.dump({"num_frames": n, "template": template, "width": size[0], "height": size[1]}, f)
    return n


def _job(job):
    path, out_dir, template, short_side, quality = job
    if os.path.exists(os.path.join(out_dir, DONE)):
        return path, None, None
    try:
        return path, None, extract_frames(path, out_dir, template, short_side, quality)
    except RuntimeError as e:
        return path, str(e), None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--csv", nargs="*", default=[], help="vidnl CSV files (path label)")
    p.add_argument("--videos", default="", help="or: a folder; every video below it (no CSV written)")
    p.add_argument("--out", required=True, help="folder of the frame folders")
    p.add_argument("--csv-out", default="", help="where the CSV files listing the frame folders go (default OUT)")
    p.add_argument("--path-prefix", default="", help="DATA.PATH_PREFIX of the CSV files (default: their folder)")
    p.add_argument("--template", default=DEFAULT_FRAME_TEMPLATE, help="frame file names (DATA.FRAME_TEMPLATE)")
    p.add_argument("--short-side", type=int, default=0, help="resize frames to this short side (0: keep)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality")
    p.add_argument("--workers", type=int, default=common.default_workers())
    a = p.parse_args(argv)
    if not a.csv and not a.videos:
        p.error("give --csv FILE... or --videos DIR")
    try:
        if a.template.format(1) == a.template.format(2):
            raise ValueError("no field for the frame number")
    except (IndexError, KeyError, ValueError) as e:
        p.error(f"--template {a.template!r} must have one field for the frame number, like img_{{:05d}}.jpg ({e})")
    start = time.time()
    csv_out = a.csv_out or a.out
    pairs: list[tuple[str, str]] = []  # (video, frame folder)
    tables = []
    for csv_file in a.csv:
        if not os.path.isfile(csv_file):
            p.error(f"CSV file not found: {csv_file}")
        root = a.path_prefix or os.path.dirname(os.path.abspath(csv_file))
        entries = [e for e in parse_csv(csv_file, a.path_prefix) if not e["error"]]
        pairs += [(os.path.abspath(e["path"]), os.path.join(a.out, flow_key(e["path"], root))) for e in entries]
        tables.append((csv_file, entries))
    if a.videos:
        if not os.path.isdir(a.videos):
            p.error(f"video folder not found: {a.videos}")
        pairs += [(os.path.abspath(path), os.path.join(a.out, flow_key(path, a.videos)))
                  for path in common.list_files(a.videos)]
    names = [os.path.basename(c) for c, _ in tables]
    try:
        # the frame folder is the video's path without its extension: v.mp4 and v.avi would share one
        folders: dict[str, str] = {}  # video -> frame folder (the first, when its CSVs give it several)
        for video, folder in pairs:
            folders.setdefault(video, folder)
        common.check_distinct_outputs(
            folders.items(), "frame folder", a.out, reserved=(DONE,),
            hint="rename one of the videos (frame folders are named by the path without its extension)")
        common.check_distinct_outputs(
            [(c, os.path.join(csv_out, n)) for c, n in zip(a.csv, names)], "CSV file", csv_out,
            hint="run once per CSV folder with its own --csv-out")
        for csv_file, name in zip(a.csv, names):
            if os.path.abspath(os.path.join(csv_out, name)) in {os.path.abspath(c) for c in a.csv}:
                raise DatasetError(f"the CSV file written for {csv_file} would overwrite the input "
                                   f"{os.path.join(csv_out, name)}; give another --csv-out")
    except DatasetError as e:
        print(f"extract_frames: error: {e}", file=sys.stderr)
        return 2

    jobs = [(v, d, a.template, a.short_side, a.quality) for v, d in sorted(folders.items())]
    failed, done, skipped, frames = {}, 0, 0, 0
    for path, error, n in common.parallel_map(_job, jobs, a.workers, "frames"):
        if error:
            failed[path] = error
        elif n is None:
            skipped += 1
        else:
            done, frames = done + 1, frames + n
    for csv_file, entries in tables:
        lines = [f"{common.csv_path_for(folders[os.path.abspath(e['path'])], csv_out, False)} {e['label']}"
                 for e in entries if os.path.abspath(e["path"]) not in failed]
        common.write_lines(os.path.join(csv_out, os.path.basename(csv_file)), lines)
    print(f"frames of {len(jobs)} videos -> {a.out} in {time.time() - start:.1f} s: {done} extracted ({frames} "
          f"frames), {skipped} already done, {len(failed)} failed (left out of the CSV files)")
    for path, why in sorted(failed.items())[:10]:
        print(f"  failed: {path}: {why}")
    if tables:
        print(f"CSV files in {csv_out}: {', '.join(names)}; train with DATA.PATH_TO_DATA_DIR {csv_out} "
              f"DATA.SOURCE frames DATA.FRAME_TEMPLATE {a.template!r}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
