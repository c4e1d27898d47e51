"""The training items' retry policy (``decode_with_retries``), shared by the video and the flow
datasets: which video is tried next, what is recorded, reproducibility, giving up."""

import os

import numpy as np
import pytest

from conftest import index_video, write_video
from vidnl.data.datasets.video_csv import ClipConfig, VideoCSVDataset, VideoRecord, decode_with_retries
from vidnl.data.decoding import DecodeError


def _records(n):
    return [VideoRecord(f"v{i}.mp4", i % 2) for i in range(n)]


def _next_index(seed, epoch, index, k, n):
    """The video tried after failure k of ``index``: drawn from default_rng([seed, epoch, index, k])."""
    return int(np.random.default_rng([seed, epoch, index, k]).integers(0, n))


def test_a_failing_video_is_replaced_by_the_one_its_rng_draws_and_recorded():
    records = _records(10)
    bad = {3}
    tried = []

    def attempt(i, rng):
        tried.append(i)
        if i in bad:
            raise DecodeError(records[i].path, "moov atom not found")
        return ("ok", i, float(rng.random()))

    result, used, failures = decode_with_retries(records, 3, 5, seed=7, epoch=2, attempt=attempt, give_up="")
    expected = _next_index(7, 2, 3, 0, 10)
    assert tried[:2] == [3, expected] and used == expected
    assert failures == [("v3.mp4", "moov atom not found")]
    # the replacement's clip comes from default_rng([seed, epoch, new index, 1]): reproducible
    assert result == ("ok", expected, float(np.random.default_rng([7, 2, expected, 1]).random()))
    again = decode_with_retries(records, 3, 5, seed=7, epoch=2, attempt=attempt, give_up="")
    assert again == (result, used, failures)
    other_epoch = decode_with_retries(records, 3, 5, seed=7, epoch=3, attempt=attempt, give_up="")
    assert other_epoch[1] == _next_index(7, 3, 3, 0, 10)


def test_a_good_video_is_decoded_once_with_attempt_zero_rng():
    calls = []

    def attempt(i, rng):
        calls.append(i)
        return float(rng.random())

    result, used, failures = decode_with_retries(_records(4), 1, 3, seed=0, epoch=0, attempt=attempt, give_up="")
    assert calls == [1] and used == 1 and failures == []
    assert result == float(np.random.default_rng([0, 0, 1, 0]).random())


def test_a_failure_inside_another_file_names_both():
    records = _records(2)

    def attempt(i, rng):
        if i == 0:
            raise DecodeError("flow/v0/x_00001.jpg", "missing")
        return i

    _, used, failures = decode_with_retries(records, 0, 20, 0, 0, attempt, "")
    assert used == 1 and failures[0] == ("v0.mp4", "flow/v0/x_00001.jpg: missing")


def test_gives_up_after_num_retries_plus_one_failures_naming_the_last():
    records = _records(5)

    def attempt(i, rng):
        raise DecodeError(records[i].path, "broken")

    with pytest.raises(RuntimeError, match=r"3 videos in a row could not be decoded; the last: v\d\.mp4 \(broken\)\. "
                                           r"Check it\."):
        decode_with_retries(records, 0, 2, 0, 0, attempt, "Check it.")


def test_dataset_train_item_skips_a_corrupt_video(tmp_path):
    good = write_video(str(tmp_path / "good.mp4"), index_video(12))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    records = [VideoRecord(str(bad), 0), VideoRecord(good, 1)]
    clip = ClipConfig(num_frames=4, sampling_rate=1, jitter_scales=(48, 48), train_crop_size=32, backend="pyav",
                      num_retries=40)
    ds = VideoCSVDataset(records, "train", clip)
    item = ds[0]
    assert item["index"] == 1 and item["label"] == 1 and tuple(item["inputs"].shape) == (4, 32, 32, 3)
    assert item["failures"] and all(path == str(bad) for path, _ in item["failures"])
    assert os.path.basename(item["failures"][0][0]) == "bad.mp4"
