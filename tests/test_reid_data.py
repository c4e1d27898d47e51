"""Re-ID datasets in their official layouts (real .mat files, real JPG / PNG frames), sampling.

The writers here (``write_mars``, ``write_ilidsvid``, ``write_prid``) are also used by
test_reid_engine.py.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from vidnl.config import load_config
from vidnl.data.datasets.reid import (FrameTransform, ReIDTestClips, ReIDTrainClips, build_reid_data, load_ilidsvid,
                                      load_mars, load_prid)
from vidnl.data.reid_sampling import RandomIdentitySampler, test_chunks, train_frame_indices
from vidnl.errors import DatasetError


# ------------------------------------------------------------------------------------------------
# Writers of the official layouts
# ------------------------------------------------------------------------------------------------
def plain_frame(part, track, pid, cam, f, h=16, w=8):
    """A frame whose grey level encodes its frame number (to check which frames were read)."""
    return np.full((h, w, 3), 10 * f % 250, np.uint8)


def mars_name(pid: int, cam: int, tnum: int, frame: int) -> str:
    code = "00-1" if pid == -1 else f"{pid:04d}"
    return f"{code}C{cam}T{tnum:04d}F{frame + 1:03d}.jpg"


def write_mars(root: str, train, test, query_rows, frame_fn=plain_frame) -> str:
    """MARS layout. ``train`` / ``test``: lists of (pid, camera 1-based, frames); ``query_rows``:
    0-based rows of ``test``. frame_fn(part, row, pid, cam, f) -> H×W×3 uint8."""
    os.makedirs(os.path.join(root, "info"), exist_ok=True)
    for part, tracks, home in (("train", train, "bbox_train"), ("test", test, "bbox_test")):
        names, rows, counter = [], [], {}
        for row, (pid, cam, n) in enumerate(tracks):
            counter[(pid, cam)] = counter.get((pid, cam), 0) + 1
            start = len(names) + 1
            for f in range(n):
                name = mars_name(pid, cam, counter[(pid, cam)], f)
                folder = os.path.join(root, home, name[:4])
                os.makedirs(folder, exist_ok=True)
                Image.fromarray(frame_fn(part, row, pid, cam, f)).save(os.path.join(folder, name), quality=95)
                names.append(name)
            rows.append([start, len(names), pid, cam])
        with open(os.path.join(root, "info", f"{part}_name.txt"), "w") as fh:
            fh.write("\n".join(names) + "\n")
        scipy.io.savemat(os.path.join(root, "info", f"tracks_{part}_info.mat"),
                         {f"track_{part}_info": np.array(rows, dtype=np.float64)})
    scipy.io.savemat(os.path.join(root, "info", "query_IDX.mat"),
                     {"query_IDX": (np.asarray(query_rows) + 1).astype(np.float64)[None, :]})
    return root


def write_ilidsvid(root: str, persons: list[int], frames: dict, ls_set: np.ndarray, frame_fn=plain_frame) -> str:
    """iLIDS-VID layout: persons ``personNNN`` in cam1 and cam2 with frames[(person, cam)] PNGs."""
    for p in persons:
        for cam in (1, 2):
            folder = os.path.join(root, "i-LIDS-VID", "sequences", f"cam{cam}", f"person{p:03d}")
            os.makedirs(folder, exist_ok=True)
            for f in range(frames[(p, cam)]):
                Image.fromarray(frame_fn("all", p, p, cam, f)).save(
                    os.path.join(folder, f"cam{cam}_person{p:03d}_{f:05d}.png"))
    split_dir = os.path.join(root, "train-test people splits")
    os.makedirs(split_dir, exist_ok=True)
    scipy.io.savemat(os.path.join(split_dir, "train_test_splits_ilidsvid.mat"), {"ls_set": ls_set.astype(np.float64)})
    return root


def write_prid(root: str, frames_a: dict, frames_b: dict, frame_fn=plain_frame) -> str:
    """PRID-2011 multi_shot layout: frames_x[person number] PNGs in cam_x/person_NNNN."""
    for cam, frames in (("a", frames_a), ("b", frames_b)):
        for p, n in frames.items():
            folder = os.path.join(root, "prid_2011", "multi_shot", f"cam_{cam}", f"person_{p:04d}")
            os.makedirs(folder, exist_ok=True)
            for f in range(n):
                Image.fromarray(frame_fn("all", p, p, cam, f)).save(os.path.join(folder, f"{f + 1:04d}.png"))
    return root


# ------------------------------------------------------------------------------------------------
# MARS
# ------------------------------------------------------------------------------------------------
MARS_TRAIN = [(1, 1, 5), (1, 2, 4), (1, 1, 3), (2, 3, 6), (2, 6, 2), (5, 1, 4), (7, 2, 3), (7, 4, 5)]
MARS_TEST = [(10, 1, 4), (10, 2, 5), (10, 1, 3), (11, 2, 4), (11, 5, 3), (12, 1, 2), (12, 3, 6),
             (0, 4, 3), (0, 2, 2), (-1, 1, 3), (-1, 2, 2)]
MARS_QUERY = [0, 3, 6]


@pytest.fixture(scope="module")
def mars_root(tmp_path_factory):
    return write_mars(str(tmp_path_factory.mktemp("mars")), MARS_TRAIN, MARS_TEST, MARS_QUERY)


def test_mars_counts_relabelling_and_junk(mars_root):
    d = load_mars(mars_root, junk_pids=[-1])
    s = d.summary()
    assert (s["train_ids"], s["train_tracklets"], s["train_frames"]) == (4, 8, 32)
    assert d.num_train_pids == 4 and sorted({t.pid for t in d.train}) == [0, 1, 2, 3]
    # query: rows 0, 3, 6 of the test tracks; gallery: the other 8 rows minus the 2 junk (-1) ones
    assert [(t.pid, t.camid, len(t.paths)) for t in d.query] == [(10, 0, 4), (11, 1, 4), (12, 2, 6)]
    assert len(d.gallery) == 6 and sorted({t.pid for t in d.gallery}) == [0, 10, 11, 12]
    assert s["junk_gallery_tracklets"] == 2 and s["distractor_gallery_tracklets"] == 2
    # frames in the listed order, in bbox_test/<pid folder>/
    assert d.query[0].paths[0].endswith(os.path.join("bbox_test", "0010", "0010C1T0001F001.jpg"))
    assert [os.path.basename(p) for p in d.query[0].paths][-1] == "0010C1T0001F004.jpg"
    # without the junk rule the two -1 tracklets stay in the gallery
    assert len(load_mars(mars_root, junk_pids=[]).gallery) == 8


def test_mars_from_config(mars_root):
    cfg = load_config(None, ["MODEL.TASK", "reid", "MODEL.ARCH", "resnet50tp", "REID.ROOT", mars_root,
                             "TRAIN.BATCH_SIZE", "8"])
    d = build_reid_data(cfg)
    assert (len(d.train), len(d.query), len(d.gallery)) == (8, 3, 6)


def _copy(src: str, dst: str) -> str:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("case", ["no_variable", "shape", "garbage", "query_range", "end_range", "missing_file",
                                  "missing_list", "name_mismatch"])
def test_mars_malformed_files_name_file_and_field(mars_root, tmp_path, case):
    root = _copy(mars_root, str(tmp_path / "m"))
    info = os.path.join(root, "info")
    tracks = scipy.io.loadmat(os.path.join(info, "tracks_test_info.mat"))["track_test_info"]
    if case == "no_variable":
        scipy.io.savemat(os.path.join(info, "tracks_test_info.mat"), {"tracks": tracks})
        expect = ["tracks_test_info.mat", "'track_test_info'", "tracks"]
    elif case == "shape":
        scipy.io.savemat(os.path.join(info, "tracks_test_info.mat"), {"track_test_info": tracks[:, :3]})
        expect = ["tracks_test_info.mat", "'track_test_info'", "N×4", "(11, 3)"]
    elif case == "garbage":
        with open(os.path.join(info, "tracks_train_info.mat"), "wb") as f:
            f.write(b"this is not a mat file at all" * 10)
        expect = ["tracks_train_info.mat", "'track_train_info'"]
    elif case == "query_range":
        scipy.io.savemat(os.path.join(info, "query_IDX.mat"), {"query_IDX": np.array([[1.0, 12.0]])})
        expect = ["query_IDX.mat", "'query_IDX'", "1..11"]
    elif case == "end_range":
        bad = tracks.copy()
        bad[4, 1] = 999
        scipy.io.savemat(os.path.join(info, "tracks_test_info.mat"), {"track_test_info": bad})
        expect = ["tracks_test_info.mat", "'track_test_info' row 5", "end 999"]
    elif case == "missing_file":
        os.remove(os.path.join(root, "bbox_test", "0011", "0011C2T0001F002.jpg"))
        expect = ["0011C2T0001F002.jpg", "file not found", "test_name.txt"]
    elif case == "missing_list":
        os.remove(os.path.join(info, "train_name.txt"))
        expect = ["train_name.txt", "not found"]
    else:
        bad = tracks.copy()
        bad[0, 2] = 11  # names of row 1 are identity 10
        scipy.io.savemat(os.path.join(info, "tracks_test_info.mat"), {"track_test_info": bad})
        expect = ["tracks_test_info.mat", "row 1", "pid 10", "pid 11"]
    with pytest.raises(DatasetError) as e:
        load_mars(root)
    for piece in expect:
        assert piece in str(e.value), (piece, str(e.value))


# ------------------------------------------------------------------------------------------------
# iLIDS-VID
# ------------------------------------------------------------------------------------------------
ILIDS_PERSONS = [1, 2, 4, 5, 9, 12, 13, 20]


@pytest.fixture(scope="module")
def ilids_root(tmp_path_factory):
    rng = np.random.default_rng(0)
    ls = np.stack([rng.permutation(8) + 1 for _ in range(10)])
    frames = {(p, c): 3 + (p + c) % 4 for p in ILIDS_PERSONS for c in (1, 2)}
    root = write_ilidsvid(str(tmp_path_factory.mktemp("ilids")), ILIDS_PERSONS, frames, ls)
    return root, ls, frames


def test_ilidsvid_split_follows_ls_set(ilids_root):
    root, ls, frames = ilids_root
    for split in (0, 7):
        d = load_ilidsvid(root, split)
        test_persons = sorted(ILIDS_PERSONS[i - 1] for i in ls[split, :4])  # first half: test
        assert d.num_splits == 10 and d.split_id == split
        assert [t.pid for t in d.query] == test_persons and [t.pid for t in d.gallery] == test_persons
        assert {t.camid for t in d.query} == {0} and {t.camid for t in d.gallery} == {1}
        assert [len(t.paths) for t in d.query] == [frames[(p, 1)] for p in test_persons]
        assert len(d.train) == 8 and d.num_train_pids == 4
        assert sorted({t.pid for t in d.train}) == [0, 1, 2, 3]
        # frames sorted by name
        assert list(d.gallery[0].paths) == sorted(d.gallery[0].paths)


def test_ilidsvid_errors(ilids_root, tmp_path):
    root, ls, _ = ilids_root
    with pytest.raises(DatasetError, match="has 10 splits"):
        load_ilidsvid(root, 10)
    bad = _copy(root, str(tmp_path / "i"))
    ls_bad = ls.copy()
    ls_bad[2, 0] = ls_bad[2, 1]
    scipy.io.savemat(os.path.join(bad, "train-test people splits", "train_test_splits_ilidsvid.mat"),
                     {"ls_set": ls_bad})
    with pytest.raises(DatasetError) as e:
        load_ilidsvid(bad, 0)
    assert "train_test_splits_ilidsvid.mat" in str(e.value) and "'ls_set' row 3" in str(e.value)
    scipy.io.savemat(os.path.join(bad, "train-test people splits", "train_test_splits_ilidsvid.mat"),
                     {"ls_set": ls[:, :6]})
    with pytest.raises(DatasetError, match="'ls_set' has 6 columns"):
        load_ilidsvid(bad, 0)


# ------------------------------------------------------------------------------------------------
# PRID-2011
# ------------------------------------------------------------------------------------------------
def test_prid_rule_and_saved_splits(tmp_path):
    # persons 1..10 are shared; 3 and 7 are too short in one camera; 11, 12 are other people
    frames_a = {p: 6 for p in range(1, 13)}
    frames_b = {p: 7 for p in range(1, 16)}
    frames_a[3], frames_b[7] = 4, 2
    root = write_prid(str(tmp_path / "prid"), frames_a, frames_b)
    d = load_prid(root, 0, min_frames=5, num_shared=10)
    usable = [1, 2, 4, 5, 6, 8, 9, 10]
    assert {t.pid for t in d.query} | {t.pid for t in d.gallery} < set(usable) and d.num_splits == 10
    assert len(d.query) == len(d.gallery) == 4 and len(d.train) == 8 and d.num_train_pids == 4
    assert {t.camid for t in d.query} == {0} and {t.camid for t in d.gallery} == {1}
    path = os.path.join(root, "splits_prid2011_vidnl.json")
    saved = json.load(open(path))
    assert saved["persons"] == [f"person_{p:04d}" for p in usable] and saved["min_frames"] == 5
    assert len(saved["splits"]) == 10
    for s in saved["splits"]:
        assert sorted(s["train"] + s["test"]) == saved["persons"] and not set(s["train"]) & set(s["test"])
    assert len({tuple(s["test"]) for s in saved["splits"]}) > 1  # random, not all the same
    # reused: a split edited in the file is what the loader uses
    saved["splits"][3] = {"train": saved["persons"][:4], "test": saved["persons"][4:]}
    json.dump(saved, open(path, "w"))
    d3 = load_prid(root, 3, min_frames=5, num_shared=10)
    assert [t.pid for t in d3.query] == [6, 8, 9, 10]
    # the same seed draws the same splits on another copy of the data
    other = write_prid(str(tmp_path / "prid2"), frames_a, frames_b)
    load_prid(other, 0, min_frames=5, num_shared=10)
    assert json.load(open(os.path.join(other, "splits_prid2011_vidnl.json")))["splits"][0] == saved["splits"][0]
    # a file made with another frame rule is refused, naming the field
    with pytest.raises(DatasetError, match="'min_frames' is 5"):
        load_prid(root, 0, min_frames=3, num_shared=10)
    with open(path, "w") as f:
        f.write("{broken")
    with pytest.raises(DatasetError, match="splits_prid2011_vidnl.json"):
        load_prid(root, 0, min_frames=5, num_shared=10)
    # a file whose 'splits' is not a list of splits is refused, naming the field
    for bad in (5, [], {"train": []}, "abc"):
        json.dump({**saved, "splits": bad}, open(path, "w"))
        with pytest.raises(DatasetError, match="field 'splits'"):
            load_prid(root, 0, min_frames=5, num_shared=10)


# The community split file (splits_prid2011.json, as torchreid's
# torchreid/data/datasets/video/prid2011.py reads it): a JSON list of {"train": [...], "test": [...]}
# person-folder lists. These lists are written out by hand, not by vidnl.
COMMUNITY_SPLITS = [
    {"test": ["person_0006", "person_0001", "person_0003"], "train": ["person_0002", "person_0009", "person_0004"]},
    {"test": ["person_0002", "person_0010", "person_0004"], "train": ["person_0001", "person_0006", "person_0008"]},
    {"test": ["person_0008", "person_0009"], "train": ["person_0003", "person_0010", "person_0006", "person_0001"]},
]
# the same persons as numbers: split k -> (train, test)
COMMUNITY_EXPECTED = [([2, 4, 9], [1, 3, 6]), ([1, 6, 8], [2, 4, 10]), ([1, 3, 6, 10], [8, 9])]


def prid_replica(root: str) -> str:
    """Persons 1..12 in both cameras; person 3 is shorter than min_frames 5 in cam_a (the community
    file, not REID.PRID_MIN_FRAMES, decides who is used); 11 and 12 are other people (num_shared 10)."""
    frames_a = {p: 6 for p in range(1, 13)}
    frames_b = {p: 5 + p % 3 for p in range(1, 13)}
    frames_a[3] = 2
    return write_prid(root, frames_a, frames_b)


def _person_of(t) -> int:
    return int(os.path.basename(os.path.dirname(t.paths[0])).split("_")[1])


def test_prid_community_split_file_is_read_as_torchreid_does(tmp_path, caplog):
    import logging

    root = prid_replica(str(tmp_path / "prid2011"))
    with open(os.path.join(root, "splits_prid2011.json"), "w") as f:
        json.dump(COMMUNITY_SPLITS, f, indent=4)
    base = os.path.join(root, "prid_2011", "multi_shot")
    for k, (train, test) in enumerate(COMMUNITY_EXPECTED):
        with caplog.at_level(logging.INFO, logger="vidnl.data.datasets.reid"):
            caplog.clear()
            d = load_prid(root, k, min_frames=5, num_shared=10)
        assert d.num_splits == 3 and d.split_id == k
        # the persons of split k are exactly the file's lists
        assert sorted({_person_of(t) for t in d.train}) == train
        assert [t.pid for t in d.query] == test and [t.pid for t in d.gallery] == test
        assert [t.camid for t in d.query] == [0] * len(test) and [t.camid for t in d.gallery] == [1] * len(test)
        assert [(_person_of(t), t.camid) for t in d.train] == [(p, c) for p in train for c in (0, 1)]
        assert d.num_train_pids == len(train) and sorted({t.pid for t in d.train}) == list(range(len(train)))
        # every frame of the person folders, in order (torchreid globs the same *.png files)
        q0 = d.query[0]
        folder = os.path.join(base, "cam_a", f"person_{test[0]:04d}")
        assert list(q0.paths) == [os.path.join(folder, n) for n in sorted(os.listdir(folder))]
        assert d.notes["split_source"] == "community"
        assert d.summary()["split_file"] == os.path.join(root, "splits_prid2011.json")
        msgs = [r.getMessage() for r in caplog.records]
        assert any("community splits" in m and "splits_prid2011.json" in m for m in msgs), msgs
    # nothing drawn or written by vidnl
    assert not os.path.exists(os.path.join(root, "splits_prid2011_vidnl.json"))
    # from the config: REID.SPLIT_ID k and the number of splits come from the file
    from vidnl.data.datasets.reid import num_splits
    cfg = load_config(None, ["MODEL.TASK", "reid", "MODEL.ARCH", "resnet50tp", "REID.DATASET", "prid",
                             "REID.ROOT", root, "REID.SPLIT_ID", "2", "REID.PRID_MIN_FRAMES", "5",
                             "TRAIN.BATCH_SIZE", "8"])
    assert num_splits(cfg) == 3
    assert [t.pid for t in build_reid_data(cfg).query] == [8, 9]
    with pytest.raises(DatasetError, match="PRID-2011 has 3 splits"):
        load_prid(root, 3, min_frames=5, num_shared=10)


def test_prid_without_community_file_uses_drawn_splits_and_says_so(tmp_path, caplog):
    import logging

    root = prid_replica(str(tmp_path / "prid2011"))
    with caplog.at_level(logging.INFO, logger="vidnl.data.datasets.reid"):
        d = load_prid(root, 0, min_frames=5, num_shared=10)
    assert d.notes["split_source"] == "vidnl" and d.num_splits == 10
    drawn = os.path.join(root, "splits_prid2011_vidnl.json")
    assert d.notes["split_file"] == drawn and os.path.isfile(drawn)
    msgs = [r.getMessage() for r in caplog.records]
    assert any("no splits_prid2011.json" in m and "vidnl's own splits" in m for m in msgs), msgs
    # person 3 (too short) is not drawn; the file then takes over, even with the vidnl file there
    assert 3 not in {_person_of(t) for t in d.train} | {t.pid for t in d.query}
    with open(os.path.join(root, "splits_prid2011.json"), "w") as f:
        json.dump(COMMUNITY_SPLITS, f)
    d = load_prid(root, 0, min_frames=5, num_shared=10)
    assert d.notes["split_source"] == "community" and [t.pid for t in d.query] == [1, 3, 6]


@pytest.mark.parametrize("content, match", [
    ("{broken", "cannot be read as JSON"),
    ({"splits": COMMUNITY_SPLITS}, "expected a JSON list of splits"),
    ([], "got an empty list"),
    ([["person_0001", "person_0002"], ["person_0004"]], "split 0 must be an object with 'train' and 'test'"),
    ([{"train": ["person_0001"]}], "split 0 must be an object with 'train' and 'test'"),
    ([COMMUNITY_SPLITS[0], {"train": [1, 2], "test": [4]}], "split 1 'train' must be a non-empty list of person"),
    ([{"train": ["person_0001", "person_0099"], "test": ["person_0002"]}], r"split 0 'train' names persons that "
                                                                          r"are not in this PRID-2011 copy: \['person_0099'\]"),
    ([{"train": ["person_0001"], "test": ["person_0011"]}], r"'test' names persons .*\['person_0011'\]"),
    ([{"train": ["person_0001"], "test": ["1"]}], r"'test' names persons .*\['1'\]"),
    ([{"train": ["person_0001", "person_0002"], "test": ["person_0002", "person_0004"]}],
     r"split 0 has 1 persons in both 'train' and 'test': \['person_0002'\]"),
    ([{"train": ["person_0001", "person_0001"], "test": ["person_0002"]}], "lists persons more than once"),
])
def test_prid_malformed_community_file_is_a_clear_error(tmp_path, content, match):
    root = prid_replica(str(tmp_path / "prid2011"))
    path = os.path.join(root, "splits_prid2011.json")
    with open(path, "w") as f:
        f.write(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(DatasetError, match=match) as e:
        load_prid(root, 0, min_frames=5, num_shared=10)
    assert str(e.value).startswith(path) and "\n" not in str(e.value)


def test_prid_vidnl_split_file_with_nested_lists_is_a_clear_error(tmp_path):
    root = prid_replica(str(tmp_path / "prid2011"))
    load_prid(root, 0, min_frames=5, num_shared=10)
    path = os.path.join(root, "splits_prid2011_vidnl.json")
    saved = json.load(open(path))
    saved["splits"][0] = {"train": [["person_0001", "person_0002"]], "test": [["person_0004"]]}
    json.dump(saved, open(path, "w"))
    with pytest.raises(DatasetError, match=r"field 'splits'\[0\] must hold 'train' and 'test' lists of person"):
        load_prid(root, 0, min_frames=5, num_shared=10)


def test_empty_root_is_a_clear_error():
    cfg = load_config(None, ["MODEL.TASK", "reid", "MODEL.ARCH", "resnet50tp", "TRAIN.BATCH_SIZE", "8"])
    with pytest.raises(DatasetError, match="REID.ROOT is empty"):
        build_reid_data(cfg)


# ------------------------------------------------------------------------------------------------
# Sampling
# ------------------------------------------------------------------------------------------------
def test_random_identity_sampler_pk_batches():
    # identity -> number of tracklets; 1 and 4 have fewer than K = 4
    counts = {0: 6, 1: 2, 2: 4, 3: 5, 4: 1, 5: 8, 6: 4, 7: 9}
    pids = [p for p, n in counts.items() for _ in range(n)]
    sampler = RandomIdentitySampler(pids, batch_size=8, num_instances=4, seed=3)
    assert sampler.num_steps() == 4 and len(sampler) == 4
    seen = []
    for batch in sampler:
        assert len(batch) == 8
        idx = [t for t, _ in batch]
        groups = [idx[:4], idx[4:]]
        ids = [{pids[t] for t in g} for g in groups]
        assert all(len(s) == 1 for s in ids) and ids[0] != ids[1]  # P = 2 distinct identities x K = 4
        for g in groups:
            pid = pids[g[0]]
            seen.append(pid)
            if counts[pid] >= 4:
                assert len(set(g)) == 4  # K distinct tracklets
            else:
                assert set(g) <= {t for t, p in enumerate(pids) if p == pid}
        assert [s for _, s in batch] == list(range(batch[0][1], batch[0][1] + 8))  # slots are positions
    assert sorted(seen) == sorted(counts)  # every identity once per epoch
    again = RandomIdentitySampler(pids, batch_size=8, num_instances=4, seed=3)
    assert list(again) == list(sampler)
    sampler.set_epoch(1)
    assert sampler.batches() != again.batches()
    sampler.set_epoch(1, start_step=3)
    full = RandomIdentitySampler(pids, 8, 4, seed=3)
    full.set_epoch(1)
    assert list(sampler) == list(full)[3:] and len(sampler) == 1


def test_frame_indices():
    rng = np.random.default_rng(0)
    for _ in range(20):
        idx = train_frame_indices(17, 4, "random_consecutive", rng)
        assert len(idx) == 4 and np.all(np.diff(idx) == 1) and 0 <= idx[0] <= 13
        idx = train_frame_indices(17, 4, "restricted_random", rng)
        edges = np.floor(np.linspace(0, 17, 5)).astype(int)
        assert all(lo <= i < hi for i, lo, hi in zip(idx, edges[:-1], edges[1:]))
    starts = {int(train_frame_indices(10, 4, "random_consecutive", rng)[0]) for _ in range(200)}
    assert starts == set(range(7))
    for mode in ("random_consecutive", "restricted_random"):
        assert train_frame_indices(2, 4, mode, rng).tolist() == [0, 1, 1, 1]
    assert test_chunks(10, 4).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 8, 9]]  # cyclic, as Gao & Nevatia
    assert test_chunks(4, 4).tolist() == [[0, 1, 2, 3]]
    with pytest.raises(ValueError, match="SAMPLE_MODE"):
        train_frame_indices(5, 4, "uniform", rng)


def test_clip_datasets_read_the_right_frames(mars_root):
    d = load_mars(mars_root)
    tf = FrameTransform(16, 8, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    test = ReIDTestClips(d.query, tf, seq_len=4)
    item = test[2]  # 6 frames -> 2 chunks, the last [4, 5, 4, 5] (cyclic padding)
    assert item["inputs"].shape == (2, 4, 16, 8, 3) and item["inputs"].dtype == torch.uint8  # n×T×H×W×C
    assert item["pid"] == 12 and item["camid"] == 2
    x = tf.normalizer(item["inputs"])  # the model's n×C×T×H×W, here mean 0 and std 1
    assert x.shape == (2, 3, 4, 16, 8)
    grey = (x[:, 0, :, 0, 0] * 255).numpy()
    assert np.abs(grey - [[0, 10, 20, 30], [40, 50, 40, 50]]).max() <= 2  # JPEG of a flat image ~ keeps its level
    train = ReIDTrainClips(d.train, FrameTransform(32, 16), seq_len=4, mode="random_consecutive", seed=1)
    x = train[(0, 5)]
    assert x["inputs"].shape == (4, 32, 16, 3) and x["label"] == 0
    assert (train[(0, 5)]["inputs"] == x["inputs"]).all()  # a function of (seed, epoch, slot)
    train.set_epoch(1)
    firsts = {float(train[(3, s)]["inputs"][0, 0, 0, 0]) for s in range(30)}
    assert len(firsts) > 1  # other epochs / slots give other clips
