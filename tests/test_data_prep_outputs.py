"""What the data_prep tools write: re-encoded clips keep the source's frames and timestamps (so a
seeking decoder such as decord returns the frames it is asked for), and no two inputs are ever
written to one output (frame / flow folders, re-encoded videos, sorted images, reports)."""

import os
import subprocess
import sys
from fractions import Fraction

import av
import numpy as np
import pytest

from conftest import ROOT, _decord_available
from data_prep import (check_videos, common, extract_flow, extract_frames, prepare_imagenet_val, prepare_kinetics,
                       prepare_ucf101)

STEP = 5  # frame k of a test video is uniformly grey at level STEP * k


def write_index_video(path, n: int = 40, rate=25, codec: str = "libx264", fmt: str | None = None,
                      pts_ms: list[int] | None = None, offset: int = 0) -> str:
    """A real video of ``n`` 64×48 frames, frame k uniformly grey at STEP * (k + offset), so a frame
    is recognised after lossy coding. ``pts_ms``: the frames' timestamps in ms (variable rate)."""
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    kw = {"time_base": Fraction(1, 1000)} if pts_ms else {}
    with av.open(path, mode="w", format=fmt) as c:
        s = c.add_stream(codec, rate=rate, **kw)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        if codec == "libx264":
            s.options = {"g": "10", "crf": "18"}  # keyframes every 10 frames: a decoder seeks between them
        else:
            s.bit_rate = 4_000_000  # MPEG-4 part 2: keep the grey levels apart
        for k in range(n):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), STEP * (k + offset), np.uint8), format="rgb24")
            if pts_ms:
                frame.pts, frame.time_base = pts_ms[k], Fraction(1, 1000)
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def frame_ids(frames: np.ndarray) -> np.ndarray:
    """Which frame (the k of write_index_video) each of N×H×W×3 frames is."""
    return np.round(frames.reshape(len(frames), -1).astype(float).mean(1) / STEP)


def stream_times(path: str) -> tuple[np.ndarray, Fraction, float, float]:
    """(frame times in s from decoding with PyAV, average rate, stream duration in s, ids of the
    decoded frames in order)."""
    with av.open(path) as c:
        s = c.streams.video[0]
        frames = list(c.decode(s))
        times = np.array([float(f.pts * f.time_base) for f in frames])
        ids = frame_ids(np.stack([f.to_ndarray(format="rgb24") for f in frames]))
        duration = float(s.duration * s.time_base) if s.duration else float("nan")  # nan: not stated
        return times, s.average_rate, duration, ids


def sample(n: int) -> list[int]:
    """Frame indices in the order a training sampler might ask for them: not sequential."""
    idx = np.random.default_rng(n).permutation(n)[:12].tolist()
    return idx + [n - 1, 0]


def assert_same_video(out: str, first: int, n: int, fps: float, times_s: np.ndarray | None = None) -> None:
    """``out`` holds frames ``first .. first + n - 1`` of write_index_video, at ``fps`` (or at
    ``times_s``, from 0), and PyAV and decord both give the frame asked for."""
    times, rate, duration, ids = stream_times(out)
    assert len(times) == n and np.array_equal(ids, np.arange(first, first + n))  # every frame, once, in order
    assert times[0] == pytest.approx(0.0, abs=1e-6) and np.all(np.diff(times) > 0)
    if times_s is None:
        np.testing.assert_allclose(np.diff(times), 1 / fps, atol=1.5e-3)  # WebM: whole ms
        assert float(rate) == pytest.approx(fps, rel=0.01)
        assert duration == pytest.approx(n / fps, abs=1.01 / fps)
    else:
        np.testing.assert_allclose(times, times_s, atol=1e-3)
    if _decord_available():
        import decord

        idx = sample(n)
        vr = decord.VideoReader(out)
        assert len(vr) == n
        np.testing.assert_array_equal(frame_ids(vr.get_batch(idx).asnumpy()), np.array(idx) + first)
        np.testing.assert_allclose(vr.get_frame_timestamp(idx)[:, 0], times[idx], atol=1e-3)


