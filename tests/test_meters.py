"""MultiViewMeter (vidnl/engine/meters.py) against a plain numpy reference of multi-view testing."""

import numpy as np
import pytest
import torch

from vidnl.engine.meters import MultiViewMeter


def _reference(logits, labels, views):
    """Per video: sum of the views' softmax and mean of the views' logits; clip top-1 over views."""
    out, start, clip_hits = [], 0, 0
    for label, n in zip(labels, views):
        chunk = logits[start:start + n]
        start += n
        e = np.exp(chunk - chunk.max(1, keepdims=True))
        out.append((e / e.sum(1, keepdims=True)).sum(0))
        clip_hits += int((chunk.argmax(1) == label).sum())
    mean = [logits[s:s + n].mean(0) for s, n in zip(np.cumsum([0] + views[:-1]), views)]
    return np.stack(out), np.stack(mean), clip_hits


def _data(seed=0, videos=7, classes=9):
    rng = np.random.default_rng(seed)
    views = [int(v) for v in rng.integers(1, 5, videos)]
    logits = rng.normal(size=(sum(views), classes)) * 3
    labels = rng.integers(0, classes, videos)
    return logits, labels, views


def test_aggregates_and_accuracies_match_the_reference():
    logits, labels, views = _data()
    meter = MultiViewMeter()
    meter.add(torch.tensor(logits), torch.tensor(labels), views, list(range(len(views))))
    ref_sum, ref_mean, clip_hits = _reference(logits, labels, views)
    np.testing.assert_allclose(meter.scores("sum_softmax").numpy(), ref_sum, rtol=1e-10)
    np.testing.assert_allclose(meter.scores("mean_logits").numpy(), ref_mean, rtol=1e-10)
    assert meter.num_clips == sum(views) and meter.clip_hits[1] == clip_hits
    assert meter.clip_accuracy(1) == pytest.approx(100.0 * clip_hits / sum(views))
    for method, ref in (("sum_softmax", ref_sum), ("mean_logits", ref_mean)):
        assert meter.video_accuracy(method, 1) == pytest.approx(100.0 * np.mean(ref.argmax(1) == labels))
        top5 = np.argsort(-ref, 1)[:, :5]
        assert meter.video_accuracy(method, 5) == pytest.approx(100.0 * np.mean((top5 == labels[:, None]).any(1)))


def test_shards_merge_into_the_whole_in_dataset_order():
    logits, labels, views = _data(1, videos=6)
    whole = MultiViewMeter()
    whole.add(torch.tensor(logits), torch.tensor(labels), views, list(range(6)))
    # two "processes": even and odd videos, each in its own order
    bounds = np.cumsum([0] + views)
    shards = []
    for part in ([4, 0, 2], [5, 1, 3]):
        m = MultiViewMeter()
        rows = np.concatenate([logits[bounds[i]:bounds[i + 1]] for i in part])
        m.add(torch.tensor(rows), torch.tensor(labels[part]), [views[i] for i in part], part)
        shards.append(m)
    merged = MultiViewMeter.merged(shards)
    assert [v["index"] for v in merged.videos] == list(range(6))
    assert merged.clip_hits == whole.clip_hits and merged.num_clips == whole.num_clips
    assert torch.allclose(merged.scores("sum_softmax"), whole.scores("sum_softmax"))


def test_unknown_ensemble_method_is_refused():
    with pytest.raises(ValueError, match="sum_softmax"):
        MultiViewMeter().scores("max")
