import os

import numpy as np
import pytest

from vidnl.data import decoding
from vidnl.data.decoding import DecodeError, read_frames

from conftest import BACKENDS, SHARED_VIDEOS, index_video, needs_decord, synth, write_audio_only, write_video


def all_frames(n):
    return np.arange(n)


@needs_decord
def test_decord_and_pyav_agree_on_a_pyav_written_video(tmp_path):
    rng = np.random.default_rng(0)
    path = write_video(str(tmp_path / "v.mp4"), synth.render_video(rng, 1, 20, 48, 64))
    a = decoding._decode_decord(path, all_frames, 1)
    b = decoding._decode_pyav(path, all_frames, 1)
    assert a.num_frames == b.num_frames == 20
    assert a.frames.shape == b.frames.shape == (20, 48, 64, 3)
    diff = np.abs(a.frames.astype(np.int16) - b.frames.astype(np.int16))
    assert diff.mean() < 0.5 and diff.max() <= 8


def test_frame_indices_are_the_ones_asked_for(tmp_path):
    path = write_video(str(tmp_path / "idx.mp4"), index_video(30))
    for backend in ("decord", "pyav"):
        out = read_frames(path, lambda n: np.array([0, 7, 7, 29, 3]), backend)
        grey = out.frames.reshape(5, -1).mean(1) / 4
        np.testing.assert_allclose(grey, [0, 7, 7, 29, 3], atol=0.6)


@pytest.mark.skipif(not os.path.isdir(SHARED_VIDEOS), reason="../shared/data/videos is not available (user clone)")
@pytest.mark.parametrize("name", ["real_320x240_25fps.avi", "real_340x256_30fps.mp4",
                                  "real_armwrestling_340x256_28fps.mp4"])
@needs_decord
def test_decord_and_pyav_agree_on_real_videos(name):
    path = os.path.join(SHARED_VIDEOS, name)
    if not os.path.exists(path):
        pytest.skip(f"{path} missing")
    pick = lambda n: np.linspace(0, n - 1, 12).round().astype(int)  # noqa: E731
    a = decoding._decode_decord(path, pick, 1)
    b = decoding._decode_pyav(path, pick, 1)
    assert a.num_frames == b.num_frames
    diff = np.abs(a.frames.astype(np.int16) - b.frames.astype(np.int16))
    assert diff.mean() < 1.0


def test_pyav_fallback_when_decord_fails(tmp_path, monkeypatch):
    path = write_video(str(tmp_path / "v.mp4"), index_video(10))

    def broken(*a, **k):
        raise RuntimeError("decord cannot")
    monkeypatch.setattr(decoding, "_DECODERS", {**decoding._DECODERS, "decord": broken})
    out = read_frames(path, lambda n: np.arange(n), "decord")
    assert out.backend == "pyav" and out.frames.shape[0] == 10


def test_bad_files_raise_decode_error_naming_the_file(tmp_path):
    good = write_video(str(tmp_path / "good.mp4"), index_video(10))
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    data = open(good, "rb").read()
    trunc = tmp_path / "trunc.mp4"
    trunc.write_bytes(data[: len(data) // 2])
    for path, why in ((str(empty), "empty"), (str(trunc), "cannot decode"), (str(tmp_path / "nope.mp4"), "does not exist")):
        with pytest.raises(DecodeError) as info:
            read_frames(path, all_frames)
        assert path in str(info.value) and why in str(info.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_test_views_are_decoded_at_the_test_scale(tmp_path, backend):
    """A video larger than the test scale is scaled while decoding (memory follows the model's
    input size); the frames agree with a full decode resized afterwards up to resampling."""
    import torch

    from vidnl.data import transforms
    from vidnl.data.decoding import read_frames

    yy, xx = np.mgrid[0:96, 0:160]
    frames = np.stack([np.stack([(xx + 4 * i) % 256, yy * 2, (xx + yy) % 256], -1).astype(np.uint8)
                       for i in range(12)])
    path = write_video(str(tmp_path / "big.mp4"), frames)
    pick = lambda n: np.arange(0, n, 2)  # noqa: E731
    scaled = read_frames(path, pick, backend, short_side=48)
    full = read_frames(path, pick, backend)
    assert scaled.frames.shape == (6, 48, 80, 3) and full.frames.shape == (6, 96, 160, 3)
    ref = transforms.resize_short_side(transforms.frames_to_tensor(full.frames), 48).permute(0, 2, 3, 1)
    diff = (torch.from_numpy(scaled.frames).float() - ref.float()).abs()
    assert diff.mean() < 4.0, diff.mean()
    small = read_frames(path, pick, backend, short_side=200)  # never upscaled while decoding
    assert small.frames.shape == full.frames.shape


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,codec", [("tone.m4a", "aac"), ("tone.wav", "pcm_s16le")])
def test_audio_only_file_is_a_decode_error_naming_it(tmp_path, backend, name, codec):
    """A file without a video stream is an ordinary DecodeError (skipped like any undecodable
    video) that names the file and says "no video stream", the same with both backends and at
    the test scale, not a decoder's internal error."""
    path = write_audio_only(str(tmp_path / name), codec)
    for short_side in (None, 32):
        with pytest.raises(DecodeError) as info:
            read_frames(path, all_frames, backend, short_side=short_side)
        assert info.value.path == path and path in str(info.value)
        assert info.value.reason == "no video stream (the file holds 1 audio stream)"
