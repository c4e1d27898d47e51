import numpy as np
import pytest
import torch

from vidnl.config import load_config
from vidnl.data import sampling, transforms
from vidnl.data.datasets import video_csv
from vidnl.data.datasets.video_csv import VideoCSVDataset

from conftest import index_video, write_video


@pytest.mark.parametrize("n,k", [(100, 5), (64, 10), (15, 3)])
def test_test_clips_cover_first_and_last_frame(n, k):
    idx = sampling.test_clip_indices(n, 8, 2, k)
    assert idx.shape == (k, 8)
    assert idx.min() == 0 and idx.max() == n - 1
    assert idx[0, 0] == 0 and idx[-1, -1] == n - 1
    assert (np.diff(idx[:, 0]) >= 0).all()


def test_single_test_clip_is_centred():
    idx = sampling.test_clip_indices(101, 5, 10, 1)
    assert idx[0, 0] == 30 and idx[0, -1] == 70


def test_short_video_pad_and_loop():
    np.testing.assert_array_equal(sampling.test_clip_indices(5, 4, 2, 1, "pad")[0], [0, 2, 4, 4])
    np.testing.assert_array_equal(sampling.test_clip_indices(5, 4, 2, 1, "loop")[0], [0, 2, 4, 1])


def test_train_clip_is_within_video_and_random():
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(50):
        idx = sampling.train_clip_indices(60, 8, 4, rng)
        assert idx.max() <= 59 and (np.diff(idx) == 4).all()
        starts.add(idx[0])
    assert len(starts) > 10 and max(starts) <= 60 - 29


def test_three_crops_are_left_centre_right():
    video = torch.arange(40).repeat(2, 3, 20, 1).to(torch.uint8)  # T×C×H×W, value = column
    crops = transforms.uniform_crops(video, 20, 3)
    assert [int(c[0, 0, 0, 0]) for c in crops] == [0, 10, 20]


def test_test_item_decodes_once_and_gives_all_views(tmp_path, monkeypatch):
    n = 40
    path = write_video(str(tmp_path / "v.mp4"), index_video(n, 48, 64))
    (tmp_path / "test.csv").write_text(f"{path} 1\n")
    cfg = load_config(None, ["DATA.PATH_TO_DATA_DIR", str(tmp_path), "DATA.NUM_FRAMES", "4",
                             "DATA.SAMPLING_RATE", "3", "DATA.TEST_CROP_SIZE", "32", "TEST.NUM_ENSEMBLE_VIEWS",
                             "5", "TEST.NUM_SPATIAL_CROPS", "3", "DATA.MEAN", "[0, 0, 0]", "DATA.STD", "[1, 1, 1]"])
    calls = []
    real = video_csv.read_frames

    def counting(*a, **k):
        out = real(*a, **k)
        calls.append(out.indices)
        return out
    monkeypatch.setattr(video_csv, "read_frames", counting)
    ds = VideoCSVDataset.from_cfg(cfg, "test")
    item = ds[0]
    assert len(calls) == 1  # one decode for all 15 views
    assert item["inputs"].shape == (15, 4, 32, 32, 3) and item["inputs"].dtype == torch.uint8  # raw pixels
    item["inputs"] = ds.normalizer(item["inputs"])  # the model's layout, float (mean 0, std 1 here)
    assert item["inputs"].shape == (15, 3, 4, 32, 32)
    # view order: clip-major, 3 crops each; frame grey level encodes the frame index
    frame_ids = (item["inputs"][:, 0, :, 16, 16] * 255 / 4).round()
    assert frame_ids[0, 0] == 0 and frame_ids[-1, -1] == n - 1
    assert torch.equal(frame_ids[0], frame_ids[2])  # crops of one clip share frames
