#!/usr/bin/env python
"""Turn downloaded Kinetics-400/600/700 videos and the official annotation CSVs into vidnl's
train/val/test CSV files.

Annotations: the official CSV files (header ``label,youtube_id,time_start,time_end,split``,
extra columns such as ``is_cc`` ignored; a test file without ``label`` is reported and not
written), given one by one (--train/--val/--test) or as a folder (--annotations) whose *.csv
names contain "train", "val"/"validate" and "test".

Videos: anywhere below --videos, under either common name:

    <youtube_id>_<time_start:06d>_<time_end:06d>.mp4   already trimmed to the 10 s clip
    <youtube_id>.mp4                                   the whole YouTube video: trimmed here
                                                       to [time_start, time_end)

(.mp4, .webm, .mkv, .avi, ... all work; a clip with two files, e.g. ``<id>.mp4`` and
``<id>.webm``, is refused before anything is written). Whole videos are cut with PyAV, and with
--short-side 256 every clip is re-encoded to H.264 with short side 256 (the usual Kinetics
preprocessing; same frames, frame rate and timestamps; a video with a display rotation, e.g. a
phone video, is written turned as displayed, short side that of the displayed frame), into
OUT/videos/<split>/<label>/<id>_<start>_<end>.mp4 (spaces and slashes of the label as ``_``); in
parallel, once per output file, resumable (finished files are skipped).

Without --short-side, clips already cut are used where they are; one whose path in the CSV would
contain whitespace (e.g. a downloader's class folder ``air drumming/``) is listed through a
symbolic link OUT/videos/links/<split>/<label>/<id>_<start>_<end>.<ext> (spaces of the label as
``_``), so that every CSV line is ``path label`` with no other space: PySlowFast's Kinetics reader
(``line.split(DATA.PATH_LABEL_SEPARATOR)``, exactly two fields) reads the files as vidnl does.

Writes OUT/train.csv, val.csv, test.csv (``path label``, paths relative to OUT or --absolute),
OUT/classes.txt (sorted class names -> 0-based index, ``index name`` lines; the same for every
run on the same annotations) and OUT/missing_<split>.txt (annotated clips not found or not
readable; they are left out). Train with TRAIN.DATASET kinetics DATA.PATH_TO_DATA_DIR OUT.

    python data_prep/prepare_kinetics.py --annotations kinetics400/ --videos /data/k400 --out data/k400 --short-side 256
"""

from __future__ import annotations

import argparse
import csv
import glob
import os
import re
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vidnl.cli import run_cli  # noqa: E402
from data_prep import common  # noqa: E402
from vidnl.errors import DatasetError  # noqa: E402

SPLITS = ("train", "val", "test")


def read_annotations(path: str) -> tuple[list[dict], bool]:
    """Rows {label, youtube_id, start, end, line} of an official annotation CSV, and whether it
    has labels. Errors name the file and line."""
    if not os.path.isfile(path):
        raise DatasetError(f"annotation file not found: {path}")
    rows = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields = [c.strip() for c in (reader.fieldnames or [])]
        need = {"youtube_id", "time_start", "time_end"}
        if not need <= set(fields):
            raise DatasetError(f"{path}:1: header must have columns label,youtube_id,time_start,time_end,split; "
                               f"got {','.join(fields)}")
        reader.fieldnames = fields
        labelled = "label" in fields
        for lineno, row in enumerate(reader, 2):
            try:
                start, end = int(float(row["time_start"])), int(float(row["time_end"]))
            except (TypeError, ValueError):
                raise DatasetError(f"{path}:{lineno}: time_start/time_end must be numbers, got "
                                   f"{row.get('time_start')!r}, {row.get('time_end')!r}") from None
            yid = (row["youtube_id"] or "").strip()
            if not yid or end <= start:
                raise DatasetError(f"{path}:{lineno}: expected a youtube_id and time_end > time_start, got "
                                   f"{yid!r} {start} {end}")
            label = (row.get("label") or "").strip() if labelled else ""
            if labelled and not label:
                raise DatasetError(f"{path}:{lineno}: empty label")
            rows.append({"label": label, "youtube_id": yid, "start": start, "end": end, "line": lineno})
    return rows, labelled


def find_annotation_files(folder: str) -> dict[str, str]:
    """{split: csv file} from the file names in ``folder``."""
    found: dict[str, list[str]] = {s: [] for s in SPLITS}
    for path in sorted(glob.glob(os.path.join(folder, "*.csv"))):
        name = os.path.basename(path).lower()
        for split, keys in (("train", ("train",)), ("val", ("val", "validate")), ("test", ("test",))):
            if any(k in name for k in keys):
                found[split].append(path)
    for split, paths in found.items():
        if len(paths) > 1:
            raise DatasetError(f"{folder}: several {split} annotation files ({', '.join(paths)}); pass --{split}")
    return {s: p[0] for s, p in found.items() if p}


