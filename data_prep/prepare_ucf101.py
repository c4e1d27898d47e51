#!/usr/bin/env python
"""Turn the official UCF-101 download into vidnl's CSV files, one folder per split.

Expects the two official archives extracted side by side (paths configurable):

    ROOT/UCF-101/<Class>/v_<Class>_gXX_cYY.avi        (UCF101.rar)
    ROOT/ucfTrainTestlist/classInd.txt                 "1 ApplyEyeMakeup" (1-based)
    ROOT/ucfTrainTestlist/trainlist0{1,2,3}.txt        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1"
    ROOT/ucfTrainTestlist/testlist0{1,2,3}.txt         "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"

Writes, for each split N:

    OUT/split{N}/train.csv   the train list
    OUT/split{N}/val.csv     = the test list (UCF-101 has no separate validation set; the
                               papers report accuracy on the test list of each split)
    OUT/split{N}/test.csv    the test list
    OUT/classes.txt          "0 ApplyEyeMakeup" ... (labels are 0-based)
    OUT/missing.txt          listed videos that were not found (left out of the CSV files)

CSV lines are ``path label`` with paths relative to the CSV's folder (``--absolute``: absolute).
With ``--resize 256`` every video is re-encoded with PyAV to H.264 with short side 256 (same
frames, frame rate and timestamps; a video with a display rotation is written turned as
displayed, short side that of the displayed frame) into OUT/videos/<Class>/<name>.mp4, <name> as
on disk (parallel, resumable: finished files are skipped) and the CSV files point there; two
listed files that would get the same output (``v.avi`` and ``v.mp4``) are refused before
anything is written. Train with TRAIN.DATASET ucf101, DATA.PATH_TO_DATA_DIR OUT, DATA.SPLIT N.

    python data_prep/prepare_ucf101.py --root /data/ucf101 --out data/ucf101 [--resize 256]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vidnl.cli import run_cli  # noqa: E402
from data_prep import common  # noqa: E402
from vidnl.errors import DatasetError  # noqa: E402


def read_class_index(path: str) -> list[str]:
    """classInd.txt -> class names in label order (line "k Name" is label k-1)."""
    if not os.path.isfile(path):
        raise DatasetError(f"{path} not found (the classInd.txt of ucfTrainTestlist; set --splits-dir)")
    names = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) != len(names) + 1:
                raise DatasetError(f"{path}:{lineno}: expected '{len(names) + 1} <ClassName>', got {line.strip()!r}")
            names.append(parts[1])
    if not names:
        raise DatasetError(f"{path}: no classes")
    return names


def read_list(path: str, classes: dict[str, int]) -> list[tuple[str, int]]:
    """A train/test list -> [(relative video path, 0-based label)]. The label is the class of
    the video's folder; a train list's own (1-based) label must agree with it."""
    if not os.path.isfile(path):
        raise DatasetError(f"{path} not found (an official split list of ucfTrainTestlist)")
    out = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            rel = parts[0].replace("\\", "/")
            cls = rel.split("/")[0]
            if "/" not in rel or cls not in classes:
                raise DatasetError(f"{path}:{lineno}: expected '<Class>/<video>.avi' with a class of classInd.txt, "
                                   f"got {line.strip()!r}")
            label = classes[cls]
            if len(parts) > 2 or (len(parts) == 2 and (not parts[1].isdigit() or int(parts[1]) - 1 != label)):
                raise DatasetError(f"{path}:{lineno}: label {parts[1:]} does not match class {cls} "
                                   f"(classInd.txt: {label + 1})")
            out.append((rel, label))
    return out


class VideoFinder:
    """Exact path first; then a case-insensitive match in the class folder (the official lists
    and file names disagree in case for a few videos, e.g. HandStandPushups)."""

    def __init__(self, videos_dir: str):
        self.videos_dir = videos_dir
        self._folders: dict[str, dict[str, str]] = {}

    def find(self, rel: str) -> str | None:
        path = os.path.join(self.videos_dir, rel)
        if os.path.isfile(path):
            return path
        folder, name = os.path.split(path)
        if folder not in self._folders:
            self._folders[folder] = ({n.lower(): n for n in os.listdir(folder)} if os.path.isdir(folder) else {})
        actual = self._folders[folder].get(name.lower())
        return os.path.join(folder, actual) if actual else None


def _resize_job(job):
    src, dst, short_side = job
    if os.path.exists(dst):
        return src, None, True
    try:
        common.reencode_video(src, dst, short_side)
        return src, None, False
    except RuntimeError as e:
        return src, str(e), False


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="", help="folder holding UCF-101/ and ucfTrainTestlist/")
    p.add_argument("--videos", default="", help="the UCF-101 video folder (default ROOT/UCF-101)")
    p.add_argument("--splits-dir", default="", help="the ucfTrainTestlist folder (default ROOT/ucfTrainTestlist)")
    p.add_argument("--out", required=True, help="output folder (DATA.PATH_TO_DATA_DIR)")
    p.add_argument("--splits", type=int, nargs="+", default=[1, 2, 3], choices=[1, 2, 3], help="splits to write")
    p.add_argument("--resize", type=int, default=0, metavar="SHORT_SIDE",
                   help="re-encode every video to this short side (e.g. 256) into OUT/videos; 0: use the originals")
    p.add_argument("--workers", type=int, default=common.default_workers(), help="processes for --resize")
    p.add_argument("--absolute", action="store_true", help="write absolute video paths in the CSV files")
    a = p.parse_args(argv)
    videos_dir = a.videos or os.path.join(a.root, "UCF-101")
    splits_dir = a.splits_dir or os.path.join(a.root, "ucfTrainTestlist")
    if not (a.root or (a.videos and a.splits_dir)):
        p.error("give --root, or both --videos and --splits-dir")
    if not os.path.isdir(videos_dir):
        p.error(f"video folder not found: {videos_dir} (expected UCF-101/<Class>/<video>.avi; set --videos)")
    if a.resize < 0:
        p.error(f"--resize must be >= 0, got {a.resize}")
    start = time.time()
    try:
        names = read_class_index(os.path.join(splits_dir, "classInd.txt"))
        classes = {n: i for i, n in enumerate(names)}
        lists = {(n, part): read_list(os.path.join(splits_dir, f"{part}list0{n}.txt"), classes)
                 for n in a.splits for part in ("train", "test")}
    except DatasetError as e:
        print(f"prepare_ucf101: error: {e}", file=sys.stderr)
        return 2

    finder = VideoFinder(videos_dir)
    found: dict[str, str] = {}
    missing: dict[str, list[str]] = {}
    for (n, part), entries in lists.items():
        for rel, _ in entries:
            if rel not in found and rel not in missing:
                path = finder.find(rel)
                if path:
                    found[rel] = path
                else:
                    missing.setdefault(rel, [])
            if rel in missing:
                missing[rel].append(f"{part}list0{n}.txt")

    os.makedirs(a.out, exist_ok=True)
    failed: dict[str, str] = {}
    skipped = 0
    if a.resize:
        # one output per video file, named by its path below the video folder (two spellings of one
        # file in the lists share it); two files whose paths differ only in the extension are refused
        target = {path: os.path.join(a.out, "videos", os.path.splitext(os.path.relpath(path, videos_dir))[0] + ".mp4")
                  for path in found.values()}
        try:
            common.check_distinct_outputs(((path, target[path]) for path in sorted(target)), "re-encoded video",
                                          a.out, hint="rename one of the videos or leave it out of the lists")
        except DatasetError as e:
            print(f"prepare_ucf101: error: {e}", file=sys.stderr)
            return 2
        jobs = [(path, target[path], a.resize) for path in sorted(target)]
        failed_files: dict[str, str] = {}
        for src, error, was_done in common.parallel_map(_resize_job, jobs, a.workers, "re-encode"):
            skipped += was_done
            if error:
                failed_files[src] = error
        failed = {rel: failed_files[path] for rel, path in found.items() if path in failed_files}
        new_files = len(jobs) - skipped - len(failed_files)
        found = {rel: target[path] for rel, path in found.items() if rel not in failed}

    common.write_lines(os.path.join(a.out, "classes.txt"), [f"{i} {n}" for i, n in enumerate(names)])
    common.write_lines(os.path.join(a.out, "missing.txt"),
                       [f"{rel} (in {', '.join(sorted(set(w)))})" for rel, w in sorted(missing.items())] +
                       [f"{rel} (re-encoding failed: {why})" for rel, why in sorted(failed.items())])
    counts = {}
    for n in a.splits:
        split_dir = os.path.join(a.out, f"split{n}")
        for part, files in (("train", ("train.csv",)), ("test", ("val.csv", "test.csv"))):
            lines = [f"{common.csv_path_for(found[rel], split_dir, a.absolute)} {label}"
                     for rel, label in lists[(n, part)] if rel in found]
            for name in files:
                common.write_lines(os.path.join(split_dir, name), lines)
            counts[(n, part)] = (len(lines), len(lists[(n, part)]))

    print(f"UCF-101 ({len(names)} classes) from {videos_dir} -> {a.out}")
    for n in a.splits:
        tr, te = counts[(n, "train")], counts[(n, "test")]
        print(f"  split{n}: train {tr[0]}/{tr[1]} videos, test (= val) {te[0]}/{te[1]} videos")
    if a.resize:
        print(f"  re-encoded to short side {a.resize}: {new_files} new, {skipped} already done, "
              f"{len(failed_files)} failed")
    if missing or failed:
        print(f"  {len(missing)} listed videos not found, {len(failed)} could not be re-encoded; left out of the "
              f"CSV files, listed in {os.path.join(a.out, 'missing.txt')}")
        for rel in sorted(missing)[:5]:
            print(f"    missing: {rel}")
        for rel, why in sorted(failed.items())[:5]:
            print(f"    failed: {rel}: {why}")
    print(f"  done in {time.time() - start:.1f} s; train with TRAIN.DATASET ucf101 TEST.DATASET ucf101 "
          f"DATA.PATH_TO_DATA_DIR {a.out} DATA.SPLIT {a.splits[0]} MODEL.NUM_CLASSES {len(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