# -- A. re-encoding keeps frames and timestamps ----------------------------------------------------
@pytest.mark.parametrize("name, rate, codec, fmt", [
    ("h264_25.mp4", 25, "libx264", None),                           # MP4 time base 1/12800
    ("ntsc.mp4", Fraction(30000, 1001), "libx264", None),           # 29.97 fps, time base 1/30000
    ("ntsc.mkv", Fraction(30000, 1001), "libx264", "matroska"),     # Matroska / WebM: time base 1/1000
    ("xvid.avi", 25, "mpeg4", "avi"),                               # AVI: time base 1/rate (UCF-101)
])
def test_reencode_keeps_every_frame_and_the_source_timestamps(tmp_path, name, rate, codec, fmt):
    src = write_index_video(tmp_path / name, 40, rate, codec, fmt)
    out = str(tmp_path / "out.mp4")
    info = common.reencode_video(src, out, short_side=32)
    assert info == {"frames": 40, "width": 42, "height": 32}
    assert_same_video(out, 0, 40, float(rate))


def test_reencode_keeps_a_variable_frame_rate(tmp_path):
    pts = [40 * k for k in range(20)] + [800 + 80 * k for k in range(20)] + [2400 + 33 * k for k in range(5)]
    src = write_index_video(tmp_path / "vfr.mkv", 45, 25, fmt="matroska", pts_ms=pts)
    out = str(tmp_path / "out.mp4")
    common.reencode_video(src, out)
    assert_same_video(out, 0, 45, 25, times_s=np.array(pts) / 1000)


def test_reencode_cut_starts_at_zero_at_the_source_rate(tmp_path):
    src = write_index_video(tmp_path / "whole.mp4", 40, 10)
    out = str(tmp_path / "cut.mp4")
    assert common.reencode_video(src, out, 0, 1, 3)["frames"] == 20  # [1 s, 3 s): frames 10..29
    assert_same_video(out, 10, 20, 10)


def test_frame_times_fill_gaps_and_never_go_back():
    t = common.FrameTimes(Fraction(1, 1000), Fraction(25))
    assert [t.next(p) for p in (500, 540, None, 620, 620, 610, 700)] == [0, 40, 80, 120, 160, 200, 200 + 40]
    t = common.FrameTimes(None, Fraction(25))  # no time base: frame index / rate
    assert t.time_base == Fraction(1, 25) and [t.next(None) for _ in range(3)] == [0, 1, 2]


def test_prepare_kinetics_short_side_clips_have_the_source_frames_and_rate(tmp_path, capsys):
    ann = tmp_path / "train.csv"
    ann.write_text("label,youtube_id,time_start,time_end,split\n"
                   "abseiling,aaaaaaaaaa1,0,10,train\n"     # trimmed download
                   "zumba,bbbbbbbbbb2,1,3,train\n")         # whole video, cut here
    vids = tmp_path / "downloads"
    write_index_video(vids / "aaaaaaaaaa1_000000_000010.mp4", 40, 25)
    write_index_video(vids / "bbbbbbbbbb2.mkv", 50, 10, fmt="matroska")
    out = tmp_path / "k"
    assert prepare_kinetics.main(["--train", str(ann), "--videos", str(vids), "--out", str(out),
                                  "--short-side", "32", "--workers", "1"]) == 0
    assert "cut/re-encoded 2 clips to short side 32, 0 already done, 0 failed" in capsys.readouterr().out
    rows = [line.split() for line in open(out / "train.csv").read().splitlines()]
    assert [r[0] for r in rows] == ["videos/train/abseiling/aaaaaaaaaa1_000000_000010.mp4",
                                    "videos/train/zumba/bbbbbbbbbb2_000001_000003.mp4"]
    assert_same_video(str(out / rows[0][0]), 0, 40, 25)
    assert_same_video(str(out / rows[1][0]), 10, 20, 10)


