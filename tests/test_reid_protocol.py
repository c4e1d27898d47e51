"""The re-ID evaluation protocol against the peers' rules, each reference written here from the
peer's code (torchreid's prid2011.py / ilidsvid.py, Gao & Nevatia's Video-Person-ReID
``video_loader.py`` "dense" sampling, ``eval_metrics.evaluate`` and ``test()``), sharing no code
with vidnl: PRID-2011 and iLIDS-VID splits in the official folder layouts (a community
``splits_prid2011.json``, a real .mat written by scipy, torchreid's ``splits.json``), the test
chunks of a tracklet, CMC/mAP, and the whole feature + ranking path on the same weights.
"""

from __future__ import annotations

import glob
import json
import logging
import os

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from vidnl.config import load_config
from vidnl.data.datasets.reid import load_ilidsvid, load_prid
from vidnl.data.reid_sampling import test_chunks
from vidnl.engine import reid as engine
from vidnl.engine.reid_metrics import distance_matrix, evaluate_ranking
from vidnl.errors import DatasetError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------------------------------------
# Replicas of the official layouts (frames whose pixels say which person / camera / frame they are)
# ------------------------------------------------------------------------------------------------
def _frame(person: int, cam: int, f: int, h: int = 40, w: int = 20) -> np.ndarray:
    rng = np.random.default_rng([person, cam, f])
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img[0, 0] = (person % 256, cam, f)  # readable back from the PNG (lossless)
    return img


def write_prid_replica(root: str, frames_a: dict, frames_b: dict, splits: list | None) -> str:
    """``prid_2011/multi_shot/cam_a|cam_b/person_NNNN/NNNN.png`` with frames_x[person] frames,
    and ``splits_prid2011.json`` (the community format: a list of {"train", "test"} lists)."""
    for cam, frames in ((0, frames_a), (1, frames_b)):
        for p, n in frames.items():
            folder = os.path.join(root, "prid_2011", "multi_shot", "cam_" + "ab"[cam], f"person_{p:04d}")
            os.makedirs(folder, exist_ok=True)
            for f in range(n):
                Image.fromarray(_frame(p, cam, f)).save(os.path.join(folder, f"{f + 1:04d}.png"))
    if splits is not None:
        with open(os.path.join(root, "splits_prid2011.json"), "w") as fh:
            json.dump(splits, fh)
    return root


def write_ilidsvid_replica(root: str, persons: list, frames: dict, ls_set: np.ndarray) -> str:
    """``i-LIDS-VID/sequences/cam1|cam2/personNNN/camC_personNNN_FFFFF.png`` and the official
    ``train-test people splits/train_test_splits_ilidsvid.mat`` (``ls_set``) written by scipy."""
    for p in persons:
        for cam in (1, 2):
            folder = os.path.join(root, "i-LIDS-VID", "sequences", f"cam{cam}", f"person{p:03d}")
            os.makedirs(folder, exist_ok=True)
            for f in range(frames[(p, cam)]):
                name = f"cam{cam}_person{p:03d}_{f:05d}.png"
                Image.fromarray(_frame(p, cam, f, 8, 4)).save(os.path.join(folder, name))
    split_dir = os.path.join(root, "train-test people splits")
    os.makedirs(split_dir, exist_ok=True)
    scipy.io.savemat(os.path.join(split_dir, "train_test_splits_ilidsvid.mat"), {"ls_set": ls_set.astype(np.float64)})
    return root


# PRID: persons 1..10 in both cameras (person 4 has 5 frames in cam_b: below Wang et al.'s 21, but
# the community file decides), person 201 / 250 only in one camera (not in the shared 1..200).
PRID_A = {1: 9, 2: 12, 3: 4, 4: 23, 5: 7, 6: 8, 7: 3, 8: 10, 9: 6, 10: 5, 250: 4}
PRID_B = {1: 6, 2: 5, 3: 13, 4: 5, 5: 9, 6: 2, 7: 11, 8: 4, 9: 8, 10: 7, 201: 3}
# the lists in the file's (unsorted) order, as the community file has them
PRID_SPLITS = [
    {"test": ["person_0007", "person_0002", "person_0009", "person_0004", "person_0005"],
     "train": ["person_0010", "person_0001", "person_0006", "person_0003", "person_0008"]},
    {"test": ["person_0001", "person_0003", "person_0006", "person_0008", "person_0010"],
     "train": ["person_0009", "person_0002", "person_0007", "person_0005", "person_0004"]},
    {"test": ["person_0010", "person_0004"], "train": ["person_0002", "person_0003", "person_0001"]},
]