def clip_name(row: dict) -> str:
    return f"{row['youtube_id']}_{row['start']:06d}_{row['end']:06d}"


def label_folder(label: str) -> str:
    """The folder name of a class: whitespace and slashes as underscores ("." and ".." too)."""
    name = re.sub(r"[\s/\\]", "_", label)
    return name if name.strip(".") else name.replace(".", "_")


def has_space(text: str) -> bool:
    return any(c.isspace() for c in text)


def link_clip(src: str, link: str) -> None:
    """``link`` -> ``src`` (absolute): a symbolic link, else a hard link; an existing link to the
    same file is kept, any other one replaced. DatasetError when neither can be made."""
    target = os.path.abspath(src)
    if os.path.islink(link) and os.readlink(link) == target:
        return
    if os.path.exists(link) and not os.path.islink(link) and os.path.samefile(link, target):
        return
    os.makedirs(os.path.dirname(link), exist_ok=True)
    tmp = link + ".tmp"
    if os.path.lexists(tmp):
        os.remove(tmp)
    try:
        os.symlink(target, tmp)
    except OSError as e1:
        try:
            os.link(target, tmp)
        except OSError as e2:
            raise DatasetError(f"cannot link {link} -> {target} (symbolic link: {e1}; hard link: {e2}); its path "
                               f"has a space, which PySlowFast cannot read: rename the folder, or re-encode with "
                               f"--short-side") from None
    os.replace(tmp, link)


