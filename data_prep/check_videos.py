#!/usr/bin/env python
"""Check that every video of a vidnl CSV file can be decoded; write a clean CSV and a report.

For each ``path label`` line: the file must exist and be non-empty, open with the decoder
training uses (--backend auto: decord when installed, else PyAV; decord falls back to PyAV for a
file it cannot read; --backend pyav: PyAV only), report a frame count,
and give its first, middle and last frame (--full: every frame). A video with clearly fewer
frames than its container header announces (e.g. an AVI cut off mid-download, which FFmpeg still
opens) is reported as truncated. Frame folders (DATA.SOURCE frames) are checked by reading those
frames. Runs in parallel over videos.

Writes (defaults next to the CSV):

    <name>_clean.csv    only the good lines, unchanged (relative paths are rewritten when the
                        clean CSV goes to another folder)
    <name>_report.json  {"checked", "good", "bad": [{"line", "path", "reason"}], "videos": [...]}

Exits 0 even when some videos are bad (the count is printed); 2 when the CSV cannot be read.

    python data_prep/check_videos.py data/ucf101/split1/train.csv
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
from vidnl.data.datasets.video_csv import read_text_lines  # noqa: E402
from vidnl.errors import DatasetError  # noqa: E402
from vidnl.data.decoding import (  # noqa: E402
    BACKEND_CHOICES, DECORD_INSTALL_HINT, DEFAULT_FRAME_TEMPLATE, DecodeError, decord_import_error, read_frames,
)


def parse_csv(path: str, path_prefix: str = "", separator: str = " ") -> list[dict]:
    """Lines of a ``path label`` CSV: {line, text, raw_path, path, label, error}; malformed
    lines get an ``error`` instead of raising (they are reported as bad)."""
    base = path_prefix or os.path.dirname(os.path.abspath(path))
    out = []
    for lineno, line in enumerate(read_text_lines(path), 1):  # UTF-8, BOM dropped; else one error
        text = line.rstrip("\n").rstrip("\r")
        if not text.strip():
            continue
        parts = text.strip().rsplit(separator, 1) if separator != " " else text.strip().rsplit(None, 1)
        entry = {"line": lineno, "text": text, "raw_path": parts[0].strip(), "label": None, "error": None}
        entry["path"] = entry["raw_path"] if os.path.isabs(entry["raw_path"]) else os.path.join(base, entry["raw_path"])
        if len(parts) != 2:
            entry["error"] = f"malformed line, expected 'path{separator}label': {text!r}"
        else:
            try:
                entry["label"] = int(parts[1])
                if entry["label"] < 0:
                    raise ValueError
            except ValueError:
                entry["error"] = f"label must be an integer >= 0, got {parts[1]!r}"
        out.append(entry)
    return out


def check_video(path: str, backend: str = "auto", full: bool = False, source: str = "video",
                frame_template: str = DEFAULT_FRAME_TEMPLATE) -> dict:
    """Decode the first, middle and last frame (``full``: all) of one video or frame folder.
    -> {"ok", "reason", "num_frames", "width", "height", "backend"}."""
    def pick(n):
        return np.arange(n) if full else np.unique([0, n // 2, n - 1])

    try:
        d = read_frames(path, pick, backend, 1, source=source, frame_template=frame_template)
    except DecodeError as e:
        return {"ok": False, "reason": e.reason, "num_frames": 0, "width": 0, "height": 0, "backend": None}
    result = {"ok": True, "reason": "", "num_frames": int(d.num_frames), "width": int(d.frames.shape[2]),
              "height": int(d.frames.shape[1]), "backend": d.backend}
    if d.backend == "frames":
        return result
    header = _header_frames(path)
    # PyAV's count is the header's; count the frames that really decode. decord indexes the packets.
    present = _pyav_decodable_frames(path, d.num_frames) if d.backend == "pyav" else d.num_frames
    result["header_frames"] = header
    result["num_frames"] = min(present, d.num_frames)
    if header and present < header - max(2, 0.02 * header):  # a frame or two less happens in good files
        result.update(ok=False, reason=f"truncated: the container says {header} frames, only {present} are there")
    return result


def _header_frames(path: str) -> int:
    """Frame count written in the container (0 when it has none, e.g. WebM, or cannot say)."""
    import av

    try:
        with av.open(path) as c:
            return int(c.streams.video[0].frames or 0)
    except Exception:  # the decode above worked; a header we cannot read just means "unknown"
        return 0


def _pyav_decodable_frames(path: str, limit: int) -> int:
    import av

    n = 0
    try:
        with av.open(path) as c:
            for _ in c.decode(video=0):
                n += 1
                if n >= limit:
                    break
    except Exception:  # decoding stops at the damage; what was decoded counts
        pass
    return n


def _job(job):
    entry, backend, full, source, template = job
    if entry["error"]:
        return {"ok": False, "reason": entry["error"], "num_frames": 0, "width": 0, "height": 0, "backend": None}
    return check_video(entry["path"], backend, full, source, template)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("csv", help="a vidnl CSV file (path label)")
    p.add_argument("--out-csv", default="", help="clean CSV (default <csv>_clean.csv)")
    p.add_argument("--report", default="", help="report, .json or .txt (default <csv>_report.json)")
    p.add_argument("--path-prefix", default="", help="DATA.PATH_PREFIX: folder relative paths are joined to "
                                                     "(default: the CSV's folder)")
    p.add_argument("--separator", default=" ", help="DATA.PATH_LABEL_SEPARATOR")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default="auto", help="DATA.DECODING_BACKEND")
    p.add_argument("--source", choices=("video", "frames"), default="video", help="DATA.SOURCE")
    p.add_argument("--frame-template", default=DEFAULT_FRAME_TEMPLATE, help="DATA.FRAME_TEMPLATE")
    p.add_argument("--full", action="store_true", help="decode every frame, not only first/middle/last")
    p.add_argument("--workers", type=int, default=common.default_workers())
    a = p.parse_args(argv)
    if not os.path.isfile(a.csv):
        print(f"check_videos: error: CSV file not found: {a.csv}", file=sys.stderr)
        return 2
    if a.backend == "decord" and decord_import_error():
        print(f"check_videos: error: --backend decord, but decord cannot be imported ({decord_import_error()}); "
              f"install it with {DECORD_INSTALL_HINT}, or use --backend pyav or auto", file=sys.stderr)
        return 2
    stem = os.path.splitext(a.csv)[0]
    out_csv = a.out_csv or stem + "_clean.csv"
    report_path = a.report or stem + "_report.json"
    for path, other in ((report_path, a.csv), (report_path, out_csv)):
        if os.path.abspath(path) == os.path.abspath(other):
            print(f"check_videos: error: the report {report_path} would overwrite "
                  f"{'the input CSV' if other == a.csv else 'the clean CSV'} {other}; give another --report",
                  file=sys.stderr)
            return 2
    start = time.time()
    try:
        entries = parse_csv(a.csv, a.path_prefix, a.separator)
    except DatasetError as e:
        print(f"check_videos: error: {e}", file=sys.stderr)
        return 2
    jobs = [(e, a.backend, a.full, a.source, a.frame_template) for e in entries]
    results = list(common.parallel_map(_job, jobs, a.workers, "check"))

    same_dir = os.path.abspath(os.path.dirname(out_csv)) == os.path.abspath(os.path.dirname(a.csv))
    clean, bad, videos = [], [], []
    for e, r in zip(entries, results):
        videos.append({"line": e["line"], "path": e["path"], **r})
        if not r["ok"]:
            bad.append({"line": e["line"], "path": e["path"], "reason": r["reason"]})
        elif same_dir or a.path_prefix or os.path.isabs(e["raw_path"]):
            clean.append(e["text"])
        else:
            clean.append(f"{os.path.relpath(e['path'], os.path.dirname(os.path.abspath(out_csv)))}"
                         f"{a.separator}{e['label']}")
    common.write_lines(out_csv, clean)
    report = {"csv": os.path.abspath(a.csv), "checked": len(entries), "good": len(clean), "bad_count": len(bad),
              "bad": bad, "videos": videos}
    os.makedirs(os.path.dirname(os.path.abspath(report_path)), exist_ok=True)
    with open(report_path, "w") as f:
        if report_path.endswith(".json"):
            json.dump(report, f, indent=1)
        else:
            f.write(f"{a.csv}: {len(entries)} checked, {len(clean)} good, {len(bad)} bad\n")
            f.writelines(f"line {b['line']}: {b['path']}: {b['reason']}\n" for b in bad)
    print(f"checked {len(entries)} videos of {a.csv} in {time.time() - start:.1f} s: {len(clean)} good, "
          f"{len(bad)} bad")
    for b in bad[:10]:
        print(f"  bad: line {b['line']}: {b['path']}: {b['reason']}")
    if len(bad) > 10:
        print(f"  ... {len(bad) - 10} more")
    print(f"clean CSV: {out_csv}\nreport: {report_path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