@pytest.fixture(scope="module")
def prid_root(tmp_path_factory):
    return write_prid_replica(str(tmp_path_factory.mktemp("prid2011")), PRID_A, PRID_B, PRID_SPLITS)


# ------------------------------------------------------------------------------------------------
# Splits: vidnl's tracklets against torchreid's rules
# ------------------------------------------------------------------------------------------------
def torchreid_tracklets(cam_dirs: list, dirnames: list, cams: tuple) -> list:
    """torchreid's ``process_dir`` / ``process_data`` (prid2011.py, ilidsvid.py): for each person
    folder of the split list, in the list's order, its pid is its position in the list; a tracklet
    (every *.png of the folder, pid, camid) per camera asked for. -> [(paths, pid, camid)]."""
    out = []
    for pid, d in enumerate(dirnames):
        for camid in cams:
            paths = glob.glob(os.path.join(cam_dirs[camid], d, "*.png"))
            assert paths
            out.append((tuple(paths), pid, camid))
    return out


def assert_same_tracklets(vidnl_part, ref_part, relabelled: bool):
    """The same tracklets (frame sets, cameras) in both; vidnl's frames in file-name order; the
    identities equal up to a renaming (a bijection), and 0..P-1 when ``relabelled``."""
    ours = {(os.path.dirname(t.paths[0]), t.camid): t for t in vidnl_part}
    theirs = {(os.path.dirname(p[0]), c): (p, pid) for p, pid, c in ref_part}
    assert len(ours) == len(vidnl_part) and len(theirs) == len(ref_part)
    assert ours.keys() == theirs.keys()
    rename = {}
    for key, t in ours.items():
        paths, pid = theirs[key]
        assert sorted(t.paths) == sorted(paths)
        assert list(t.paths) == sorted(t.paths, key=os.path.basename)  # temporal order
        assert rename.setdefault(t.pid, pid) == pid  # one vidnl pid -> one torchreid pid
    assert len(set(rename.values())) == len(rename)  # and back
    if relabelled:
        assert sorted(rename) == list(range(len(rename)))


def test_prid_community_splits_give_torchreids_tracklets(prid_root):
    cams = [os.path.join(prid_root, "prid_2011", "multi_shot", c) for c in ("cam_a", "cam_b")]
    for k, split in enumerate(PRID_SPLITS):
        d = load_prid(prid_root, k)
        assert d.notes["split_source"] == "community" and d.num_splits == len(PRID_SPLITS)
        assert_same_tracklets(d.train, torchreid_tracklets(cams, split["train"], (0, 1)), relabelled=True)
        assert_same_tracklets(d.query, torchreid_tracklets(cams, split["test"], (0,)), relabelled=False)
        assert_same_tracklets(d.gallery, torchreid_tracklets(cams, split["test"], (1,)), relabelled=False)
        # one identity renaming for query and gallery together (a query's matches are its person's)
        assert_same_tracklets(d.query + d.gallery, torchreid_tracklets(cams, split["test"], (0, 1)), relabelled=False)
        # query and gallery name the same identities: each query person once per camera
        assert sorted(t.pid for t in d.query) == sorted(t.pid for t in d.gallery)
        assert {t.camid for t in d.query} == {0} and {t.camid for t in d.gallery} == {1}
    # the short person 4 (5 frames in cam_b) is used: the file, not REID.PRID_MIN_FRAMES, decides
    assert any(t.pid == 4 for t in load_prid(prid_root, 0, min_frames=21).query)


def test_prid_round_trip_of_a_split_file(prid_root, tmp_path):
    """The splits that vidnl reads back from the community file are the file's (as sets), the
    file written again from vidnl's tracklets gives the same tracklets."""
    for k, split in enumerate(PRID_SPLITS):
        d = load_prid(prid_root, k)
        pers = lambda ts: sorted({os.path.basename(os.path.dirname(t.paths[0])) for t in ts})  # noqa: E731
        assert pers(d.train) == sorted(split["train"]) and pers(d.query) == sorted(split["test"])
    again = [{"train": sorted({os.path.basename(os.path.dirname(t.paths[0])) for t in load_prid(prid_root, k).train}),
              "test": sorted({os.path.basename(os.path.dirname(t.paths[0])) for t in load_prid(prid_root, k).query})}
             for k in range(len(PRID_SPLITS))]
    root2 = write_prid_replica(str(tmp_path), PRID_A, PRID_B, again)
    def strip(ts, r):
        return [(tuple(os.path.relpath(p, r) for p in t.paths), t.pid, t.camid) for t in ts]

    for k in range(len(PRID_SPLITS)):
        a, b = load_prid(prid_root, k), load_prid(root2, k)
        for part in ("train", "query", "gallery"):
            assert strip(getattr(a, part), prid_root) == strip(getattr(b, part), root2)


