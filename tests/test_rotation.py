"""Display rotation: a video carrying a display matrix (a phone video filmed upright) decodes as
players show it, with both backends, at full size (training) and at the test scale
(``short_side``: multi-view test / predict), all agreeing up to codec and resampling noise."""

import numpy as np
import pytest

from vidnl.data import decoding, transforms
from vidnl.data.decoding import read_frames

from conftest import BACKENDS, needs_decord

H, W = 48, 64  # stored (landscape) size


def pattern() -> np.ndarray:
    """H×W×3 uint8 with two distinct colours in opposite corners (a white 12×20 block top-left, a
    green 12×8 block bottom-right) on grey: each of the 8 rotations / mirrors looks different."""
    img = np.full((H, W, 3), 64, np.uint8)
    img[:12, :20] = 255
    img[-12:, -8:] = (0, 200, 0)
    return img


def write_oriented(path: str, degrees: int, hflip: bool = False, num_frames: int = 6) -> str:
    """A stored-landscape H.264 MP4 whose display matrix turns it ``degrees`` counter-clockwise
    (PyAV's ``set_display_rotation``: FFmpeg's convention, what ``VideoFrame.rotation`` reads back)
    and mirrors it left-right after that when ``hflip``."""
    import av

    with av.open(path, mode="w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.height, stream.width = H, W
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "12", "preset": "veryfast"}
        if degrees or hflip:
            stream.set_display_rotation(degrees, hflip=hflip)
        for _ in range(num_frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(pattern(), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def expected(degrees: int, hflip: bool = False) -> np.ndarray:
    """The pattern as a player shows it: turned ``degrees`` counter-clockwise, then mirrored."""
    img = np.rot90(pattern(), degrees // 90)
    return np.ascontiguousarray(img[:, ::-1] if hflip else img)


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


ORIENTATIONS = [(0, False), (90, False), (180, False), (270, False), (90, True)]


def test_the_test_files_carry_the_rotation(tmp_path):
    """The writer works: PyAV reads the display rotation back from each file (else every other test
    here would test nothing)."""
    import av

    for degrees, hflip in ORIENTATIONS:
        path = write_oriented(str(tmp_path / f"r{degrees}{hflip}.mp4"), degrees, hflip)
        with av.open(path) as container:
            frame = next(container.decode(video=0))
            assert (frame.width, frame.height) == (W, H)  # stored unrotated
            if not hflip:
                assert frame.rotation % 360 == degrees
            matrices = [np.frombuffer(bytes(sd), np.int32) for sd in frame.side_data
                        if sd.type.name == "DISPLAYMATRIX"]
            if degrees or hflip:  # FFmpeg's matrix is the one test_display_orientation_* builds
                assert len(matrices) == 1
                np.testing.assert_array_equal(matrices[0], _ffmpeg_matrix(degrees, hflip))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("degrees,hflip", ORIENTATIONS)
def test_rotated_video_decodes_as_displayed_at_full_size(tmp_path, backend, degrees, hflip):
    """Full-size decode (training): the displayed shape and orientation."""
    path = write_oriented(str(tmp_path / "v.mp4"), degrees, hflip)
    want = expected(degrees, hflip)
    out = read_frames(path, lambda n: np.array([0, 3, 5]), backend)
    assert out.frames.shape == (3,) + want.shape
    for frame in out.frames:
        assert mean_abs_diff(frame, want) < 2.0
    # the wrong orientations are far off (the check above tells them apart)
    for other in ORIENTATIONS:
        if other != (degrees, hflip) and expected(*other).shape == want.shape:
            assert mean_abs_diff(out.frames[0], expected(*other)) > 10.0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("degrees,hflip", ORIENTATIONS)
def test_rotated_video_decodes_as_displayed_at_the_test_scale(tmp_path, backend, degrees, hflip):
    """Decode at a target scale (multi-view test / predict): the displayed orientation and aspect
    (shorter displayed side = short_side, nothing squashed), the same image as the full-size decode
    resized afterwards."""
    path = write_oriented(str(tmp_path / "v.mp4"), degrees, hflip)
    pick = lambda n: np.array([0, 3, 5])  # noqa: E731
    scaled = read_frames(path, pick, backend, short_side=24)
    full = read_frames(path, pick, backend)
    h, w = expected(degrees, hflip).shape[:2]
    assert scaled.frames.shape == (3,) + decoding.scaled_size(h, w, 24) + (3,)
    resized_full = transforms.channels_last(transforms.resize_short_side(transforms.frames_to_tensor(full.frames), 24))
    resized_want = transforms.channels_last(transforms.resize_short_side(
        transforms.frames_to_tensor(expected(degrees, hflip)[None]), 24))
    assert mean_abs_diff(scaled.frames, resized_full.numpy()) < 4.0
    assert mean_abs_diff(scaled.frames, np.broadcast_to(resized_want.numpy(), scaled.frames.shape)) < 4.0


@needs_decord
@pytest.mark.parametrize("degrees,hflip", ORIENTATIONS)
@pytest.mark.parametrize("short_side", [None, 24])
def test_backends_agree_on_rotated_videos(tmp_path, degrees, hflip, short_side):
    """decord (or auto) and PyAV give the same frames for a rotated video, at either scale."""
    path = write_oriented(str(tmp_path / "v.mp4"), degrees, hflip)
    pick = lambda n: np.arange(n)  # noqa: E731
    a = read_frames(path, pick, "decord", short_side=short_side)
    b = read_frames(path, pick, "pyav", short_side=short_side)
    assert a.frames.shape == b.frames.shape
    # codec noise; at the test scale also resampling (decord's scaler and PyAV's AREA differ)
    assert mean_abs_diff(a.frames, b.frames) < (1.0 if short_side is None else 4.0)


@needs_decord
def test_unrotated_videos_stay_with_decord(tmp_path):
    """Only a rotated video is handed to PyAV: a plain one is decoded by decord (fast random access)."""
    path = write_oriented(str(tmp_path / "plain.mp4"), 0)
    assert read_frames(path, lambda n: np.arange(n), "decord").backend == "decord"


@pytest.mark.parametrize("degrees,hflip", ORIENTATIONS + [(180, True), (270, True), (0, True)])
def test_display_orientation_of_ffmpeg_matrices(degrees, hflip):
    """``display_orientation`` of the matrix FFmpeg writes for a rotation (+ mirror) turns an array
    exactly like numpy's rot90 / fliplr of the documented counter-clockwise convention."""
    img = np.arange(5 * 7 * 3).reshape(5, 7, 3)
    want = np.rot90(img, degrees // 90)
    want = want[:, ::-1] if hflip else want
    matrix = _ffmpeg_matrix(degrees, hflip)
    np.testing.assert_array_equal(decoding.orient(img, decoding.display_orientation(matrix)), want)


def _ffmpeg_matrix(degrees: int, hflip: bool) -> np.ndarray:
    """FFmpeg's av_display_rotation_set(-degrees) then av_display_matrix_flip(hflip): 9 int32."""
    theta = np.deg2rad(degrees)  # av_display_rotation_set(m, -degrees) uses radians = degrees·π/180
    c, s = np.cos(theta), np.sin(theta)
    m = np.array([c, -s, 0, s, c, 0, 0, 0, 0], dtype=np.float64) * 65536
    m[8] = 1 << 30
    if hflip:
        m[[0, 3, 6]] *= -1
    return np.round(m).astype(np.int32)


def test_odd_angles_are_left_as_stored():
    """A matrix that is not a multiple of 90° is not applied (the frames stay as stored)."""
    assert decoding.display_orientation(_ffmpeg_matrix(30, False)) == decoding.IDENTITY
    assert decoding.display_orientation(None) == decoding.IDENTITY