def test_prepare_ucf101_resize_videos_have_the_source_frames_and_rate(tmp_path, capsys):
    root = tmp_path / "ucf"
    write_index_video(root / "UCF-101" / "Archery" / "v_Archery_g01_c01.avi", 40, 25, "mpeg4", "avi")
    write_index_video(root / "UCF-101" / "Archery" / "v_Archery_g02_c01.mp4", 40, 25)  # an MP4 copy
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 Archery\n")
    (lists / "trainlist01.txt").write_text("Archery/v_Archery_g01_c01.avi 1\n")
    (lists / "testlist01.txt").write_text("Archery/v_Archery_g02_c01.mp4\n")
    out = tmp_path / "out"
    assert prepare_ucf101.main(["--root", str(root), "--out", str(out), "--splits", "1", "--resize", "32",
                                "--workers", "1"]) == 0
    assert "2 new, 0 already done, 0 failed" in capsys.readouterr().out
    for name in ("v_Archery_g01_c01.mp4", "v_Archery_g02_c01.mp4"):
        assert_same_video(str(out / "videos" / "Archery" / name), 0, 40, 25)


# -- B. two inputs, one output -----------------------------------------------------------------------
def one_line_error(capsys, tool: str, *named: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith(f"{tool}: error: ") and err.count("\n") == 1, err
    for n in named:
        assert str(n) in err, (n, err)
    return err


def test_frame_folders_of_two_extensions_are_refused(tmp_path, capsys):
    data = tmp_path / "data"
    write_index_video(data / "x" / "v.mp4", 6)
    write_index_video(data / "x" / "v.avi", 8, codec="mpeg4", fmt="avi")
    (data / "train.csv").write_text("x/v.mp4 0\nx/v.avi 1\n")
    out = tmp_path / "frames"
    assert extract_frames.main(["--csv", str(data / "train.csv"), "--out", str(out), "--workers", "1"]) == 2
    one_line_error(capsys, "extract_frames", data / "x" / "v.mp4", data / "x" / "v.avi", out / "x" / "v")
    assert not out.exists()  # refused before writing anything
    # the same below --videos (before, one of the two was silently left out)
    assert extract_frames.main(["--videos", str(data), "--out", str(out), "--workers", "1"]) == 2
    one_line_error(capsys, "extract_frames", "v.mp4", "v.avi", out / "x" / "v")
    assert not out.exists()


def test_frame_folders_of_videos_outside_two_csv_folders_are_refused(tmp_path, capsys):
    # A/train.csv: ../videos/v.mp4 and B/test.csv: videos/v.mp4 are two files, both key videos/v
    write_index_video(tmp_path / "videos" / "v.mp4", 6)
    write_index_video(tmp_path / "B" / "videos" / "v.mp4", 8)
    (tmp_path / "A").mkdir()
    (tmp_path / "A" / "train.csv").write_text("../videos/v.mp4 0\n")
    (tmp_path / "B" / "test.csv").write_text("videos/v.mp4 1\n")
    out = tmp_path / "frames"
    assert extract_frames.main(["--csv", str(tmp_path / "A" / "train.csv"), str(tmp_path / "B" / "test.csv"),
                                "--out", str(out), "--workers", "1"]) == 2
    one_line_error(capsys, "extract_frames", tmp_path / "videos" / "v.mp4", tmp_path / "B" / "videos" / "v.mp4",
                   out / "videos" / "v")


def test_frame_folder_that_is_another_folders_done_marker_is_refused(tmp_path, capsys):
    write_index_video(tmp_path / "data" / "x.mp4", 6)
    write_index_video(tmp_path / "data" / "x" / "done.mp4", 8)
    out = tmp_path / "frames"
    assert extract_frames.main(["--videos", str(tmp_path / "data"), "--out", str(out), "--workers", "1"]) == 2
    one_line_error(capsys, "extract_frames", "x.mp4", "done.mp4", out / "x" / "done", "'done' file")


def test_same_video_name_in_two_folders_gets_two_frame_folders(tmp_path, capsys):
    write_index_video(tmp_path / "data" / "a" / "v.mp4", 6)
    write_index_video(tmp_path / "data" / "b" / "v.mp4", 8, offset=10)
    out = tmp_path / "frames"
    assert extract_frames.main(["--videos", str(tmp_path / "data"), "--out", str(out), "--workers", "1"]) == 0
    assert "2 extracted (14 frames)" in capsys.readouterr().out
    assert len(os.listdir(out / "a" / "v")) == 6 + 1 and len(os.listdir(out / "b" / "v")) == 8 + 1


def test_output_csv_that_overwrites_an_input_csv_is_refused(tmp_path, capsys):
    write_index_video(tmp_path / "data" / "v.mp4", 6)
    csv = tmp_path / "data" / "train.csv"
    csv.write_text("v.mp4 0\n")
    assert extract_frames.main(["--csv", str(csv), "--out", str(tmp_path / "frames"), "--csv-out",
                                str(tmp_path / "data"), "--workers", "1"]) == 2
    one_line_error(capsys, "extract_frames", csv, "--csv-out")
    assert csv.read_text() == "v.mp4 0\n"


def test_names_differing_in_case_clash_where_the_file_system_ignores_case(tmp_path, capsys, monkeypatch):
    write_index_video(tmp_path / "data" / "V.mp4", 6)
    write_index_video(tmp_path / "data" / "v.mp4", 8)
    (tmp_path / "data" / "train.csv").write_text("V.mp4 0\nv.mp4 1\n")
    monkeypatch.setattr(common, "case_insensitive_fs", lambda path: True)  # as on macOS / Windows
    out = tmp_path / "frames"
    assert extract_frames.main(["--csv", str(tmp_path / "data" / "train.csv"), "--out", str(out)]) == 2
    one_line_error(capsys, "extract_frames", "V.mp4", "v.mp4", "upper from lower case")
    assert extract_flow.main(["--videos", str(tmp_path / "data"), "--out", str(tmp_path / "flow")]) == 2
    one_line_error(capsys, "extract_flow", "V.mp4", "v.mp4", "upper from lower case")
    assert not out.exists() and not (tmp_path / "flow").exists()


def test_case_probe_agrees_with_the_file_system_and_leaves_nothing(tmp_path):
    (tmp_path / "probe").write_text("")
    assert common.case_insensitive_fs(str(tmp_path / "not" / "yet")) == (tmp_path / "PROBE").exists()
    assert os.listdir(tmp_path) == ["probe"]


def test_flow_folders_of_two_extensions_below_videos_are_refused(tmp_path, capsys):
    data = tmp_path / "data"
    write_index_video(data / "v.mp4", 6)
    write_index_video(data / "v.avi", 8, codec="mpeg4", fmt="avi")
    write_index_video(data / "x.mp4", 6)
    write_index_video(data / "x" / "done.mp4", 6)
    out = tmp_path / "flow"
    assert extract_flow.main(["--videos", str(data), "--out", str(out), "--workers", "1"]) == 2
    err = one_line_error(capsys, "extract_flow", data / "v.avi", data / "v.mp4", out / "v")
    assert "and 1 more" in err  # x.mp4's done marker and x/done.mp4's folder
    assert not out.exists()


def test_same_video_name_in_two_folders_gets_two_flow_folders(tmp_path, capsys):
    write_index_video(tmp_path / "data" / "a" / "v.mp4", 6)
    write_index_video(tmp_path / "data" / "b" / "v.mp4", 8)
    out = tmp_path / "flow"
    assert extract_flow.main(["--videos", str(tmp_path / "data"), "--out", str(out), "--workers", "1",
                              "--format", "npz"]) == 0
    assert "2 extracted (12 frame pairs)" in capsys.readouterr().out


def make_ucf_lists(root, train: list[str], test: list[str]):
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("1 Archery\n2 HandstandPushups\n")
    (lists / "trainlist01.txt").write_text("".join(f"{t}\n" for t in train))
    (lists / "testlist01.txt").write_text("".join(f"{t}\n" for t in test))


def test_prepare_ucf101_resize_refuses_two_files_with_one_output(tmp_path, capsys):
    vids = tmp_path / "UCF-101" / "Archery"
    write_index_video(vids / "v_Archery_g01_c01.avi", 6, codec="mpeg4", fmt="avi")
    write_index_video(vids / "v_Archery_g01_c01.mp4", 8)
    make_ucf_lists(tmp_path, ["Archery/v_Archery_g01_c01.avi 1"], ["Archery/v_Archery_g01_c01.mp4"])
    out = tmp_path / "out"
    assert prepare_ucf101.main(["--root", str(tmp_path), "--out", str(out), "--splits", "1", "--resize", "32",
                                "--workers", "1"]) == 2
    one_line_error(capsys, "prepare_ucf101", vids / "v_Archery_g01_c01.avi", vids / "v_Archery_g01_c01.mp4",
                   out / "videos" / "Archery" / "v_Archery_g01_c01.mp4")
    assert not (out / "videos").exists()


def test_prepare_ucf101_resize_encodes_one_file_once_whatever_the_lists_spelling(tmp_path, capsys):
    disk = "HandstandPushups/v_HandStandPushups_g01_c01.avi"
    write_index_video(tmp_path / "UCF-101" / disk, 6, codec="mpeg4", fmt="avi")
    make_ucf_lists(tmp_path, [f"{disk} 2"], ["HandstandPushups/v_HandstandPushups_g01_c01.avi"])
    out = tmp_path / "out"
    assert prepare_ucf101.main(["--root", str(tmp_path), "--out", str(out), "--splits", "1", "--resize", "32",
                                "--workers", "2"]) == 0
    assert "1 new, 0 already done, 0 failed" in capsys.readouterr().out
    assert os.listdir(out / "videos" / "HandstandPushups") == ["v_HandStandPushups_g01_c01.mp4"]
    train = open(out / "split1" / "train.csv").read().split()[0]
    assert open(out / "split1" / "test.csv").read().split()[0] == train


def kinetics_annotations(path, rows: list[str]):
    path.write_text("label,youtube_id,time_start,time_end,split\n" + "".join(f"{r}\n" for r in rows))
    return path


def test_prepare_kinetics_refuses_a_clip_with_two_files(tmp_path, capsys):
    ann = kinetics_annotations(tmp_path / "train.csv", ["zumba,aaaaaaaaaa1,0,10,train"])
    vids = tmp_path / "downloads"
    write_index_video(vids / "train" / "aaaaaaaaaa1_000000_000010.mp4", 6)
    write_index_video(vids / "retry" / "aaaaaaaaaa1_000000_000010.mkv", 8, fmt="matroska")
    out = tmp_path / "k"
    for extra in ([], ["--short-side", "32"]):
        assert prepare_kinetics.main(["--train", str(ann), "--videos", str(vids), "--out", str(out)] + extra) == 2
        one_line_error(capsys, "prepare_kinetics", "aaaaaaaaaa1_000000_000010.mp4",
                       "aaaaaaaaaa1_000000_000010.mkv", f"{ann}:2")
        assert not out.exists()


def test_prepare_kinetics_encodes_a_clip_listed_twice_once(tmp_path, capsys):
    ann = kinetics_annotations(tmp_path / "train.csv", ["zumba,aaaaaaaaaa1,1,3,train", "zumba,aaaaaaaaaa1,1,3,train"])
    write_index_video(tmp_path / "downloads" / "aaaaaaaaaa1.mp4", 40, 10)
    out = tmp_path / "k"
    assert prepare_kinetics.main(["--train", str(ann), "--videos", str(tmp_path / "downloads"), "--out", str(out),
                                  "--short-side", "32", "--workers", "2"]) == 0
    assert "cut/re-encoded 1 clips to short side 32, 0 already done, 0 failed" in capsys.readouterr().out
    assert len(open(out / "train.csv").read().splitlines()) == 2  # the annotation's two lines


def test_prepare_kinetics_clips_differing_in_case_clash_where_the_file_system_ignores_case(tmp_path, capsys,
                                                                                         monkeypatch):
    ann = kinetics_annotations(tmp_path / "train.csv", ["zumba,abcDEFghi_1,0,10,train", "zumba,ABCdefGHI_1,0,10,train"])
    write_index_video(tmp_path / "downloads" / "abcDEFghi_1_000000_000010.mp4", 6)
    write_index_video(tmp_path / "downloads" / "ABCdefGHI_1_000000_000010.mp4", 8)
    monkeypatch.setattr(common, "case_insensitive_fs", lambda path: True)
    out = tmp_path / "k"
    assert prepare_kinetics.main(["--train", str(ann), "--videos", str(tmp_path / "downloads"), "--out", str(out),
                                  "--short-side", "32", "--workers", "1"]) == 2
    one_line_error(capsys, "prepare_kinetics", "abcDEFghi_1_000000_000010.mp4", "ABCdefGHI_1_000000_000010.mp4",
                   "upper from lower case")


def test_prepare_kinetics_rerun_with_out_inside_videos_reads_downloads_only(tmp_path, capsys):
    ann = kinetics_annotations(tmp_path / "train.csv", ["zumba,aaaaaaaaaa1,0,10,train"])
    vids = tmp_path / "k400"
    write_index_video(vids / "raw" / "aaaaaaaaaa1_000000_000010.mp4", 6)
    args = ["--train", str(ann), "--videos", str(vids), "--out", str(vids / "prepared"), "--short-side", "32",
            "--workers", "1"]
    assert prepare_kinetics.main(args) == 0
    assert prepare_kinetics.main(args) == 0  # the clip written the first time is not a second download
    assert "0 clips to short side 32, 1 already done" in capsys.readouterr().out


def test_prepare_imagenet_val_refuses_an_image_with_two_files(tmp_path, capsys):
    from PIL import Image

    flat = tmp_path / "val_flat"
    (flat / "extra").mkdir(parents=True)
    Image.new("RGB", (8, 8), (10, 0, 0)).save(flat / "ILSVRC2012_val_00000001.JPEG")
    Image.new("RGB", (8, 8), (200, 0, 0)).save(flat / "extra" / "ILSVRC2012_val_00000001.png")
    sol = tmp_path / "LOC_val_solution.csv"
    sol.write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,n01443537 1 2 3 4\n")
    out = tmp_path / "val"
    assert prepare_imagenet_val.main(["--val", str(flat), "--solution", str(sol), "--out", str(out)]) == 2
    one_line_error(capsys, "prepare_imagenet_val", flat / "ILSVRC2012_val_00000001.JPEG",
                   flat / "extra" / "ILSVRC2012_val_00000001.png", out / "n01443537")
    assert not out.exists()


def test_prepare_imagenet_val_rerun_into_a_folder_inside_val(tmp_path, capsys):
    from PIL import Image

    flat = tmp_path / "val"
    flat.mkdir()
    Image.new("RGB", (8, 8)).save(flat / "ILSVRC2012_val_00000001.JPEG")
    sol = tmp_path / "LOC_val_solution.csv"
    sol.write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,n01443537 1 2 3 4\n")
    args = ["--val", str(flat), "--solution", str(sol), "--out", str(flat / "sorted")]
    assert prepare_imagenet_val.main(args) == 0
    assert prepare_imagenet_val.main(args) == 0  # its own link is not a second copy of the image
    assert "0 images linked into 1 class folders of" in capsys.readouterr().out.splitlines()[-1]


def test_check_videos_report_that_would_overwrite_a_csv_is_refused(tmp_path, capsys):
    csv = tmp_path / "train.csv"
    csv.write_text("v.mp4 0\n")
    assert check_videos.main([str(csv), "--report", str(csv)]) == 2
    one_line_error(capsys, "check_videos", csv, "input CSV")
    assert check_videos.main([str(csv), "--report", str(tmp_path / "c.csv"), "--out-csv", str(tmp_path / "c.csv")]) == 2
    one_line_error(capsys, "check_videos", tmp_path / "c.csv", "clean CSV")
    assert csv.read_text() == "v.mp4 0\n" and not (tmp_path / "c.csv").exists()


def test_clash_from_the_command_line_is_one_message_and_exit_2(tmp_path):
    write_index_video(tmp_path / "data" / "v.mp4", 4)
    write_index_video(tmp_path / "data" / "v.avi", 4, codec="mpeg4", fmt="avi")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "data_prep", "extract_frames.py"), "--videos",
                           str(tmp_path / "data"), "--out", str(tmp_path / "frames")],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("extract_frames: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "v.mp4" in proc.stderr and "v.avi" in proc.stderr
