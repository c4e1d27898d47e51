"""Video person re-identification datasets read from their official downloads, and the clip
datasets that feed the model.

* MARS (Zheng et al. 2016): ``bbox_train/<pid>/``, ``bbox_test/<pid>/`` (images such as
  ``0001C1T0001F001.jpg``: identity, camera, tracklet, frame), ``info/train_name.txt``,
  ``info/test_name.txt``, ``info/tracks_{train,test}_info.mat`` (``track_{train,test}_info``:
  N×4 [start, end, pid, camid], 1-based rows of the name lists) and ``info/query_IDX.mat``
  (1-based rows of the test tracks). Query = the test tracks at ``query_IDX``, gallery = the
  other test tracks.
* iLIDS-VID (Wang et al. 2014): ``i-LIDS-VID/sequences/cam{1,2}/personNNN/*.png`` and
  ``train-test people splits/train_test_splits_ilidsvid.mat`` (``ls_set``: 10 × 300 person
  numbers, 1-based positions in the sorted person folders). As in Wang et al.'s protocol (and
  Gao & Nevatia's code), the first half of a row are the test persons, the second half train.
  When ``splits.json`` (the list of ``{"train", "test"}`` person-folder lists that torchreid and
  Video-Person-ReID write from the .mat on first use and read afterwards) is in the root, it is
  used instead, as they do (logged; a warning when it differs from the .mat).
  Query = camera 1, gallery = camera 2.
* PRID-2011 (Hirzer et al. 2011): ``prid_2011/multi_shot/cam_{a,b}/person_NNNN/*.png``. Only
  persons 1..200 are the same people in both cameras; of those, a person is used when it has at
  least ``min_frames`` (21) frames in *each* camera (Wang et al. 2014's rule: 178 persons on the
  real data). The splits: the community file ``splits_prid2011.json`` in the root (the one
  torchreid and Video-Person-ReID read and published numbers use: a JSON list of
  ``{"train": [...], "test": [...]}`` person-folder lists such as ``"person_0001"``) when it is
  there; otherwise ten random half/half person splits drawn once with seed 2011 and saved next to
  the data (``splits_prid2011_vidnl.json``) so that every run uses the same ones (an existing
  file is reused). Which one is used is logged. Query = camera a, gallery = camera b.

Training identities are relabelled 0..P-1 (sorted original ids); query and gallery keep the
original ids. Cameras are 0-based. Malformed files raise :class:`DatasetError` naming the file
and the field.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ...errors import DatasetError
from ...registry import Registry
from ..model_input import InputNormalizer
from ..reid_sampling import test_chunks, train_frame_indices

logger = logging.getLogger(__name__)

# REID.DATASET name -> fn(cfg.REID, split_id) -> ReIDData; metadata "title" (the dataset's
# name in messages) and "num_splits" (fn(cfg.REID) -> how many train/test splits it has).
REID_DATASET_REGISTRY = Registry("re-ID dataset")
PRID_SPLIT_FILE = "splits_prid2011_vidnl.json"
PRID_COMMUNITY_SPLIT_FILE = "splits_prid2011.json"
PRID_SPLIT_SEED = 2011
PRID_NUM_SPLITS = 10
PRID_NUM_SHARED = 200


@dataclass(frozen=True)
class Tracklet:
    """One tracklet: its frame files in temporal order, identity and 0-based camera."""

    paths: tuple[str, ...]
    pid: int
    camid: int


@dataclass
class ReIDData:
    """Train / query / gallery tracklets of one split."""

    name: str
    train: list[Tracklet]
    query: list[Tracklet]
    gallery: list[Tracklet]
    split_id: int = 0
    num_splits: int = 1
    notes: dict = field(default_factory=dict)

    @property
    def num_train_pids(self) -> int:
        return len({t.pid for t in self.train})

    def summary(self) -> dict:
        """Counts of identities, tracklets and frames per subset."""
        out = {"dataset": self.name, "split_id": self.split_id, "num_splits": self.num_splits}
        for part in ("train", "query", "gallery"):
            tr = getattr(self, part)
            out[f"{part}_ids"] = len({t.pid for t in tr})
            out[f"{part}_tracklets"] = len(tr)
            out[f"{part}_frames"] = sum(len(t.paths) for t in tr)
        out.update(self.notes)
        return out


# ------------------------------------------------------------------------------------------------
# File helpers
# ------------------------------------------------------------------------------------------------
def _require_dir(path: str, what: str) -> None:
    if not os.path.isdir(path):
        raise DatasetError(f"{path}: folder not found ({what}). See docs/reid.md for the expected layout.")


def _require_file(path: str, what: str) -> None:
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: file not found ({what}). See docs/reid.md for the expected layout.")


def read_mat_array(path: str, var: str) -> np.ndarray:
    """Variable ``var`` of the MATLAB file ``path`` as a numpy array (scipy.io.loadmat)."""
    import scipy.io

    _require_file(path, f"holds the variable '{var}'")
    try:
        data = scipy.io.loadmat(path)
    except NotImplementedError as e:  # v7.3 (HDF5) files
        raise DatasetError(f"{path}: cannot read '{var}': {e} (save it as a v7 .mat file)") from None
    except Exception as e:
        raise DatasetError(f"{path}: not a readable MATLAB .mat file, so '{var}' cannot be read "
                           f"({type(e).__name__}: {e})") from None
    if var not in data:
        found = sorted(k for k in data if not k.startswith("__"))
        raise DatasetError(f"{path}: has no variable '{var}' (found: {', '.join(found) or 'none'})")
    arr = np.asarray(data[var])
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise DatasetError(f"{path}: '{var}' must be a numeric array, got dtype {arr.dtype}")
    return arr


def _as_int_matrix(arr: np.ndarray, path: str, var: str, cols: int | None = None) -> np.ndarray:
    if arr.ndim != 2 or (cols is not None and arr.shape[1] != cols):
        want = f"an N×{cols}" if cols else "a 2-D"
        raise DatasetError(f"{path}: '{var}' must be {want} array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
        raise DatasetError(f"{path}: '{var}' must hold integers")
    return arr.astype(np.int64)


def read_name_list(path: str) -> list[str]:
    """Non-empty lines of a text file, stripped."""
    _require_file(path, "one image name per line")
    try:
        with open(path) as f:
            names = [line.strip() for line in f]
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not a text file ({e})") from None
    while names and not names[-1]:
        names.pop()
    for i, n in enumerate(names):
        if not n:
            raise DatasetError(f"{path}: line {i + 1} is empty")
    return names


def _list_frames(folder: str, ext: str) -> list[str]:
    files = sorted(f for f in os.listdir(folder) if f.lower().endswith(ext))
    if not files:
        raise DatasetError(f"{folder}: no {ext} frames in this tracklet folder")
    return [os.path.join(folder, f) for f in files]


def _relabel(tracklets: list[Tracklet]) -> list[Tracklet]:
    label = {pid: i for i, pid in enumerate(sorted({t.pid for t in tracklets}))}
    return [Tracklet(t.paths, label[t.pid], t.camid) for t in tracklets]


# ------------------------------------------------------------------------------------------------
# MARS
# ------------------------------------------------------------------------------------------------
_MARS_NAME = re.compile(r"^(\d{4}|00-1)C(\d)T(\d{4})F(\d{3})\.jpg$")


def _mars_tracklets(root: str, home: str, names: list[str], names_file: str, tracks: np.ndarray,
                    tracks_file: str, var: str, rows: Sequence[int], listing: dict) -> list[Tracklet]:
    """Tracklets of ``tracks[rows]``; checks every name against its row and every file on disk."""
    out = []
    for r in rows:
        start, end, pid, cam = (int(v) for v in tracks[r])
        where = f"{tracks_file}: '{var}' row {r + 1} [start {start}, end {end}, pid {pid}, camid {cam}]"
        if not 1 <= start <= end <= len(names):
            raise DatasetError(f"{where}: start/end must satisfy 1 <= start <= end <= {len(names)} "
                               f"(the lines of {names_file})")
        if cam < 1:
            raise DatasetError(f"{where}: camid must be >= 1 (1-based)")
        paths = []
        for name in names[start - 1:end]:
            m = _MARS_NAME.match(name)
            if not m:
                raise DatasetError(f"{names_file}: {name!r} is not a MARS image name like 0001C1T0001F001.jpg "
                                   f"(listed by {where})")
            name_pid = -1 if m.group(1) == "00-1" else int(m.group(1))
            if name_pid != pid or int(m.group(2)) != cam:
                raise DatasetError(f"{where}: image {name!r} of {names_file} has pid {name_pid} camera "
                                   f"{m.group(2)}, not the row's pid {pid} camid {cam}")
            folder = os.path.join(root, home, m.group(1))
            if folder not in listing:
                if not os.path.isdir(folder):
                    raise DatasetError(f"{folder}: folder not found (images of {where})")
                listing[folder] = set(os.listdir(folder))
            if name not in listing[folder]:
                raise DatasetError(f"{os.path.join(folder, name)}: file not found (listed in {names_file}, "
                                   f"used by {where})")
            paths.append(os.path.join(folder, name))
        out.append(Tracklet(tuple(paths), pid, cam - 1))
    return out


def load_mars(root: str, junk_pids: Sequence[int] = (-1,)) -> ReIDData:
    """MARS with the standard query/gallery split. Tracklets whose identity is in ``junk_pids``
    are excluded from training and evaluation (the official evaluation ignores identity -1);
    identity 0 (distractors) stays in the gallery as a non-match."""
    _require_dir(root, "REID.ROOT of MARS")
    info = os.path.join(root, "info")
    for d in ("bbox_train", "bbox_test", "info"):
        _require_dir(os.path.join(root, d), "part of the MARS download")
    f_train, f_test = os.path.join(info, "train_name.txt"), os.path.join(info, "test_name.txt")
    f_ttrain, f_ttest = os.path.join(info, "tracks_train_info.mat"), os.path.join(info, "tracks_test_info.mat")
    f_query = os.path.join(info, "query_IDX.mat")
    train_names, test_names = read_name_list(f_train), read_name_list(f_test)
    track_train = _as_int_matrix(read_mat_array(f_ttrain, "track_train_info"), f_ttrain, "track_train_info", 4)
    track_test = _as_int_matrix(read_mat_array(f_ttest, "track_test_info"), f_ttest, "track_test_info", 4)
    q = read_mat_array(f_query, "query_IDX")
    if q.size == 0 or not np.all(q == np.round(q)):
        raise DatasetError(f"{f_query}: 'query_IDX' must be a non-empty vector of integer row numbers")
    q = q.astype(np.int64).ravel()
    if q.min() < 1 or q.max() > len(track_test):
        raise DatasetError(f"{f_query}: 'query_IDX' values must be 1..{len(track_test)} (rows of 'track_test_info' "
                           f"in {f_ttest}), got {q.min()}..{q.max()}")
    if len(np.unique(q)) != len(q):
        raise DatasetError(f"{f_query}: 'query_IDX' lists a row more than once")
    junk = set(int(p) for p in junk_pids)
    listing: dict = {}
    train_rows = [r for r in range(len(track_train)) if int(track_train[r, 2]) not in junk]
    train = _mars_tracklets(root, "bbox_train", train_names, f_train, track_train, f_ttrain, "track_train_info",
                            train_rows, listing)
    query_set = set((q - 1).tolist())
    query_rows = [int(r) for r in q - 1]
    gallery_rows = [r for r in range(len(track_test)) if r not in query_set]
    query_all = _mars_tracklets(root, "bbox_test", test_names, f_test, track_test, f_ttest, "track_test_info",
                                query_rows, listing)
    gallery_all = _mars_tracklets(root, "bbox_test", test_names, f_test, track_test, f_ttest, "track_test_info",
                                  gallery_rows, listing)
    query = [t for t in query_all if t.pid not in junk]
    gallery = [t for t in gallery_all if t.pid not in junk]
    notes = {"junk_query_tracklets": len(query_all) - len(query),
             "junk_gallery_tracklets": len(gallery_all) - len(gallery),
             "junk_train_tracklets": len(track_train) - len(train_rows),
             "distractor_gallery_tracklets": sum(t.pid == 0 for t in gallery)}
    return ReIDData("MARS", _relabel(train), query, gallery, 0, 1, notes)


# ------------------------------------------------------------------------------------------------
# iLIDS-VID
# ------------------------------------------------------------------------------------------------
def _person_number(name: str, folder: str) -> int:
    digits = re.sub(r"\D", "", name)
    if not digits:
        raise DatasetError(f"{os.path.join(folder, name)}: a person folder name must contain its number")
    return int(digits)


def _person_dirs(folder: str) -> list[str]:
    _require_dir(folder, "one folder per person")
    return sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))


ILIDS_SPLIT_FILE = "splits.json"
ILIDS_MAT = os.path.join("train-test people splits", "train_test_splits_ilidsvid.mat")


def _ilidsvid_persons(root: str) -> tuple[str, list[str]]:
    """(the sequences folder, the sorted person folders, the same in cam1 and cam2)."""
    _require_dir(root, "REID.ROOT of iLIDS-VID")
    seq = os.path.join(root, "i-LIDS-VID", "sequences")
    cam1, cam2 = _person_dirs(os.path.join(seq, "cam1")), _person_dirs(os.path.join(seq, "cam2"))
    if cam1 != cam2:
        only1, only2 = sorted(set(cam1) - set(cam2)), sorted(set(cam2) - set(cam1))
        raise DatasetError(f"{seq}: cam1 and cam2 must hold the same person folders; only in cam1: "
                           f"{only1[:5]}, only in cam2: {only2[:5]}")
    return seq, cam1


def ilidsvid_mat_splits(root: str, persons: Sequence[str] | None = None) -> list[dict]:
    """The splits of ``ls_set`` in the official .mat: row k's first half (its n // 2 first
    entries) are the test persons, the rest the training persons; an entry is the 1-based
    position of a person in the *sorted* person folders (torchreid's rule). -> [{"train", "test"}]
    sorted person folder names."""
    if persons is None:
        persons = _ilidsvid_persons(root)[1]
    f = os.path.join(root, ILIDS_MAT)
    ls = _as_int_matrix(read_mat_array(f, "ls_set"), f, "ls_set")
    n = len(persons)
    if ls.shape[1] != n:
        raise DatasetError(f"{f}: 'ls_set' has {ls.shape[1]} columns, but i-LIDS-VID/sequences/cam1 has {n} person "
                           f"folders (one column per person)")
    for r, row in enumerate(ls):
        if sorted(row.tolist()) != list(range(1, n + 1)):
            raise DatasetError(f"{f}: 'ls_set' row {r + 1} must be a permutation of 1..{n} (person numbers)")
    half = n // 2
    return [{"train": sorted(persons[i - 1] for i in row[half:]), "test": sorted(persons[i - 1] for i in row[:half])}
            for row in ls]


def read_ilidsvid_split_file(path: str, persons: Sequence[str]) -> list[dict]:
    """The splits of torchreid's / Video-Person-ReID's ``splits.json`` (a JSON list of
    ``{"train": [...], "test": [...]}`` person folder names such as ``"person001"``), checked:
    names of existing person folders, no person twice or in both lists. -> sorted lists."""
    want = 'a JSON list of splits {"train": [...], "test": [...]} of iLIDS-VID person folders such as "person001"'
    try:
        with open(path) as f:
            splits = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DatasetError(f"{path}: cannot be read as JSON ({type(e).__name__}: {e}); expected {want} "
                           f"(or delete it to use the splits of the .mat)") from None
    if not isinstance(splits, list) or not splits:
        raise DatasetError(f"{path}: expected {want}, got {json.dumps(splits)[:60]}")
    known = set(persons)
    out = []
    for i, s in enumerate(splits):
        where = f"{path}: split {i}"
        if not isinstance(s, dict) or not {"train", "test"} <= set(s):
            raise DatasetError(f"{where} must be an object with 'train' and 'test' person lists; expected {want}")
        for part in ("train", "test"):
            ids = s[part]
            if not isinstance(ids, list) or not ids or not all(isinstance(x, str) for x in ids):
                raise DatasetError(f"{where} '{part}' must be a non-empty list of person folder names, got "
                                   f"{json.dumps(ids)[:80]}")
            if len(set(ids)) != len(ids):
                raise DatasetError(f"{where} '{part}' lists persons more than once: "
                                   f"{sorted({x for x in ids if ids.count(x) > 1})[:5]}")
            unknown = [x for x in ids if x not in known]
            if unknown:
                raise DatasetError(f"{where} '{part}' names persons without folders in cam1 and cam2: {unknown[:5]}")
        both = sorted(set(s["train"]) & set(s["test"]))
        if both:
            raise DatasetError(f"{where} has persons in both 'train' and 'test': {both[:5]}")
        out.append({"train": sorted(s["train"]), "test": sorted(s["test"])})
    return out


def ilidsvid_split_source(root: str) -> tuple[list[dict], dict]:
    """The iLIDS-VID splits and where they come from, as torchreid and Video-Person-ReID take
    them: ``root/splits.json`` (the file they write from the .mat on first use) when present,
    otherwise the official ``ls_set`` (:func:`ilidsvid_mat_splits`). A ``splits.json`` that
    differs from the .mat is used but warned about (Video-Person-ReID maps ``ls_set`` through
    the unsorted ``os.listdir`` order, so its file depends on the machine that wrote it).
    -> (splits, {"split_source": "splits.json" | "mat", "split_file": path})."""
    seq, persons = _ilidsvid_persons(root)
    mat = os.path.join(root, ILIDS_MAT)
    js = os.path.join(root, ILIDS_SPLIT_FILE)
    if os.path.isfile(js):
        splits = read_ilidsvid_split_file(js, persons)
        logger.info("iLIDS-VID: using the splits of %s (%d splits; torchreid's / Video-Person-ReID's split file)",
                    js, len(splits))
        if os.path.isfile(mat):
            try:
                ref = ilidsvid_mat_splits(root, persons)
            except DatasetError as e:  # the file is used as it is, as torchreid does
                logger.warning("iLIDS-VID: cannot compare %s with the .mat: %s", js, e)
                ref = splits
            diff = [k for k in range(max(len(ref), len(splits)))
                    if k >= len(ref) or k >= len(splits) or ref[k] != splits[k]]
            if diff:
                logger.warning("iLIDS-VID: %s differs from the splits of %s (ls_set over the sorted person folders) "
                               "in split(s) %s; using %s. Delete it to use the .mat's splits (a splits.json written "
                               "by Video-Person-ReID maps ls_set through the unsorted folder listing of its machine)",
                               js, mat, diff[:10], js)
        return splits, {"split_source": "splits.json", "split_file": js}
    splits = ilidsvid_mat_splits(root, persons)
    logger.info("iLIDS-VID: using the splits of %s (ls_set: first half of each row test persons, second half train)",
                mat)
    return splits, {"split_source": "mat", "split_file": mat}


def ilidsvid_num_splits(root: str) -> int:
    return len(ilidsvid_split_source(root)[0])


def load_ilidsvid(root: str, split_id: int = 0) -> ReIDData:
    """iLIDS-VID split ``split_id`` (see :func:`ilidsvid_split_source`); query cam1, gallery
    cam2. ``notes`` name the split file used."""
    splits, source = ilidsvid_split_source(root)
    seq = os.path.join(root, "i-LIDS-VID", "sequences")
    if not 0 <= split_id < len(splits):
        raise DatasetError(f"REID.SPLIT_ID {split_id}: iLIDS-VID has {len(splits)} splits (0..{len(splits) - 1}) in "
                           f"{source['split_file']}")
    s = splits[split_id]

    def tracklets(persons, cams):
        return [Tracklet(tuple(_list_frames(os.path.join(seq, c, p), ".png")), _person_number(p, seq), ci)
                for p in persons for ci, c in cams]

    train = tracklets(s["train"], ((0, "cam1"), (1, "cam2")))
    query = tracklets(s["test"], ((0, "cam1"),))
    gallery = tracklets(s["test"], ((1, "cam2"),))
    return ReIDData("iLIDS-VID", _relabel(train), query, gallery, split_id, len(splits), dict(source))


# ------------------------------------------------------------------------------------------------
# PRID-2011
# ------------------------------------------------------------------------------------------------
def _prid_frames(folder: str) -> list[str]:
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(".png"))


def prid_persons(root: str, min_frames: int, num_shared: int = PRID_NUM_SHARED) -> list[str]:
    """Persons 1..num_shared present in both cameras with >= min_frames frames in each."""
    base = os.path.join(root, "prid_2011", "multi_shot")
    cams = [os.path.join(base, "cam_a"), os.path.join(base, "cam_b")]
    for c in cams:
        _require_dir(c, "one person_NNNN folder per person")
    persons, missing, short = [], 0, 0
    for i in range(1, num_shared + 1):
        name = f"person_{i:04d}"
        folders = [os.path.join(c, name) for c in cams]
        if not all(os.path.isdir(f) for f in folders):
            missing += 1
            continue
        if min(len(_prid_frames(f)) for f in folders) < min_frames:
            short += 1
            continue
        persons.append(name)
    if missing:
        logger.warning("PRID-2011: %d of persons 1..%d are missing in cam_a or cam_b of %s", missing, num_shared, base)
    logger.info("PRID-2011: %d persons with >= %d frames in both cameras (%d shorter ones left out)",
                len(persons), min_frames, short)
    if len(persons) < 2:
        raise DatasetError(f"{base}: only {len(persons)} of persons 1..{num_shared} have >= {min_frames} frames "
                           f"in both cam_a and cam_b (REID.PRID_MIN_FRAMES)")
    return persons


def read_prid_community_splits(path: str, root: str, num_shared: int = PRID_NUM_SHARED) -> list[dict]:
    """The splits of the community file ``path`` (``splits_prid2011.json``, torchreid's and
    Video-Person-ReID's format): a non-empty JSON list of ``{"train": [...], "test": [...]}``
    person-folder names (``"person_0001"``), disjoint, each a person 1..num_shared with .png frames
    in both cam_a and cam_b of ``root``. The file defines the persons (REID.PRID_MIN_FRAMES is not
    applied). Anything else is a DatasetError naming the file and what was expected."""
    want = ('a JSON list of splits {"train": [...], "test": [...]} of PRID person folders such as '
            '"person_0001" (the community splits_prid2011.json that torchreid reads)')
    try:
        with open(path) as f:
            splits = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DatasetError(f"{path}: cannot be read as JSON ({type(e).__name__}: {e}); expected {want}") from None
    if not isinstance(splits, list) or not splits:
        got = "an empty list" if splits == [] else f"a JSON {type(splits).__name__}"
        raise DatasetError(f"{path}: expected {want}; got {got}")
    base = os.path.join(root, "prid_2011", "multi_shot")
    cams = [os.path.join(base, "cam_a"), os.path.join(base, "cam_b")]
    for c in cams:
        _require_dir(c, "one person_NNNN folder per person")
    usable: dict[str, bool] = {}

    def ok(name: str) -> bool:
        if name not in usable:
            m = re.fullmatch(r"person_(\d+)", name)
            usable[name] = bool(m) and 1 <= int(m.group(1)) <= num_shared and all(
                os.path.isdir(os.path.join(c, name)) and _prid_frames(os.path.join(c, name)) for c in cams)
        return usable[name]

    out = []
    for i, s in enumerate(splits):
        where = f"{path}: split {i}"
        if not isinstance(s, dict) or not {"train", "test"} <= set(s):
            got = f"a JSON {type(s).__name__}" if not isinstance(s, dict) else f"keys {sorted(s)}"
            raise DatasetError(f"{where} must be an object with 'train' and 'test' person lists, got {got}; "
                               f"expected {want}")
        for part in ("train", "test"):
            ids = s[part]
            if not isinstance(ids, list) or not ids or not all(isinstance(x, str) for x in ids):
                raise DatasetError(f"{where} '{part}' must be a non-empty list of person folder names such as "
                                   f"\"person_0001\", got {json.dumps(ids)[:80]}")
            dup = sorted({x for x in ids if ids.count(x) > 1})
            if dup:
                raise DatasetError(f"{where} '{part}' lists persons more than once: {dup[:5]}")
            unknown = [x for x in ids if not ok(x)]
            if unknown:
                raise DatasetError(f"{where} '{part}' names persons that are not in this PRID-2011 copy: "
                                   f"{unknown[:5]}{' ...' if len(unknown) > 5 else ''} (each must be person_NNNN, "
                                   f"1..{num_shared}, with .png frames in both cam_a and cam_b of {base})")
        both = sorted(set(s["train"]) & set(s["test"]))
        if both:
            raise DatasetError(f"{where} has {len(both)} persons in both 'train' and 'test': {both[:5]}; "
                               f"train and test persons must be disjoint")
        out.append({"train": sorted(s["train"]), "test": sorted(s["test"])})
    return out


def prid_split_source(root: str, min_frames: int, num_shared: int = PRID_NUM_SHARED) -> tuple[list[dict], dict]:
    """The PRID splits and where they come from ({"split_source": "community" | "vidnl",
    "split_file": path}): the community ``root/splits_prid2011.json`` when present
    (:func:`read_prid_community_splits`), otherwise vidnl's own (:func:`_prid_vidnl_splits`)."""
    community = os.path.join(root, PRID_COMMUNITY_SPLIT_FILE)
    if os.path.isfile(community):
        splits = read_prid_community_splits(community, root, num_shared)
        persons = {p for s in splits for p in s["train"] + s["test"]}
        logger.info("PRID-2011: using the community splits %s (%d splits over %d persons, the splits of published "
                    "results)", community, len(splits), len(persons))
        return splits, {"split_source": "community", "split_file": community}
    path = os.path.join(root, PRID_SPLIT_FILE)
    splits = _prid_vidnl_splits(root, min_frames, num_shared)
    logger.info("PRID-2011: no %s in %s; using vidnl's own splits (%d, seed %d) from %s: results are not comparable "
                "to published ones (put the community split file there for those)", PRID_COMMUNITY_SPLIT_FILE, root,
                len(splits), PRID_SPLIT_SEED, path)
    return splits, {"split_source": "vidnl", "split_file": path}


def prid_splits(root: str, min_frames: int, num_shared: int = PRID_NUM_SHARED) -> list[dict]:
    """The PRID splits: the community ``root/splits_prid2011.json`` when present, otherwise
    vidnl's own (see :func:`prid_split_source`)."""
    return prid_split_source(root, min_frames, num_shared)[0]


def _prid_vidnl_splits(root: str, min_frames: int, num_shared: int = PRID_NUM_SHARED) -> list[dict]:
    """vidnl's 10 PRID splits: read from ``root/splits_prid2011_vidnl.json``, or drawn (seed 2011)
    over :func:`prid_persons` and written there."""
    path = os.path.join(root, PRID_SPLIT_FILE)
    persons = prid_persons(root, min_frames, num_shared)
    if os.path.isfile(path):
        try:
            with open(path) as f:
                data = json.load(f)
            splits, made_with = data["splits"], data["min_frames"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DatasetError(f"{path}: not a vidnl PRID split file ({type(e).__name__}: {e}); delete it to "
                               f"draw the splits again") from None
        if made_with != min_frames:
            raise DatasetError(f"{path}: field 'min_frames' is {made_with}, but REID.PRID_MIN_FRAMES is {min_frames}; "
                               f"set REID.PRID_MIN_FRAMES {made_with} or delete the file to draw new splits")
        if not isinstance(splits, list) or not splits:
            raise DatasetError(f"{path}: field 'splits' must be a non-empty list of {{'train': [...], 'test': [...]}} "
                               f"person lists, got {json.dumps(splits)[:80]}; delete the file to draw the splits again")
        for i, s in enumerate(splits):
            if (not isinstance(s, dict) or not all(isinstance(s.get(k), list) for k in ("train", "test"))
                    or not all(isinstance(x, str) for x in s["train"] + s["test"])):
                raise DatasetError(f"{path}: field 'splits'[{i}] must hold 'train' and 'test' lists of person folder "
                                   f"names such as \"person_0001\"; delete the file to draw the splits again")
            if set(s["train"]) & set(s["test"]):
                raise DatasetError(f"{path}: field 'splits'[{i}] has persons in both 'train' and 'test': "
                                   f"{sorted(set(s['train']) & set(s['test']))[:5]}")
            unknown = sorted(set(s["train"] + s["test"]) - set(persons))
            if unknown:
                raise DatasetError(f"{path}: field 'splits'[{i}] names persons that are not usable in {root} "
                                   f"(missing, or fewer than {min_frames} frames): {unknown[:5]}")
        return splits
    rng = np.random.default_rng(PRID_SPLIT_SEED)
    splits = []
    for _ in range(PRID_NUM_SPLITS):
        perm = [persons[i] for i in rng.permutation(len(persons))]
        half = len(persons) // 2
        splits.append({"train": sorted(perm[:half]), "test": sorted(perm[half:])})
    data = {"rule": f"persons 1..{num_shared} with >= {min_frames} frames in both cameras, "
                    f"{PRID_NUM_SPLITS} random half/half splits", "seed": PRID_SPLIT_SEED,
            "min_frames": min_frames, "persons": persons, "splits": splits}
    try:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)
        logger.info("PRID-2011: wrote %d splits to %s", len(splits), path)
    except OSError as e:
        logger.warning("PRID-2011: cannot write %s (%s); using the same seeded splits in memory", path, e)
    return splits


def load_prid(root: str, split_id: int = 0, min_frames: int = 21, num_shared: int = PRID_NUM_SHARED) -> ReIDData:
    """PRID-2011 split ``split_id`` (see :func:`prid_split_source`); query cam_a, gallery cam_b.
    ``notes`` name the split file used."""
    _require_dir(root, "REID.ROOT of PRID-2011")
    splits, source = prid_split_source(root, min_frames, num_shared)
    if not 0 <= split_id < len(splits):
        raise DatasetError(f"REID.SPLIT_ID {split_id}: PRID-2011 has {len(splits)} splits (0..{len(splits) - 1})")
    base = os.path.join(root, "prid_2011", "multi_shot")

    def tracklets(persons, cams):
        return [Tracklet(tuple(_list_frames(os.path.join(base, c, p), ".png")), _person_number(p, base), ci)
                for p in persons for ci, c in cams]

    s = splits[split_id]
    train = tracklets(sorted(s["train"]), ((0, "cam_a"), (1, "cam_b")))
    query = tracklets(sorted(s["test"]), ((0, "cam_a"),))
    gallery = tracklets(sorted(s["test"]), ((1, "cam_b"),))
    return ReIDData("PRID-2011", _relabel(train), query, gallery, split_id, len(splits), dict(source))


# ------------------------------------------------------------------------------------------------
# From the config
# ------------------------------------------------------------------------------------------------
@REID_DATASET_REGISTRY.register("mars", title="MARS", num_splits=lambda r: 1)
def _mars_from_cfg(r, split_id: int) -> ReIDData:
    """MARS at REID.ROOT without REID.JUNK_PIDS (one split: ``split_id`` is not used)."""
    return load_mars(r.ROOT, r.JUNK_PIDS)


@REID_DATASET_REGISTRY.register("ilidsvid", title="iLIDS-VID", num_splits=lambda r: ilidsvid_num_splits(r.ROOT))
def _ilidsvid_from_cfg(r, split_id: int) -> ReIDData:
    """iLIDS-VID at REID.ROOT, split ``split_id``."""
    return load_ilidsvid(r.ROOT, split_id)


@REID_DATASET_REGISTRY.register("prid", title="PRID-2011",
                                num_splits=lambda r: len(prid_splits(r.ROOT, r.PRID_MIN_FRAMES)))
def _prid_from_cfg(r, split_id: int) -> ReIDData:
    """PRID-2011 at REID.ROOT, split ``split_id``, persons with >= REID.PRID_MIN_FRAMES frames."""
    return load_prid(r.ROOT, split_id, r.PRID_MIN_FRAMES)


def _dataset(cfg) -> str:
    """REID.DATASET, checked against the registry, with REID.ROOT set."""
    name = cfg.REID.DATASET
    REID_DATASET_REGISTRY.check(name, "REID.DATASET")
    if not cfg.REID.ROOT:
        raise DatasetError(f"REID.ROOT is empty: set it to the folder of the "
                           f"{REID_DATASET_REGISTRY.metadata(name)['title']} download (layout in docs/reid.md)")
    return name


def num_splits(cfg) -> int:
    """How many train/test splits the configured dataset has."""
    return REID_DATASET_REGISTRY.metadata(_dataset(cfg))["num_splits"](cfg.REID)


def build_reid_data(cfg, split_id: int | None = None) -> ReIDData:
    """The configured dataset (REID.DATASET at REID.ROOT), split ``split_id`` (default
    REID.SPLIT_ID)."""
    r = cfg.REID
    load = REID_DATASET_REGISTRY[_dataset(cfg)]
    return load(r, r.SPLIT_ID if split_id is None else split_id)


# ------------------------------------------------------------------------------------------------
# Frames and clips
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FrameTransform:
    """Frames resized to height × width, as raw uint8 pixels; ``normalizer`` scales them to
    [0, 1] and normalises with mean/std (RGB) on the device (see :mod:`vidnl.data.model_input`)."""

    height: int
    width: int
    mean: tuple = (0.485, 0.456, 0.406)
    std: tuple = (0.229, 0.224, 0.225)

    @classmethod
    def from_cfg(cls, cfg) -> "FrameTransform":
        r = cfg.REID
        return cls(r.HEIGHT, r.WIDTH, tuple(r.MEAN), tuple(r.STD))

    def load(self, path: str) -> np.ndarray:
        """One frame file -> H×W×3 uint8."""
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if im.size != (self.width, self.height):
                    im = im.resize((self.width, self.height), Image.BILINEAR)
                return np.asarray(im, dtype=np.uint8)
        except FileNotFoundError:
            raise DatasetError(f"{path}: frame file not found") from None
        except OSError as e:
            raise DatasetError(f"{path}: cannot read the frame image ({e})") from None

    @property
    def normalizer(self) -> InputNormalizer:
        return InputNormalizer(self.mean, self.std)

    def clip(self, paths: Sequence[str], indices: Sequence[int]) -> torch.Tensor:
        """Frames ``paths[indices]`` -> T×H×W×C uint8 tensor (each file read once)."""
        cache = {i: self.load(paths[i]) for i in sorted(set(int(i) for i in indices))}
        return torch.from_numpy(np.stack([cache[int(i)] for i in indices]))


class ReIDTrainClips(Dataset):
    """Training clips: ``dataset[(tracklet_index, slot)]`` (keys from RandomIdentitySampler)
    -> {"inputs": T×H×W×C uint8, "label": identity, "camid", "index"}. The frames (REID.SAMPLE_MODE)
    and the flip depend only on (seed, epoch, slot)."""

    def __init__(self, tracklets: Sequence[Tracklet], transform: FrameTransform, seq_len: int, mode: str,
                 random_flip: bool = True, seed: int = 0):
        self.tracklets = list(tracklets)
        self.transform, self.seq_len, self.mode = transform, seq_len, mode
        self.random_flip, self.seed, self.epoch = random_flip, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.tracklets)

    def __getitem__(self, key) -> dict:
        index, slot = key if isinstance(key, tuple) else (key, key)
        t = self.tracklets[index]
        rng = np.random.default_rng([self.seed, self.epoch, slot, 0xC11B])
        frames = train_frame_indices(len(t.paths), self.seq_len, self.mode, rng)
        x = self.transform.clip(t.paths, frames)
        if self.random_flip and rng.random() < 0.5:
            x = x.flip(2)
        return {"inputs": x, "label": t.pid, "camid": t.camid, "index": index}


class ReIDTestClips(Dataset):
    """Whole tracklets for feature extraction: item i -> {"inputs": n×C×T×H×W (every frame, in
    chunks of seq_len, the last one padded cyclically with its own frames, see
    :func:`~vidnl.data.reid_sampling.test_chunks`; n×T×H×W×C uint8), "pid", "camid", "index"}."""

    def __init__(self, tracklets: Sequence[Tracklet], transform: FrameTransform, seq_len: int):
        self.tracklets, self.transform, self.seq_len = list(tracklets), transform, seq_len

    def __len__(self) -> int:
        return len(self.tracklets)

    def __getitem__(self, index: int) -> dict:
        t = self.tracklets[index]
        chunks = test_chunks(len(t.paths), self.seq_len)
        x = self.transform.clip(t.paths, chunks.ravel())  # (n·T)×H×W×C
        x = x.view(chunks.shape[0], self.seq_len, *x.shape[1:])
        return {"inputs": x, "pid": t.pid, "camid": t.camid, "index": index}


def collate_reid_train(items: list[dict]) -> dict:
    """-> {"inputs": B×T×H×W×C uint8, "labels": B, "camids": B, "indices": B}."""
    return {"inputs": torch.stack([it["inputs"] for it in items]),
            "labels": torch.tensor([it["label"] for it in items], dtype=torch.long),
            "camids": torch.tensor([it["camid"] for it in items], dtype=torch.long),
            "indices": torch.tensor([it["index"] for it in items], dtype=torch.long)}


def collate_reid_test(items: list[dict]) -> dict:
    """-> {"inputs": (Σn)×T×H×W×C uint8, "chunks": n per tracklet, "pids", "camids", "indices"}."""
    return {"inputs": torch.cat([it["inputs"] for it in items]),
            "chunks": [it["inputs"].shape[0] for it in items],
            "pids": torch.tensor([it["pid"] for it in items], dtype=torch.long),
            "camids": torch.tensor([it["camid"] for it in items], dtype=torch.long),
            "indices": torch.tensor([it["index"] for it in items], dtype=torch.long)}