# iLIDS-VID: person numbers with gaps (as the real 300 of 319), 3 splits of 8 persons
ILIDS_PERSONS = [1, 2, 5, 7, 10, 11, 13, 20]
ILIDS_FRAMES = {(p, c): 2 + (p * c) % 4 for p in ILIDS_PERSONS for c in (1, 2)}


def _ls_set(num_splits: int, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(n) + 1 for _ in range(num_splits)])


def torchreid_ilidsvid_splits(root: str, ls_set: np.ndarray) -> list:
    """torchreid's ``prepare_split``: ``ls_set`` entries are 1-based positions in the sorted person
    folders of cam1; the first half of a row test, the rest train (each sorted by position)."""
    dirs = [os.path.basename(p) for p in sorted(glob.glob(os.path.join(root, "i-LIDS-VID/sequences/cam1", "*")))]
    half = ls_set.shape[1] // 2
    return [{"train": [dirs[int(i) - 1] for i in sorted(row[half:])],
             "test": [dirs[int(i) - 1] for i in sorted(row[:half])]} for row in ls_set]


@pytest.fixture
def ilids_root(tmp_path):
    return write_ilidsvid_replica(str(tmp_path), ILIDS_PERSONS, ILIDS_FRAMES, _ls_set(3, len(ILIDS_PERSONS)))


def test_ilidsvid_mat_splits_give_torchreids_tracklets(ilids_root):
    ls = scipy.io.loadmat(os.path.join(ilids_root, "train-test people splits", "train_test_splits_ilidsvid.mat"))
    splits = torchreid_ilidsvid_splits(ilids_root, ls["ls_set"])
    cams = [os.path.join(ilids_root, "i-LIDS-VID", "sequences", c) for c in ("cam1", "cam2")]
    for k, split in enumerate(splits):
        d = load_ilidsvid(ilids_root, k)
        assert d.notes["split_source"] == "mat" and d.num_splits == 3
        assert_same_tracklets(d.train, torchreid_tracklets(cams, split["train"], (0, 1)), relabelled=True)
        assert_same_tracklets(d.query, torchreid_tracklets(cams, split["test"], (0,)), relabelled=False)
        assert_same_tracklets(d.gallery, torchreid_tracklets(cams, split["test"], (1,)), relabelled=False)
        # one identity renaming for query and gallery together (a query's matches are its person's)
        assert_same_tracklets(d.query + d.gallery, torchreid_tracklets(cams, split["test"], (0, 1)), relabelled=False)
        assert {t.pid for t in d.query} == {int(s[len("person"):]) for s in split["test"]}  # original numbers


