"""data_prep scripts end to end on miniature copies of the official layouts (UCF-101, Kinetics,
ImageNet val), the video checker, frame folders, and the data config keys."""

import json
import os

import av
import numpy as np
import pytest
import torch

from vidnl.config import ConfigError, load_config
from vidnl.data.datasets import build_dataset
from vidnl.data.decoding import read_frames
from vidnl.errors import DatasetError

from conftest import SHARED_VIDEOS, index_video, synth, write_video
from data_prep import check_videos, extract_frames, prepare_imagenet_val, prepare_kinetics, prepare_ucf101


def write_avi(path: str, frames: np.ndarray, fps: int = 25) -> str:
    """A real AVI (MPEG-4 part 2, like UCF-101's XviD) written with PyAV."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with av.open(path, mode="w", format="avi") as c:
        s = c.add_stream("mpeg4", rate=fps)
        s.height, s.width = frames.shape[1:3]
        s.pix_fmt = "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def mp4(path, frames, fps: int = 25) -> str:
    """A real H.264 MP4 (conftest.write_video) in a folder created as needed."""
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    return write_video(str(path), frames, fps)


def csv_rows(path):
    return [line.rsplit(" ", 1) for line in open(path).read().splitlines()]


def resolve(csv_path, rel):
    return os.path.normpath(os.path.join(os.path.dirname(csv_path), rel))


# -- UCF-101 -------------------------------------------------------------------------------------
UCF_CLASSES = ["ApplyEyeMakeup", "Archery", "HandstandPushups"]


def make_ucf(root):
    """3 classes x 3 groups; the file names of HandstandPushups use 'HandStandPushups' like the
    real dataset; the split lists have CRLF endings; testlist02 names one video that is absent."""
    vids = {}
    for ci, cls in enumerate(UCF_CLASSES):
        file_cls = "HandStandPushups" if cls == "HandstandPushups" else cls
        for g in (1, 2, 3):
            rel = f"{cls}/v_{file_cls}_g{g:02d}_c01.avi"
            write_avi(str(root / "UCF-101" / rel), index_video(6, 24, 32) + np.uint8(ci))
            vids[(cls, g)] = rel
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\r\n" for i, c in enumerate(UCF_CLASSES)))
    for n in (1, 2, 3):
        test_group = n  # split n tests on group n
        train = [f"{vids[(c, g)]} {ci + 1}" for ci, c in enumerate(UCF_CLASSES) for g in (1, 2, 3) if g != test_group]
        test = [vids[(c, test_group)] for c in UCF_CLASSES]
        if n == 2:
            test.append("Archery/v_Archery_g09_c01.avi")  # listed, never downloaded
            # the list spells the file differently from the disk, as for HandStandPushups
            test = [t.replace("v_HandStandPushups", "v_HandstandPushups") for t in test]
        (lists / f"trainlist0{n}.txt").write_text("".join(line + "\r\n" for line in train))
        (lists / f"testlist0{n}.txt").write_text("".join(line + "\r\n" for line in test))
    return vids


def test_prepare_ucf101_writes_splits_and_reports_missing(tmp_path, capsys):
    vids = make_ucf(tmp_path)
    out = tmp_path / "ucf_out"
    assert prepare_ucf101.main(["--root", str(tmp_path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1 listed videos not found" in printed and "v_Archery_g09_c01.avi" in printed
    assert open(out / "classes.txt").read().splitlines() == ["0 ApplyEyeMakeup", "1 Archery", "2 HandstandPushups"]
    assert "Archery/v_Archery_g09_c01.avi (in testlist02.txt)" in open(out / "missing.txt").read()

    train1 = out / "split1" / "train.csv"
    rows = csv_rows(train1)
    assert len(rows) == 6 and [int(r[1]) for r in rows] == [0, 0, 1, 1, 2, 2]
    assert resolve(train1, rows[0][0]) == str(tmp_path / "UCF-101" / vids[("ApplyEyeMakeup", 2)])
    assert not os.path.isabs(rows[0][0])
    # val = test = the test list; split 2 keeps the 3 present videos, found despite the case difference
    assert open(out / "split1" / "val.csv").read() == open(out / "split1" / "test.csv").read()
    test2 = out / "split2" / "test.csv"
    rows2 = csv_rows(test2)
    assert [int(r[1]) for r in rows2] == [0, 1, 2]
    assert resolve(test2, rows2[2][0]) == str(tmp_path / "UCF-101" / vids[("HandstandPushups", 2)])
    assert all(os.path.exists(resolve(test2, r[0])) for r in rows2)

    # the ucf101 dataset reads split DATA.SPLIT
    cfg = load_config(None, ["TRAIN.DATASET", "ucf101", "TEST.DATASET", "ucf101", "DATA.PATH_TO_DATA_DIR", str(out),
                             "DATA.SPLIT", "3", "MODEL.NUM_CLASSES", "3", "DATA.NUM_FRAMES", "2",
                             "DATA.SAMPLING_RATE", "2", "DATA.TRAIN_JITTER_SCALES", "[24, 24]",
                             "DATA.TRAIN_CROP_SIZE", "16", "DATA.TEST_CROP_SIZE", "16",
                             "TEST.NUM_ENSEMBLE_VIEWS", "2", "TEST.NUM_SPATIAL_CROPS", "1"])
    train = build_dataset("ucf101", cfg, "train")
    test = build_dataset("ucf101", cfg, "test")
    assert len(train) == 6 and len(test) == 3
    assert all("_g03_" not in r.path for r in train.records) and all("_g03_" in r.path for r in test.records)
    assert train[0]["inputs"].shape == (2, 16, 16, 3) and test[1]["inputs"].shape == (2, 2, 16, 16, 3)
    with pytest.raises(DatasetError, match="lists 3 classes but MODEL.NUM_CLASSES is 4"):
        build_dataset("ucf101", load_config(None, ["DATA.PATH_TO_DATA_DIR", str(out), "MODEL.NUM_CLASSES", "4"]),
                      "train")
    with pytest.raises(DatasetError, match="split2"):
        build_dataset("ucf101", load_config(None, ["DATA.PATH_TO_DATA_DIR", str(tmp_path), "DATA.SPLIT", "2"]),
                      "train")


def test_prepare_ucf101_resize_is_parallel_and_resumable(tmp_path, capsys):
    make_ucf(tmp_path)
    out = tmp_path / "out"
    args = ["--root", str(tmp_path), "--out", str(out), "--splits", "1", "--resize", "32", "--workers", "2"]
    assert prepare_ucf101.main(args) == 0
    assert "9 new, 0 already done, 0 failed" in capsys.readouterr().out
    rows = csv_rows(out / "split1" / "train.csv")
    path = resolve(out / "split1" / "train.csv", rows[0][0])
    assert path == str(out / "videos" / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g02_c01.mp4")
    d = read_frames(path, np.arange)
    assert d.frames.shape == (6, 32, 42, 3)  # 24x32 -> short side 32, even width
    assert np.allclose(d.frames.reshape(6, -1).mean(1), 4 * np.arange(6), atol=2.0)  # frame order kept
    assert prepare_ucf101.main(args) == 0
    assert "0 new, 9 already done" in capsys.readouterr().out


def test_prepare_ucf101_bad_list_line_is_an_error_naming_file_and_line(tmp_path, capsys):
    make_ucf(tmp_path)
    with open(tmp_path / "ucfTrainTestlist" / "trainlist01.txt", "a") as f:
        f.write("Archery/v_Archery_g01_c01.avi 3\r\n")  # class 2 in classInd.txt, not 3
    assert prepare_ucf101.main(["--root", str(tmp_path), "--out", str(tmp_path / "o"), "--splits", "1"]) == 2
    err = capsys.readouterr().err
    assert "trainlist01.txt:7" in err and "does not match class Archery" in err


# -- Kinetics ------------------------------------------------------------------------------------
def make_kinetics(root):
    ann = root / "annotations"
    ann.mkdir()
    header = "label,youtube_id,time_start,time_end,split,is_cc\n"
    (ann / "train.csv").write_text(header + "".join([
        '"air drumming",aaaaaaaaaa1,1,3,train,0\n',    # trimmed file present
        "abseiling,bbbb-bbb_b2,1,3,train,0\n",         # only the whole video: cut here
        "zumba,cccccccccc3,0,10,train,0\n",            # not downloaded
        "zumba,ddddddddd_4,12,14,train,0\n",           # trimmed file present
    ]))
    (ann / "validate.csv").write_text(header + "abseiling,eeeeeeeeee5,5,7,validate,0\n")
    (ann / "test.csv").write_text("youtube_id,time_start,time_end,split\nffffffffff6,0,10,test\n")
    vids = root / "downloads"
    mp4(vids / "train" / "air_drumming" / "aaaaaaaaaa1_000001_000003.mp4", index_video(8, 24, 32))
    mp4(vids / "bbbb-bbb_b2.mp4", index_video(40, 24, 32), fps=10)  # 4 s, frame k at k/10 s
    mp4(vids / "train" / "zumba" / "ddddddddd_4_000012_000014.mp4", index_video(8, 24, 32))
    mp4(vids / "val" / "eeeeeeeeee5_000005_000007.mp4", index_video(8, 24, 32))
    return ann, vids


def test_prepare_kinetics_classes_trimming_and_missing(tmp_path, capsys):
    ann, vids = make_kinetics(tmp_path)
    out = tmp_path / "k"
    assert prepare_kinetics.main(["--annotations", str(ann), "--videos", str(vids), "--out", str(out),
                                  "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert open(out / "classes.txt").read().splitlines() == ["0 abseiling", "1 air drumming", "2 zumba"]
    rows = csv_rows(out / "train.csv")
    assert [int(r[1]) for r in rows] == [1, 0, 2]
    paths = [resolve(out / "train.csv", r[0]) for r in rows]
    assert paths[0] == str(vids / "train" / "air_drumming" / "aaaaaaaaaa1_000001_000003.mp4")
    assert paths[1] == str(out / "videos" / "train" / "abseiling" / "bbbb-bbb_b2_000001_000003.mp4")
    cut = read_frames(paths[1], np.arange)
    # [1 s, 3 s) of a 10 fps video whose frame k has grey level 4k: frames 10..29
    assert cut.num_frames == 20
    grey = cut.frames.reshape(20, -1).mean(1) / 4
    assert abs(grey[0] - 10) < 1.0 and abs(grey[-1] - 29) < 1.0
    assert "cccccccccc3_000000_000010 zumba" in open(out / "missing_train.txt").read()
    assert "train: 3 of 4 clips, 1 missing" in printed
    assert csv_rows(out / "val.csv")[0][1] == "0"
    assert not (out / "test.csv").exists() and "has no labels; test.csv not written" in printed

    # the kinetics dataset checks classes.txt against MODEL.NUM_CLASSES
    cfg = ["TRAIN.DATASET", "kinetics", "DATA.PATH_TO_DATA_DIR", str(out), "MODEL.NUM_CLASSES"]
    assert len(build_dataset("kinetics", load_config(None, cfg + ["3"]), "train")) == 3
    with pytest.raises(DatasetError, match="set MODEL.NUM_CLASSES 3"):
        build_dataset("kinetics", load_config(None, cfg + ["400"]), "val")


def test_prepare_kinetics_short_side_reencodes_everything(tmp_path, capsys):
    ann, vids = make_kinetics(tmp_path)
    out = tmp_path / "k"
    args = ["--train", str(ann / "train.csv"), "--videos", str(vids), "--out", str(out), "--short-side", "16",
            "--workers", "2"]
    assert prepare_kinetics.main(args) == 0
    assert "cut/re-encoded 3 clips to short side 16, 0 already done, 0 failed" in capsys.readouterr().out
    for rel, _ in csv_rows(out / "train.csv"):
        assert rel.startswith("videos/train/")
        assert read_frames(str(out / rel), lambda n: [0]).frames.shape[1:3] == (16, 22)
    assert not (out / "val.csv").exists()
    assert prepare_kinetics.main(args) == 0
    assert "0 clips to short side 16, 3 already done" in capsys.readouterr().out


def pyslowfast_rows(csv_path, prefix):
    """The rows as PySlowFast's Kinetics reader takes them: each line split on the separator
    (DATA.PATH_LABEL_SEPARATOR, default " ") must give exactly path and label; the path is joined
    to DATA.PATH_PREFIX."""
    rows = []
    for line in open(csv_path).read().splitlines():
        fields = line.split(" ")
        assert len(fields) == 2 and len(line.split()) == 2, f"{csv_path}: {line!r}"
        rows.append((os.path.join(prefix, fields[0]), int(fields[1])))
    return rows


LABELS = {"aaaaaaaaaa1": 1, "aaaaaaaaaa2": 1, "bbbbbbbbbb3": 2, "cccccccccc4": 0, "dddddddddd5": 3, "eeeeeeeeee6": 1}


def test_prepare_kinetics_csvs_have_no_spaces_in_paths(tmp_path, capsys):
    """A downloader's class folders with spaces ("air drumming/"), under a download folder with a
    space, no --short-side: every CSV line still has exactly two space-separated fields, and
    PySlowFast and vidnl read the same clips."""
    from vidnl.data.datasets.video_csv import read_csv

    ann = tmp_path / "annotations"
    ann.mkdir()
    header = "label,youtube_id,time_start,time_end,split\n"
    (ann / "train.csv").write_text(header + "".join([
        '"air drumming",aaaaaaaaaa1,1,3,train\n',
        '"air drumming",aaaaaaaaaa2,4,6,train\n',
        '"passing American football (in game)",bbbbbbbbbb3,0,2,train\n',
        "abseiling,cccccccccc4,2,4,train\n",           # only the whole video: cut into OUT/videos
        "zumba,dddddddddd5,0,2,train\n",               # no class folder, but --videos has a space
    ]))
    (ann / "validate.csv").write_text(header + '"air drumming",eeeeeeeeee6,5,7,validate\n')
    vids = tmp_path / "my downloads"
    originals = {
        "aaaaaaaaaa1": mp4(vids / "train" / "air drumming" / "aaaaaaaaaa1_000001_000003.mp4", index_video(6, 24, 32)),
        "aaaaaaaaaa2": mp4(vids / "train" / "air drumming" / "aaaaaaaaaa2_000004_000006.mp4", index_video(7, 24, 32)),
        "bbbbbbbbbb3": mp4(vids / "train" / "passing American football (in game)" / "bbbbbbbbbb3_000000_000002.mp4",
                           index_video(8, 24, 32)),
        "eeeeeeeeee6": mp4(vids / "val" / "air drumming" / "eeeeeeeeee6_000005_000007.mp4", index_video(9, 24, 32)),
    }
    originals["dddddddddd5"] = mp4(vids / "dddddddddd5_000000_000002.mp4", index_video(5, 24, 32))
    mp4(vids / "whole" / "cccccccccc4.mp4", index_video(50, 24, 32), fps=10)
    out = tmp_path / "k"
    args = ["--annotations", str(ann), "--videos", str(vids), "--out", str(out), "--workers", "1"]
    assert prepare_kinetics.main(args) == 0
    printed = capsys.readouterr()

    classes = [line.split(" ", 1)[1] for line in open(out / "classes.txt").read().splitlines()]
    assert classes == ["abseiling", "air drumming", "passing American football (in game)", "zumba"]
    for split, ids in (("train", ["aaaaaaaaaa1", "aaaaaaaaaa2", "bbbbbbbbbb3", "cccccccccc4", "dddddddddd5"]),
                       ("val", ["eeeeeeeeee6"])):
        csv_path = str(out / f"{split}.csv")
        slowfast = pyslowfast_rows(csv_path, str(out))
        vidnl_rows = read_csv(csv_path, num_classes=4)
        # the same clips, labels and order both ways; every path is a readable video
        assert [(os.path.normpath(r.path), r.label) for r in vidnl_rows] == [(os.path.normpath(p), lab)
                                                                             for p, lab in slowfast]
        assert len(slowfast) == len(ids)
        for (path, label), yid in zip(slowfast, ids):
            assert os.path.isfile(path) and " " not in os.path.relpath(path, out)
            assert label == LABELS[yid]
            if yid in originals:  # the downloaded file itself, through a link
                assert os.path.samefile(path, originals[yid])
    assert "5 clips whose paths have spaces listed through links" in printed.out and "warning" not in printed.err
    lines = open(out / "train.csv").read().splitlines()
    assert lines[0] == "videos/links/train/air_drumming/aaaaaaaaaa1_000001_000003.mp4 1"
    assert lines[2] == "videos/links/train/passing_American_football_(in_game)/bbbbbbbbbb3_000000_000002.mp4 2"
    assert lines[3] == "videos/train/abseiling/cccccccccc4_000002_000004.mp4 0"
    assert lines[4] == "videos/links/train/zumba/dddddddddd5_000000_000002.mp4 3"
    # the kinetics dataset reads them as well
    cfg = ["TRAIN.DATASET", "kinetics", "DATA.PATH_TO_DATA_DIR", str(out), "MODEL.NUM_CLASSES", "4"]
    assert len(build_dataset("kinetics", load_config(None, cfg), "train")) == 5
    # a second run keeps the links and writes the same files
    before = {f: open(out / f).read() for f in ("train.csv", "val.csv")}
    assert prepare_kinetics.main(args) == 0
    assert {f: open(out / f).read() for f in ("train.csv", "val.csv")} == before
    # --absolute: absolute paths, still without spaces
    assert prepare_kinetics.main(args + ["--absolute"]) == 0
    for split in ("train", "val"):
        for path, _ in pyslowfast_rows(str(out / f"{split}.csv"), "/unused"):
            assert os.path.isabs(path) and os.path.isfile(path)


def test_prepare_kinetics_malformed_annotation(tmp_path, capsys):
    (tmp_path / "train.csv").write_text("label,youtube_id,time_start,time_end,split\nzumba,x,ten,20,train\n")
    (tmp_path / "v").mkdir()
    assert prepare_kinetics.main(["--train", str(tmp_path / "train.csv"), "--videos", str(tmp_path / "v"),
                                  "--out", str(tmp_path / "o")]) == 2
    assert "train.csv:2: time_start/time_end must be numbers" in capsys.readouterr().err


# -- the checker ---------------------------------------------------------------------------------
def test_check_videos_flags_bad_files_and_writes_a_clean_csv(tmp_path, capsys):
    rng = np.random.default_rng(0)
    good_mp4 = mp4(tmp_path / "good.mp4", synth.render_video(rng, 0, 12, 32, 48))
    good_avi = write_avi(str(tmp_path / "good.avi"), rng.integers(0, 256, (60, 48, 64, 3), dtype=np.uint8))
    raw = open(good_mp4, "rb").read()
    (tmp_path / "truncated.mp4").write_bytes(raw[: len(raw) // 2])
    raw = open(good_avi, "rb").read()
    (tmp_path / "truncated.avi").write_bytes(raw[: len(raw) // 2])  # FFmpeg still opens this one
    (tmp_path / "empty.mp4").write_bytes(b"")
    csv = tmp_path / "train.csv"
    csv.write_text("good.mp4 0\ntruncated.mp4 1\nempty.mp4 0\ngood.avi 1\nmissing.mp4 0\ntruncated.avi 1\n"
                   "no_label_here\n")
    assert check_videos.main([str(csv), "--workers", "2"]) == 0
    assert "7 videos" in capsys.readouterr().out
    assert open(tmp_path / "train_clean.csv").read() == "good.mp4 0\ngood.avi 1\n"
    report = json.load(open(tmp_path / "train_report.json"))
    assert report["checked"] == 7 and report["good"] == 2 and report["bad_count"] == 5
    why = {os.path.basename(b["path"]): b["reason"] for b in report["bad"]}
    assert set(why) == {"truncated.mp4", "empty.mp4", "missing.mp4", "truncated.avi", "no_label_here"}
    assert "empty" in why["empty.mp4"] and "does not exist" in why["missing.mp4"]
    assert "cannot decode" in why["truncated.mp4"] and why["truncated.avi"].startswith("truncated: the container says 60")
    good = {os.path.basename(v["path"]): v for v in report["videos"] if v["ok"]}
    assert good["good.mp4"]["num_frames"] == 12 and good["good.avi"]["num_frames"] == 60

    # a clean CSV in another folder gets paths relative to that folder
    assert check_videos.main([str(csv), "--out-csv", str(tmp_path / "sub" / "clean.csv"), "--report",
                              str(tmp_path / "r.txt"), "--workers", "1", "--backend", "pyav"]) == 0
    assert open(tmp_path / "sub" / "clean.csv").read() == "../good.mp4 0\n../good.avi 1\n"
    assert "7 checked, 2 good, 5 bad" in open(tmp_path / "r.txt").read()


def test_check_videos_on_the_shared_real_videos(tmp_path, capsys):
    if not os.path.isdir(SHARED_VIDEOS):
        pytest.skip("../shared/data/videos is not available (a user's clone has no ../shared)")
    names = sorted(os.listdir(SHARED_VIDEOS))
    csv = tmp_path / "real.csv"
    csv.write_text("".join(f"{os.path.join(os.path.abspath(SHARED_VIDEOS), n)} {i}\n" for i, n in enumerate(names)))
    assert check_videos.main([str(csv), "--workers", "2"]) == 0
    report = json.load(open(tmp_path / "real_report.json"))
    assert report["bad_count"] == 0 and report["good"] == len(names) == 3
    frames = {os.path.basename(v["path"]): v["num_frames"] for v in report["videos"]}
    assert frames == {"real_320x240_25fps.avi": 164, "real_340x256_30fps.mp4": 300,
                      "real_armwrestling_340x256_28fps.mp4": 280}


# -- frame folders -------------------------------------------------------------------------------
def test_frame_folders_extracted_and_read_like_the_video(tmp_path, capsys):
    data = tmp_path / "data"
    mp4(data / "videos" / "a.mp4", index_video(20, 24, 32))
    mp4(data / "videos" / "b.mp4", index_video(12, 24, 32))
    (data / "test.csv").write_text("videos/a.mp4 0\nvideos/b.mp4 1\n")
    out = tmp_path / "frames"
    assert extract_frames.main(["--csv", str(data / "test.csv"), "--out", str(out), "--workers", "1"]) == 0
    assert "2 extracted (32 frames)" in capsys.readouterr().out
    assert sorted(os.listdir(out / "videos" / "b"))[:2] == ["done", "img_00001.jpg"]
    assert len(os.listdir(out / "videos" / "b")) == 13
    assert csv_rows(out / "test.csv") == [["videos/a", "0"], ["videos/b", "1"]]
    assert extract_frames.main(["--csv", str(data / "test.csv"), "--out", str(out)]) == 0
    assert "0 extracted (0 frames), 2 already done" in capsys.readouterr().out

    pick = lambda n: np.array([0, 7, 7, 19, 3])  # noqa: E731
    from_video = read_frames(str(data / "videos" / "a.mp4"), pick)
    from_folder = read_frames(str(out / "videos" / "a"), pick)  # a folder is read as frames
    assert from_folder.backend == "frames" and from_folder.num_frames == 20
    np.testing.assert_allclose(from_folder.frames.reshape(5, -1).mean(1) / 4, [0, 7, 7, 19, 3], atol=0.7)
    assert np.abs(from_folder.frames.astype(int) - from_video.frames.astype(int)).mean() < 2.0

    opts = ["DATA.PATH_TO_DATA_DIR", str(out), "DATA.SOURCE", "frames", "DATA.NUM_FRAMES", "4", "DATA.SAMPLING_RATE",
            "3", "DATA.TEST_CROP_SIZE", "16", "TEST.NUM_ENSEMBLE_VIEWS", "2", "TEST.NUM_SPATIAL_CROPS", "1",
            "DATA.MEAN", "[0, 0, 0]", "DATA.STD", "[1, 1, 1]"]
    item = build_dataset("csv", load_config(None, opts), "test")[1]  # b: 12 frames, clips 0,3,6,9 and 2,5,8,11
    ids = (item["inputs"][:, :, 8, 8, 0].float() / 4).round()
    assert torch.equal(ids, torch.tensor([[0.0, 3, 6, 9], [2, 5, 8, 11]]))
    # frames named by another template; a missing folder is a decode error naming it
    os.rename(out / "videos" / "b" / "img_00001.jpg", out / "videos" / "b" / "x.jpg")
    with pytest.raises(Exception, match="no frame named 'img_00001.jpg'"):
        read_frames(str(out / "videos" / "b"), pick)
    with pytest.raises(Exception, match="frame folder does not exist"):
        read_frames(str(out / "videos" / "c"), pick, source="frames")


# -- ImageNet validation folders -----------------------------------------------------------------
def test_prepare_imagenet_val_from_devkit_and_from_kaggle_csv(tmp_path, capsys):
    import scipy.io
    from PIL import Image

    flat = tmp_path / "val_flat"
    flat.mkdir()
    for i in range(1, 6):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(flat / f"ILSVRC2012_val_{i:08d}.JPEG")
    devkit = tmp_path / "ILSVRC2012_devkit_t12" / "data"
    devkit.mkdir(parents=True)
    synsets = np.zeros((3,), dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O")])
    for k, (sid, wnid) in enumerate([(1, "n01440764"), (2, "n01443537"), (1001, "n00001740")]):
        synsets[k] = (sid, wnid, "x")
    scipy.io.savemat(devkit / "meta.mat", {"synsets": synsets})
    (devkit / "ILSVRC2012_validation_ground_truth.txt").write_text("2\n1\n2\n2\n1\n1\n")  # 6 labels, 5 images
    out = tmp_path / "imagenet" / "val"
    assert prepare_imagenet_val.main(["--val", str(flat), "--devkit", str(devkit.parent), "--out", str(out)]) == 0
    assert "5 images linked into 2 class folders" in capsys.readouterr().out
    assert sorted(os.listdir(out / "n01443537")) == [f"ILSVRC2012_val_{i:08d}.JPEG" for i in (1, 3, 4)]
    assert sorted(os.listdir(out / "n01440764")) == [f"ILSVRC2012_val_{i:08d}.JPEG" for i in (2, 5)]

    sol = tmp_path / "LOC_val_solution.csv"
    sol.write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,n01443537 1 2 3 4\n"
                   "ILSVRC2012_val_00000002,n01440764 1 2 3 4 n01440764 5 6 7 8\n")
    out2 = tmp_path / "val2"
    assert prepare_imagenet_val.main(["--val", str(flat), "--solution", str(sol), "--out", str(out2),
                                      "--mode", "copy"]) == 0
    assert "3 without a label" in capsys.readouterr().out
    assert os.listdir(out2 / "n01440764") == ["ILSVRC2012_val_00000002.JPEG"]


# -- config keys ---------------------------------------------------------------------------------
@pytest.mark.parametrize("opts, words", [
    (["DATA.SPLIT", "4"], ["DATA.SPLIT", "4", "1, 2, 3"]),
    (["DATA.SOURCE", "images"], ["DATA.SOURCE", "'video'", "'frames'"]),
    (["DATA.MODALITY", "flow"], ["DATA.FLOW_DIR", "empty"]),
    (["DATA.MODALITY", "flow", "DATA.FLOW_DIR", "/f"], ["DATA.INPUT_CHANNEL_NUM", "set it to 2"]),
    (["DATA.FRAME_TEMPLATE", "img.jpg"], ["DATA.FRAME_TEMPLATE", "'img.jpg'", "one field"]),
    (["DATA.FRAME_TEMPLATE", "img_{x}.jpg"], ["DATA.FRAME_TEMPLATE", "KeyError"]),
    (["TRAIN.DATASET", "cifar10"], ["DATA.NUM_FRAMES", "cifar10", "1 (got 8)"]),
    (["DATA.USE_BBOX", "True"], ["DATA.USE_BBOX", "cub200"]),
    (["DATA.IMAGE_TEST_RESIZE", "100"], ["DATA.IMAGE_TEST_RESIZE", "DATA.TEST_CROP_SIZE (256)"]),
    (["DATA.FLOW_FORMAT", "png"], ["DATA.FLOW_FORMAT", "'jpg'", "'npz'"]),
])
def test_data_config_errors_name_key_value_and_allowed(opts, words):
    with pytest.raises(ConfigError) as info:
        load_config(None, opts)
    for w in words:
        assert w in str(info.value)


def test_flow_mode_config_is_accepted():
    cfg = load_config(None, ["DATA.MODALITY", "flow", "DATA.FLOW_DIR", "/f", "DATA.INPUT_CHANNEL_NUM", "2",
                             "DATA.MEAN", "[0.0, 0.0]", "DATA.STD", "[1.0, 1.0]"])
    assert cfg.DATA.MODALITY == "flow" and cfg.DATA.FLOW_FORMAT == "jpg" and cfg.DATA.FLOW_SCALE == 20.0
