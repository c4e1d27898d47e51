#!/usr/bin/env python
"""Sort the flat ImageNet (ILSVRC-2012) validation images into class folders.

The training archive already has ``train/<wnid>/*.JPEG``; the validation archive is flat
(``ILSVRC2012_val_00000001.JPEG`` ... ``_00050000``). The ``imagefolder`` dataset needs
``val/<wnid>/*``, so this script links (default), copies or moves every image into
``OUT/<wnid>/`` using either

* the devkit (``--devkit ILSVRC2012_devkit_t12``): ``data/ILSVRC2012_validation_ground_truth.txt``
  (line i: the ILSVRC2012_ID of image i) and ``data/meta.mat`` (synsets: ILSVRC2012_ID -> WNID), or
* Kaggle's ``LOC_val_solution.csv`` (``--solution``): ``ImageId,PredictionString`` whose first
  token is the WNID.

Images without a label and labels without an image are reported, not fatal; a labelled image
with two files (``x.JPEG`` and ``x.png``, or one name in two folders) is refused before anything
is written.

    python data_prep/prepare_imagenet_val.py --val /data/imagenet/val_flat --devkit /data/ILSVRC2012_devkit_t12 --out /data/imagenet/val
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vidnl.cli import run_cli  # noqa: E402
from data_prep import common  # noqa: E402
from vidnl.errors import DatasetError  # noqa: E402


VERB = {"symlink": "linked", "copy": "copied", "move": "moved"}


def labels_from_devkit(devkit: str) -> dict[str, str]:
    """{image stem: wnid} from the ILSVRC2012 devkit."""
    import scipy.io

    truth = os.path.join(devkit, "data", "ILSVRC2012_validation_ground_truth.txt")
    meta = os.path.join(devkit, "data", "meta.mat")
    for path in (truth, meta):
        if not os.path.isfile(path):
            raise DatasetError(f"{path} not found (expected the ILSVRC2012_devkit_t12 folder)")
    try:
        synsets = scipy.io.loadmat(meta, squeeze_me=True)["synsets"]
        wnid = {int(i): str(w) for i, w in zip(synsets["ILSVRC2012_ID"], synsets["WNID"])}
    except Exception as e:
        raise DatasetError(f"{meta}: cannot read synsets ILSVRC2012_ID / WNID ({type(e).__name__}: {e})") from None
    out = {}
    with open(truth) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            if not line.strip().isdigit() or int(line) not in wnid:
                raise DatasetError(f"{truth}:{lineno}: expected an ILSVRC2012_ID of meta.mat, got {line.strip()!r}")
            out[f"ILSVRC2012_val_{lineno:08d}"] = wnid[int(line)]
    return out


def labels_from_solution(path: str) -> dict[str, str]:
    """{image stem: wnid} from Kaggle's LOC_val_solution.csv."""
    if not os.path.isfile(path):
        raise DatasetError(f"{path} not found")
    out = {}
    with open(path, newline="") as f:
        for lineno, row in enumerate(csv.DictReader(f), 2):
            try:
                out[row["ImageId"].strip()] = row["PredictionString"].split()[0]
            except (KeyError, IndexError, AttributeError):
                raise DatasetError(f"{path}:{lineno}: expected ImageId,PredictionString with a WNID first") from None
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--val", required=True, help="folder with the flat validation images")
    p.add_argument("--out", required=True, help="output folder (becomes <imagenet>/val)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--devkit", help="the ILSVRC2012_devkit_t12 folder")
    g.add_argument("--solution", help="Kaggle's LOC_val_solution.csv")
    p.add_argument("--mode", choices=("symlink", "copy", "move"), default="symlink", help="how images get there")
    a = p.parse_args(argv)
    if not os.path.isdir(a.val):
        p.error(f"validation folder not found: {a.val}")
    start = time.time()
    try:
        labels = labels_from_devkit(a.devkit) if a.devkit else labels_from_solution(a.solution)
    except DatasetError as e:
        print(f"prepare_imagenet_val: error: {e}", file=sys.stderr)
        return 2
    images: dict[str, str] = {}  # stem -> the image file
    sorted_before, several = set(), []
    for stem, paths in sorted(common.index_files(a.val, (".jpeg", ".jpg", ".png")).items()):
        if stem in labels:
            # a file already in its class folder of OUT (OUT inside --val) is an output, not an input
            folder = os.path.abspath(os.path.join(a.out, labels[stem]))
            paths = [path for path in paths if os.path.abspath(os.path.dirname(path)) != folder]
            if len(paths) > 1:
                several.append(f"{paths[0]} and {paths[1]} are both image {stem} (class folder {folder})")
        if paths:
            images[stem] = paths[0]
        else:
            sorted_before.add(stem)
    if several:
        more = f" (and {len(several) - 1} more images with several files)" if len(several) > 1 else ""
        print(f"prepare_imagenet_val: error: {several[0]}{more}; keep one file per image", file=sys.stderr)
        return 2
    unlabelled = sorted(set(images) - set(labels))
    absent = sorted(set(labels) - set(images) - sorted_before)
    placed, existing = 0, len(sorted_before)
    for stem, src in common.progress(sorted(images.items()), len(images), "sort"):
        if stem not in labels:
            continue
        dst = os.path.join(a.out, labels[stem], os.path.basename(src))
        if os.path.lexists(dst):
            existing += 1
            continue
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if a.mode == "symlink":
            os.symlink(os.path.abspath(src), dst)
        elif a.mode == "copy":
            shutil.copy2(src, dst)
        else:
            shutil.move(src, dst)
        placed += 1
    print(f"ImageNet val: {placed} images {VERB[a.mode]} into {len(set(labels.values()))} class folders of {a.out}, "
          f"{existing} already there, {len(unlabelled)} without a label, {len(absent)} labelled but not found "
          f"({time.time() - start:.1f} s)")
    for stem in unlabelled[:5]:
        print(f"  no label: {images[stem]}")
    for stem in absent[:5]:
        print(f"  not found: {stem}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