def test_ilidsvid_reads_torchreids_split_file_when_present(ilids_root, caplog):
    ls = scipy.io.loadmat(os.path.join(ilids_root, "train-test people splits", "train_test_splits_ilidsvid.mat"))
    same = torchreid_ilidsvid_splits(ilids_root, ls["ls_set"])
    path = os.path.join(ilids_root, "splits.json")
    with open(path, "w") as f:
        json.dump(same, f)  # what torchreid writes on first use
    with caplog.at_level(logging.INFO, logger="vidnl.data.datasets.reid"):
        d = load_ilidsvid(ilids_root, 1)
    assert d.notes == {"split_source": "splits.json", "split_file": path}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    # a file that differs from the .mat (e.g. Video-Person-ReID's, mapped through os.listdir order)
    # is used, with a warning naming the split
    other = [dict(s) for s in same]
    other[2] = {"train": same[2]["test"], "test": same[2]["train"]}
    with open(path, "w") as f:
        json.dump(other, f)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="vidnl.data.datasets.reid"):
        d = load_ilidsvid(ilids_root, 2)
    assert sorted({t.pid for t in d.query}) == sorted(int(s[6:]) for s in same[2]["train"])
    assert any(r.levelno == logging.WARNING and "split(s) [2]" in r.getMessage() for r in caplog.records)
    for bad, msg in (({"train": []}, "expected a JSON list"), ([{"train": ["person001"]}], "split 0 must be"),
                     ([{"train": ["person001"], "test": ["person999"]}], "person999"),
                     ([{"train": ["person001"], "test": ["person001"]}], "both 'train' and 'test'")):
        with open(path, "w") as f:
            json.dump(bad, f)
        with pytest.raises(DatasetError, match=msg):
            load_ilidsvid(ilids_root, 0)
    os.remove(path)
    with pytest.raises(DatasetError, match=r"REID.SPLIT_ID 3: iLIDS-VID has 3 splits"):
        load_ilidsvid(ilids_root, 3)
    # with splits.json, an unreadable .mat is not needed (as for torchreid): warned, not fatal
    with open(path, "w") as f:
        json.dump(same, f)
    with open(os.path.join(ilids_root, "train-test people splits", "train_test_splits_ilidsvid.mat"), "w") as f:
        f.write("not a mat file")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="vidnl.data.datasets.reid"):
        assert load_ilidsvid(ilids_root, 0).notes["split_source"] == "splits.json"
    assert any("cannot compare" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------------------------
# Test chunks against Video-Person-ReID's "dense" sampling
# ------------------------------------------------------------------------------------------------
def dense_chunks(num: int, seq_len: int) -> list:
    """video_loader.VideoDataset(sample='dense') under Python 2 (its language: ``range`` is a
    list): full chunks while more than seq_len frames remain, then the rest, to which the loop
    ``for index in last_seq: ... last_seq.append(index)`` appends its own elements in order
    until it has seq_len."""
    cur, chunks = 0, []
    while num - cur > seq_len:
        chunks.append(list(range(cur, cur + seq_len)))
        cur += seq_len
    last = list(range(cur, num))
    for index in last:  # iterating a growing list, as the original does
        if len(last) >= seq_len:
            break
        last.append(index)
    chunks.append(last)
    return chunks


def test_test_chunks_equal_video_person_reids_dense_sampling():
    for seq_len in range(1, 9):
        for n in range(1, 41):
            assert test_chunks(n, seq_len).tolist() == dense_chunks(n, seq_len), (n, seq_len)


# ------------------------------------------------------------------------------------------------
# CMC / mAP against Video-Person-ReID's eval_metrics.evaluate
# ------------------------------------------------------------------------------------------------
def vpr_evaluate(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """eval_metrics.evaluate, one query at a time: drop gallery items of the query's pid *and*
    camera, skip queries left without a match, CMC = cumulated first hit (clipped to 1, cut at
    max_rank <= num gallery), AP = mean of precision@k at the hits; averaged over kept queries."""
    num_q, num_g = distmat.shape
    max_rank = min(max_rank, num_g)
    cmcs, aps = [], []
    for i in range(num_q):
        order = np.argsort(distmat[i], kind="stable")
        keep = ~((g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i]))
        hits = (g_pids[order][keep] == q_pids[i]).astype(np.float64)
        if hits.sum() == 0:
            continue
        first = int(np.argmax(hits))
        cmc = np.ones(max_rank)  # (the original's rows are ragged when removals leave < max_rank items)
        cmc[:first] = 0
        cmcs.append(cmc)
        prec = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        aps.append(float((prec * hits).sum() / hits.sum()))
    return np.mean(cmcs, 0), float(np.mean(aps)), num_q - len(aps)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("method", ["count", "sort"])
def test_cmc_map_equal_video_person_reids_evaluate(seed, method):
    rng = np.random.default_rng(seed)
    nq, ng = int(rng.integers(5, 40)), int(rng.integers(8, 60))
    q_pids, g_pids = rng.integers(0, 12, nq), rng.integers(0, 12, ng)
    q_pids[0] = 99  # a query whose identity is not in the gallery: skipped
    q_cam, g_cam = rng.integers(0, 3, nq), rng.integers(0, 3, ng)
    g_pids[0], g_cam[0] = q_pids[1], q_cam[1]  # same id, same camera: excluded
    dist = rng.random((nq, ng))  # continuous: no ties
    cmc, mAP, skipped = vpr_evaluate(dist, q_pids, g_pids, q_cam, g_cam)
    ranks = list(range(1, min(20, ng) + 1))
    res = evaluate_ranking(torch.from_numpy(dist), q_pids, g_pids, q_cam, g_cam, ranks=ranks, method=method)
    assert res["num_skipped_queries"] == skipped >= 1
    np.testing.assert_allclose(res["cmc"], cmc[:len(ranks)], atol=1e-12)
    assert abs(res["mAP"] - 100 * mAP) < 1e-9


def test_squared_and_plain_euclidean_rank_alike():
    """Video-Person-ReID ranks by the squared distance ||q||² + ||g||² - 2 q·g, vidnl by its
    square root: the same CMC and mAP."""
    rng = np.random.default_rng(3)
    qf, gf = torch.randn(15, 8, dtype=torch.float64), torch.randn(40, 8, dtype=torch.float64)
    q_pids, g_pids = rng.integers(0, 6, 15), rng.integers(0, 6, 40)
    q_cam, g_cam = np.zeros(15, int), np.ones(40, int)
    sq = (qf.pow(2).sum(1, keepdim=True) + gf.pow(2).sum(1)[None] - 2 * qf @ gf.t()).numpy()
    cmc, mAP, _ = vpr_evaluate(sq, q_pids, g_pids, q_cam, g_cam)
    res = evaluate_ranking(distance_matrix(qf, gf), q_pids, g_pids, q_cam, g_cam, ranks=list(range(1, 21)))
    np.testing.assert_allclose(res["cmc"], cmc[:20], atol=1e-12)
    assert abs(res["mAP"] - 100 * mAP) < 1e-9


# ------------------------------------------------------------------------------------------------
# The whole test path on the same weights: Video-Person-ReID's test() written out
# ------------------------------------------------------------------------------------------------
def vpr_test(model, query, gallery, height, width):
    """Video-Person-ReID's ``test()`` with ``VideoDataset(sample='dense')`` and its test transform
    (torchvision Resize((h, w)) on the PIL image, ToTensor, ImageNet Normalize): a tracklet's
    frames (its list order) in dense chunks, the model on the n×s×c×h×w chunks, the mean of the
    n features, squared Euclidean distances, ``evaluate``."""
    import torchvision.transforms as T

    tf = T.Compose([T.Resize((height, width)), T.ToTensor(),
                    T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])

    def feats(tracklets):
        out = []
        for paths, _, _ in tracklets:
            chunks = dense_chunks(len(paths), 4)
            imgs = torch.stack([torch.stack([tf(Image.open(paths[i]).convert("RGB")) for i in c]) for c in chunks])
            with torch.no_grad():
                f = model(imgs.permute(0, 2, 1, 3, 4))  # the model's clips are n×c×s×h×w
            out.append(f.mean(0))
        return torch.stack(out)

    qf, gf = feats(query), feats(gallery)
    m, n = qf.shape[0], gf.shape[0]
    dist = qf.pow(2).sum(1, keepdim=True).expand(m, n) + gf.pow(2).sum(1, keepdim=True).expand(n, m).t()
    dist = dist - 2 * qf @ gf.t()
    cmc, mAP, _ = vpr_evaluate(dist.numpy(), np.array([t[1] for t in query]), np.array([t[1] for t in gallery]),
                               np.array([t[2] for t in query]), np.array([t[2] for t in gallery]))
    return qf, gf, cmc, mAP


def test_reid_test_path_equals_video_person_reid_test_on_the_same_weights(prid_root, tmp_path):
    opts = {"REID.ROOT": prid_root, "REID.SPLIT_ID": 1, "OUTPUT_DIR": str(tmp_path), "NUM_GPUS": 0,
            "NUM_THREADS": 1, "RESNET.BASE_WIDTH": 4, "REID.HEIGHT": 32, "REID.WIDTH": 16, "REID.SEQ_LEN": 4,
            "TEST.BATCH_SIZE": 3, "DATA_LOADER.NUM_WORKERS": 0, "TENSORBOARD.ENABLE": False}
    cfg = load_config(os.path.join(ROOT, "configs", "PRID", "R50tp.yaml"), [str(x) for kv in opts.items() for x in kv])
    data = load_prid(prid_root, 1)
    torch.manual_seed(0)
    model = engine.build_reid_model(cfg, data.num_train_pids).eval()
    # torchreid / Video-Person-ReID tracklets of the split (frames in file-name order, see docs)
    cams = [os.path.join(prid_root, "prid_2011", "multi_shot", c) for c in ("cam_a", "cam_b")]
    # (listed in vidnl's order, by person folder, so that the features line up; the metrics do not
    # depend on the order)
    query, gallery = ([(tuple(sorted(p)), pid, c) for p, pid, c in sorted(
        torchreid_tracklets(cams, PRID_SPLITS[1]["test"], (cam,)), key=lambda t: os.path.dirname(t[0][0]))]
        for cam in (0, 1))
    qf_ref, gf_ref, cmc, mAP = vpr_test(model, query, gallery, 32, 16)
    qf = engine.extract_features(model, data.query, cfg, torch.device("cpu"))
    gf = engine.extract_features(model, data.gallery, cfg, torch.device("cpu"))
    torch.testing.assert_close(qf, qf_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gf, gf_ref, rtol=1e-4, atol=1e-5)
    res = engine.evaluate_reid(model, data, cfg, torch.device("cpu"))
    np.testing.assert_allclose(res["cmc"][:len(cmc)], cmc[:20], atol=1e-9)
    assert abs(res["mAP"] - 100 * mAP) < 1e-6
