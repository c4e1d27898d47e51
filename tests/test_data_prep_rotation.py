"""The data_prep tools see a video with a display rotation (a phone video filmed upright, stored
landscape with a display matrix) as vidnl's decoders do (``read_frames``: turned as displayed):
re-encoded clips (prepare_kinetics --short-side, prepare_ucf101 --resize) are written turned, at
the displayed size and without a display matrix; frame folders hold the displayed frames; optical
flow is computed on the displayed frames, so its size and x/y components are the displayed ones."""

import json
import os

import av
import numpy as np
import pytest

from vidnl.data import decoding
from vidnl.data.decoding import read_frames

from data_prep import common, extract_flow, extract_frames, prepare_kinetics, prepare_ucf101
from conftest import write_audio_only

H, W = 48, 64  # stored (landscape) size
ALL = np.arange  # choose every frame


def pattern() -> np.ndarray:
    """H×W×3 uint8: a white 12×20 block top-left and a green 12×8 block bottom-right on grey, so
    each rotation / mirror looks different."""
    img = np.full((H, W, 3), 64, np.uint8)
    img[:12, :20] = 255
    img[-12:, -8:] = (0, 200, 0)
    return img


def displayed(frames: np.ndarray, degrees: int, hflip: bool = False) -> np.ndarray:
    """N×H×W(×C) frames as a player shows them: turned ``degrees`` counter-clockwise, then mirrored."""
    out = np.rot90(frames, degrees // 90, axes=(1, 2))
    return np.ascontiguousarray(out[:, :, ::-1] if hflip else out)


def write_video(path, frames: np.ndarray, degrees: int = 0, hflip: bool = False, rate: int = 25,
                lossless: bool = False) -> str:
    """An H.264 MP4 of N×h×w×3 rgb (or N×h×w grey: written as the Y plane, exactly) frames whose
    display matrix turns them ``degrees`` counter-clockwise (then mirrors them when ``hflip``);
    ``lossless``: x264 at qp 0, the decoded Y plane equals the grey frames."""
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with av.open(path, mode="w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"qp": "0", "preset": "veryfast"} if lossless else {"crf": "12", "preset": "veryfast"}
        if degrees or hflip:
            stream.set_display_rotation(degrees, hflip=hflip)
        for img in frames:
            if img.ndim == 2:  # grey: the Y plane itself, neutral chroma
                h, w = img.shape
                planes = np.concatenate([img.ravel(), np.full(h * w // 2, 128, np.uint8)]).reshape(-1, w)
                frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            else:
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def rotated_video(path, degrees: int, hflip: bool = False, n: int = 6, rate: int = 25) -> str:
    """``n`` frames of the pattern, stored landscape, displayed turned; the writer's rotation is
    checked (else the tests below would test nothing)."""
    write_video(path, np.stack([pattern()] * n), degrees, hflip, rate)
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        assert (frame.width, frame.height) == (W, H)
        assert decoding.frame_orientation(frame) != decoding.IDENTITY
    return str(path)


def display_matrices(path: str) -> list:
    """The DISPLAYMATRIX side data of a video's first frame (what the decoders turn it by)."""
    with av.open(path) as container:
        frame = next(container.decode(video=0))
        return [bytes(sd) for sd in frame.side_data if sd.type.name == "DISPLAYMATRIX"]


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def assert_reencoded_as_displayed(out: str, src: str, degrees: int, hflip: bool, short_side: int | None,
                                  first: int = 0) -> None:
    """``out``, a re-encode of ``src`` (from frame ``first``), is stored at the displayed size
    without a display matrix and decodes like ``src`` at that size."""
    got = read_frames(out, ALL)
    want = read_frames(src, ALL, short_side=short_side)
    h, w = displayed(pattern()[None], degrees, hflip).shape[1:3]
    if short_side:
        h, w = decoding.scaled_size(h, w, short_side)
    with av.open(out) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.height, stream.codec_context.width) == (h, w)
    assert display_matrices(out) == []
    assert got.frames.shape[1:] == (h, w, 3)
    want_frames = want.frames[first:first + got.num_frames]
    assert len(want_frames) == got.num_frames
    # codec noise (and resampling at the short side: the re-encoder's bilinear, the decoder's AREA)
    assert mean_abs_diff(got.frames, want_frames) < (6.0 if short_side else 2.0)  # a wrong turn: > 25


ROTATIONS = [(90, False), (270, False), (180, False), (90, True)]


# -- re-encoding -----------------------------------------------------------------------------------
@pytest.mark.parametrize("degrees,hflip", ROTATIONS)
def test_prepare_kinetics_reencodes_a_rotated_clip_as_displayed(tmp_path, capsys, degrees, hflip):
    """--short-side: a trimmed clip and a cut whole video are both written turned, the short side
    that of the displayed frame, and decode like their sources do."""
    ann, vids, out = tmp_path / "ann.csv", tmp_path / "downloads", tmp_path / "k"
    ann.write_text("label,youtube_id,time_start,time_end,split\n"
                   "phone,aaaaaaaaaa1,0,2,train\n"      # trimmed clip present
                   "phone,bbbbbbbbbb2,1,3,train\n")     # the whole video: cut to [1 s, 3 s)
    clip = rotated_video(vids / "aaaaaaaaaa1_000000_000002.mp4", degrees, hflip, n=10, rate=5)
    whole = rotated_video(vids / "bbbbbbbbbb2.mp4", degrees, hflip, n=20, rate=5)
    assert prepare_kinetics.main(["--train", str(ann), "--videos", str(vids), "--out", str(out),
                                  "--short-side", "24", "--workers", "1"]) == 0
    assert "cut/re-encoded 2 clips to short side 24, 0 already done, 0 failed" in capsys.readouterr().out
    videos = out / "videos" / "train" / "phone"
    assert_reencoded_as_displayed(str(videos / "aaaaaaaaaa1_000000_000002.mp4"), clip, degrees, hflip, 24)
    assert_reencoded_as_displayed(str(videos / "bbbbbbbbbb2_000001_000003.mp4"), whole, degrees, hflip, 24, first=5)
    assert read_frames(str(videos / "bbbbbbbbbb2_000001_000003.mp4"), ALL).num_frames == 10


@pytest.mark.parametrize("degrees,hflip", [(90, False), (270, False)])
def test_prepare_ucf101_resize_reencodes_a_rotated_video_as_displayed(tmp_path, capsys, degrees, hflip):
    root, out = tmp_path / "ucf", tmp_path / "o"
    src = rotated_video(root / "UCF-101" / "Phone" / "v_Phone_g01_c01.mp4", degrees, hflip)
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 Phone\n")
    (lists / "trainlist01.txt").write_text("Phone/v_Phone_g01_c01.mp4 1\n")
    (lists / "testlist01.txt").write_text("Phone/v_Phone_g01_c01.mp4\n")
    assert prepare_ucf101.main(["--root", str(root), "--out", str(out), "--splits", "1", "--resize", "24",
                                "--workers", "1"]) == 0
    assert "re-encoded to short side 24: 1 new, 0 already done, 0 failed" in capsys.readouterr().out
    assert_reencoded_as_displayed(str(out / "videos" / "Phone" / "v_Phone_g01_c01.mp4"), src, degrees, hflip, 24)


@pytest.mark.parametrize("degrees,hflip", [(90, False), (270, False), (180, False)])
def test_reencode_at_full_size_is_written_as_displayed(tmp_path, degrees, hflip):
    """No --short-side (a whole Kinetics video only cut): the displayed size (48×64 -> 64 high,
    48 wide at 90°), no display matrix, the same frames."""
    src = rotated_video(tmp_path / "v.mp4", degrees, hflip)
    out = str(tmp_path / "out.mp4")
    info = common.reencode_video(src, out)
    h, w = displayed(pattern()[None], degrees, hflip).shape[1:3]
    assert (info["height"], info["width"], info["frames"]) == (h, w, 6)
    assert_reencoded_as_displayed(out, src, degrees, hflip, None)


# -- frame folders ---------------------------------------------------------------------------------
@pytest.mark.parametrize("short_side", [0, 24])
@pytest.mark.parametrize("degrees,hflip", ROTATIONS)
def test_frame_folder_of_a_rotated_video_matches_read_frames(tmp_path, capsys, degrees, hflip, short_side):
    """A frame folder holds the frames ``read_frames`` returns for its video (turned; at
    --short-side, the displayed frame's short side), so DATA.SOURCE frames and video agree."""
    video = rotated_video(tmp_path / "videos" / "phone.mp4", degrees, hflip)
    out = tmp_path / "frames"
    args = ["--videos", str(tmp_path / "videos"), "--out", str(out), "--workers", "1"]
    assert extract_frames.main(args + (["--short-side", str(short_side)] if short_side else [])) == 0
    folder = str(out / "phone")
    want = read_frames(video, ALL, short_side=short_side or None)
    got = read_frames(folder, ALL)
    assert got.frames.shape == want.frames.shape
    # JPEG and codec noise (and resampling at the short side: the tool's bilinear, the decoder's AREA)
    assert mean_abs_diff(got.frames, want.frames) < (5.0 if short_side else 2.0)
    with open(os.path.join(folder, extract_frames.DONE)) as f:
        meta = json.load(f)
    assert (meta["height"], meta["width"], meta["num_frames"]) == want.frames.shape[1:3] + (6,)


# -- optical flow ----------------------------------------------------------------------------------
def moving_texture(n: int = 6) -> np.ndarray:
    """N×H×W grey frames: a smooth random texture moving 1 px per frame to the right (stored axes)."""
    import cv2

    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 256, (H, W)).astype(np.float32), (0, 0), 2.0)
    base = ((base - base.min()) / (base.max() - base.min()) * 200 + 28).astype(np.uint8)
    return np.stack([np.roll(base, k, axis=1) for k in range(n)])


# how the stored rightward motion looks once displayed: (flow x, flow y) in pixels per frame
DISPLAYED_MOTION = {(90, False): (0, -1), (270, False): (0, 1), (180, False): (-1, 0), (90, True): (0, -1)}


@pytest.mark.parametrize("degrees,hflip", ROTATIONS)
def test_flow_of_a_rotated_video_is_the_flow_of_its_displayed_frames(tmp_path, capsys, degrees, hflip):
    """The flow of a rotated video has the displayed size and equals the flow the tool computes for
    an unrotated copy whose pixels are the displayed frames (both lossless, so the grey frames
    are the same): x/y are the displayed axes, as for the RGB frames of DATA.MODALITY rgb_flow."""
    stored = moving_texture()
    videos, out = tmp_path / "videos", tmp_path / "flow"
    write_video(videos / "rotated.mp4", stored, degrees, hflip, lossless=True)
    write_video(videos / "upright.mp4", displayed(stored, degrees, hflip), lossless=True)
    assert display_matrices(str(videos / "rotated.mp4")) and not display_matrices(str(videos / "upright.mp4"))
    assert extract_flow.main(["--videos", str(videos), "--out", str(out), "--format", "npz", "--workers", "1"]) == 0
    capsys.readouterr()
    h, w = displayed(stored, degrees, hflip).shape[1:3]
    for name in ("rotated", "upright"):
        with open(out / name / "done") as f:
            meta = json.load(f)
        assert (meta["height"], meta["width"], meta["num_pairs"]) == (h, w, 5)
    for k in range(1, 6):
        got = np.load(out / "rotated" / f"flow_{k:05d}.npz")["flow"].astype(np.float32)
        want = np.load(out / "upright" / f"flow_{k:05d}.npz")["flow"].astype(np.float32)
        assert got.shape == want.shape == (2, h, w)
        assert np.abs(got - want).mean() < 0.02, k
        # and the motion is the displayed one (away from the wrapped-around border)
        inner = got[:, 8:-8, 8:-8].reshape(2, -1).mean(1)
        np.testing.assert_allclose(inner, DISPLAYED_MOTION[(degrees, hflip)], atol=0.25)


# -- files without video ---------------------------------------------------------------------------
def test_tools_say_no_video_stream_like_the_decoders(tmp_path):
    """A file without a video stream fails in every tool with the decoders' words."""
    path = write_audio_only(str(tmp_path / "tone.m4a"))
    why = "no video stream (the file holds 1 audio stream)"
    with pytest.raises(RuntimeError) as info:
        read_frames(path, ALL)
    assert str(info.value).endswith(why)
    with pytest.raises(RuntimeError) as info:
        common.reencode_video(path, str(tmp_path / "out.mp4"))
    assert str(info.value) == why and os.listdir(tmp_path) == ["tone.m4a"]  # nothing written
    with pytest.raises(RuntimeError) as info:
        extract_frames.extract_frames(path, str(tmp_path / "frames"))
    assert str(info.value) == why
    with pytest.raises(RuntimeError) as info:
        extract_flow.extract_video(path, str(tmp_path / "flow"))
    assert str(info.value) == why
