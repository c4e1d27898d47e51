import os

import pytest
import torch
import torch.nn as nn

from vidnl.config import load_config
from vidnl.engine import checkpoint as ck
from vidnl.models import weights
from vidnl.models.weights import CheckpointError


class NotAllowed:
    """A class weights_only loading must refuse to unpickle."""

    def __init__(self):
        self.x = 1


def small_model(classes=3):
    return nn.Sequential(nn.Conv3d(3, 4, 1), nn.BatchNorm3d(4), nn.Flatten(), nn.LazyLinear(classes))


def test_save_and_load_round_trip_with_rng_and_optimizer(tmp_path):
    cfg = load_config()
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    torch.manual_seed(123)
    path = ck.save_checkpoint(str(tmp_path), 3, model, opt, cfg, best_metric=55.5)
    expected = torch.rand(5)
    ckpt = weights.load_checkpoint_file(path)
    assert ckpt["epoch"] == 3 and ckpt["best_metric"] == 55.5 and "SOLVER" in ckpt["cfg"]
    ck.set_rng_state(ckpt["rng"])
    assert torch.equal(torch.rand(5), expected)
    opt2 = torch.optim.SGD(nn.Linear(4, 2).parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(ckpt["optimizer_state"])
    assert torch.equal(opt2.state_dict()["state"][0]["momentum_buffer"], opt.state_dict()["state"][0]["momentum_buffer"])


def test_keep_last_checkpoints(tmp_path):
    cfg, model = load_config(), nn.Linear(2, 2)
    for e in range(1, 6):
        ck.save_checkpoint(str(tmp_path), e, model, None, cfg, None, keep=2)
    assert [os.path.basename(p) for p in ck.list_checkpoints(str(tmp_path))] == [
        "checkpoint_epoch_00004.pyth", "checkpoint_epoch_00005.pyth"]


def test_atomic_write_keeps_old_file_when_saving_fails(tmp_path, monkeypatch):
    path = str(tmp_path / "c.pyth")
    ck.atomic_torch_save({"a": torch.ones(2)}, path)

    def crash(obj, f):
        f.write(b"partial")
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        ck.atomic_torch_save({"a": torch.zeros(2)}, path)
    monkeypatch.undo()
    assert torch.equal(weights.load_checkpoint_file(path)["a"], torch.ones(2))
    assert os.listdir(tmp_path) == ["c.pyth"]


def test_unsafe_pickles_are_refused(tmp_path):
    path = str(tmp_path / "evil.pyth")
    torch.save({"model_state": {}, "extra": NotAllowed()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        weights.load_checkpoint_file(path)


def test_unreadable_newest_checkpoint_falls_back(tmp_path):
    cfg, model = load_config(), nn.Linear(2, 2)
    ck.save_checkpoint(str(tmp_path), 1, model, None, cfg, None)
    ck.save_checkpoint(str(tmp_path), 2, model, None, cfg, None)
    with open(ck.epoch_checkpoint_path(str(tmp_path), 2), "wb") as f:
        f.write(b"garbage")
    path, state = ck.find_resume_checkpoint(str(tmp_path))
    assert path.endswith("checkpoint_epoch_00001.pyth") and state["epoch"] == 1


def test_weight_loading_is_strict_unless_keys_are_named(tmp_path):
    src = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 3))
    state = {f"module.{k}": v for k, v in src.state_dict().items()}  # DataParallel-style prefix
    state["module.extra.weight"] = torch.ones(1)
    dst = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 5), nn.Linear(5, 5))
    state = weights.extract_model_state({"model_state": state})
    with pytest.raises(CheckpointError, match="1.weight"):
        weights.load_model_weights(dst, state)
    with pytest.raises(CheckpointError, match=r"2 model tensors are not in the file \(first: 2.bias, 2.weight\); "
                                              r"1 tensors of the file are not in the model \(first: extra.weight\)"):
        weights.load_model_weights(dst, state, allow_shape_mismatch=True)
    report = weights.load_model_weights(dst, state, allow_shape_mismatch=True, skip=["2.*", "extra.*"])
    assert report["shape_mismatch"] == ["1.bias", "1.weight"]
    assert report["skipped"] == ["2.bias", "2.weight", "extra.weight"]
    assert report["missing"] == [] and report["unexpected"] == []
    assert torch.equal(dst[0].weight, src[0].weight)


def test_engine_modules_still_offer_the_moved_names_to_user_code():
    """Weight loading lives in vidnl.models.weights and the samplers in vidnl.data.samplers; the
    engine modules re-export them (the same objects) for code written against the old paths."""
    from vidnl.data import samplers
    from vidnl.engine import distributed

    for name in ("load_weights", "load_checkpoint_file", "extract_model_state", "load_model_weights", "unwrap",
                 "CheckpointError", "load_caffe2_pickle"):
        assert getattr(ck, name) is getattr(weights, name), name
    assert distributed.GlobalBatchSampler is samplers.GlobalBatchSampler
    assert distributed.shard_indices is samplers.shard_indices