def _encode_job(job):
    src, dst, short_side, start, end = job
    if os.path.exists(dst):
        return dst, None, True
    try:
        common.reencode_video(src, dst, short_side, start, end)
        return dst, None, False
    except RuntimeError as e:
        return dst, str(e), False


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--annotations", default="", help="folder with the official train/validate/test CSV files")
    for split in SPLITS:
        p.add_argument(f"--{split}", default="", help=f"the {split} annotation CSV (overrides --annotations)")
    p.add_argument("--videos", required=True, help="folder searched (recursively) for the downloaded videos")
    p.add_argument("--out", required=True, help="output folder (DATA.PATH_TO_DATA_DIR)")
    p.add_argument("--short-side", type=int, default=0,
                   help="re-encode every clip to this short side (e.g. 256); 0: only whole videos are cut")
    p.add_argument("--workers", type=int, default=common.default_workers(), help="processes for re-encoding")
    p.add_argument("--absolute", action="store_true", help="write absolute video paths in the CSV files")
    a = p.parse_args(argv)
    if a.short_side < 0:
        p.error(f"--short-side must be >= 0, got {a.short_side}")
    if not os.path.isdir(a.videos):
        p.error(f"video folder not found: {a.videos}")
    start_time = time.time()
    try:
        files = find_annotation_files(a.annotations) if a.annotations else {}
        files.update({s: getattr(a, s) for s in SPLITS if getattr(a, s)})
        if not files:
            p.error("no annotation files: give --annotations DIR or --train/--val/--test")
        annotations = {s: read_annotations(path) for s, path in files.items()}
    except DatasetError as e:
        print(f"prepare_kinetics: error: {e}", file=sys.stderr)
        return 2

    classes = sorted({r["label"] for rows, labelled in annotations.values() if labelled for r in rows})
    if not classes:
        print("prepare_kinetics: error: no annotation file has labels", file=sys.stderr)
        return 2
    index = {c: i for i, c in enumerate(classes)}
    # the clips written by an earlier run (OUT/videos inside --videos) are outputs, not downloads
    out_videos = os.path.abspath(os.path.join(a.out, "videos"))
    inside = os.path.commonpath([out_videos, os.path.abspath(a.videos)]) == os.path.abspath(a.videos)
    videos = common.index_files(a.videos, exclude=out_videos if inside and out_videos != os.path.abspath(a.videos)
                                else "")

    plan: dict[str, list] = {}
    missing: dict[str, list[str]] = {}
    jobs, sources, several, links = [], [], [], []
    for split, (rows, labelled) in annotations.items():
        if not labelled:
            continue
        plan[split], missing[split] = [], []
        for r in rows:
            name = clip_name(r)
            trimmed, whole = videos.get(name, []), videos.get(r["youtube_id"], [])
            if not trimmed and not whole:
                missing[split].append(f"{name} {r['label']} (line {r['line']}: no {name}.* or {r['youtube_id']}.*)")
                continue
            found = trimmed or whole
            if len(found) > 1:
                several.append(f"{found[0]} and {found[1]} are both {'clip ' + name if trimmed else 'video ' + name}"
                               f" ({files[split]}:{r['line']})")
                continue
            if trimmed and not a.short_side:
                path = trimmed[0]
                link = os.path.join(a.out, "videos", "links", split, label_folder(r["label"]),
                                    label_folder(name) + os.path.splitext(path)[1])
                if (has_space(common.csv_path_for(path, a.out, a.absolute))
                        and not has_space(common.csv_path_for(link, a.out, a.absolute))):
                    links.append((path, link))
                    sources.append((path, link))
                    path = link
                plan[split].append((path, r))
                continue
            dst = os.path.join(a.out, "videos", split, label_folder(r["label"]), name + ".mp4")
            src, cut = (trimmed[0], (None, None)) if trimmed else (whole[0], (r["start"], r["end"]))
            sources.append((src if trimmed else f"{src} [{r['start']} s, {r['end']} s)", dst))
            jobs.append((src, dst, a.short_side, *cut))
            plan[split].append((dst, r))
    try:
        if several:
            more = f" (and {len(several) - 1} more clips with several files)" if len(several) > 1 else ""
            raise DatasetError(f"{several[0]}{more}; keep one file per clip")
        # one job per output: a clip listed twice is encoded once; clips whose output names differ
        # only in case clash where the file system ignores case
        common.check_distinct_outputs(sources, "clip", a.out, hint="leave one of them out of the annotations")
    except DatasetError as e:
        print(f"prepare_kinetics: error: {e}", file=sys.stderr)
        return 2
    jobs = list({job[1]: job for job in jobs}.values())
    os.makedirs(a.out, exist_ok=True)
    try:
        for link, src in {lk: sr for sr, lk in links}.items():  # a clip listed twice is linked once
            link_clip(src, link)
    except DatasetError as e:
        print(f"prepare_kinetics: error: {e}", file=sys.stderr)
        return 2

    failed, done_before = {}, 0
    for dst, error, was_done in common.parallel_map(_encode_job, jobs, a.workers, "cut/re-encode"):
        done_before += was_done
        if error:
            failed[dst] = error
    common.write_lines(os.path.join(a.out, "classes.txt"), [f"{i} {c}" for i, c in enumerate(classes)])
    summary, spaced = [], 0
    for split in SPLITS:
        if split not in annotations:
            continue
        if split not in plan:
            summary.append(f"  {split}: {files[split]} has no labels; {split}.csv not written")
            continue
        lines = []
        for path, r in plan[split]:
            if path in failed:
                missing[split].append(f"{clip_name(r)} {r['label']} (line {r['line']}: {failed[path]})")
            else:
                lines.append(f"{common.csv_path_for(path, a.out, a.absolute)} {index[r['label']]}")
                spaced += has_space(lines[-1].rsplit(" ", 1)[0])
        common.write_lines(os.path.join(a.out, f"{split}.csv"), lines)
        common.write_lines(os.path.join(a.out, f"missing_{split}.txt"), missing[split])
        summary.append(f"  {split}: {len(lines)} of {len(annotations[split][0])} clips, {len(missing[split])} missing "
                       f"or unreadable (missing_{split}.txt)")
    print(f"Kinetics ({len(classes)} classes) from {a.videos} -> {a.out}")
    print("\n".join(summary))
    if jobs:
        print(f"  cut/re-encoded {len(jobs) - done_before - len(failed)} clips"
              f"{f' to short side {a.short_side}' if a.short_side else ''}, {done_before} already done, "
              f"{len(failed)} failed")
    if links:
        print(f"  {len({lk for _, lk in links})} clips whose paths have spaces listed through links in "
              f"{os.path.join(a.out, 'videos', 'links')} (readable by PySlowFast too)")
    if spaced:
        print(f"prepare_kinetics: warning: {spaced} CSV paths contain spaces (--absolute is set and the absolute path of "
              f"--out {a.out!r} has one): vidnl reads them, PySlowFast cannot; drop --absolute (paths relative to --out, "
              f"PySlowFast's DATA.PATH_PREFIX) or use an --out without spaces", file=sys.stderr)
    print(f"  done in {time.time() - start_time:.1f} s; train with TRAIN.DATASET kinetics TEST.DATASET kinetics "
          f"DATA.PATH_TO_DATA_DIR {a.out} MODEL.NUM_CLASSES {len(classes)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
