"""CMC / mAP (hand-worked example and a brute-force per-query reference), distances, losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidnl.engine.losses import batch_hard_triplet_loss, pairwise_euclidean, reid_loss
from vidnl.engine.reid_metrics import average_results, distance_matrix, evaluate_ranking


def brute_force(dist, q_pids, g_pids, q_cams, g_cams, junk=(), max_rank=20):
    """The protocol written out one query at a time, straight from its definition."""
    aps, firsts, skipped = [], [], []
    for i in range(len(q_pids)):
        keep = [j for j in range(len(g_pids)) if not (g_pids[j] == q_pids[i] and g_cams[j] == q_cams[i])
                and g_pids[j] not in junk]
        ranked = sorted(keep, key=lambda j: (dist[i][j], j))
        good = [r for r, j in enumerate(ranked, start=1) if g_pids[j] == q_pids[i]]
        if not good:
            skipped.append(i)
            continue
        aps.append(sum(n / r for n, r in enumerate(good, start=1)) / len(good))
        firsts.append(good[0])
    cmc = [sum(f <= k for f in firsts) / len(firsts) for k in range(1, max_rank + 1)]
    return np.array(aps), np.array(cmc), skipped


def test_hand_worked_example():
    # q0: pid 1 cam 0 -> valid ranking g0 (x), g2 (match), g4 (x), g5 (match): first match at 2,
    #     AP = (1/2 + 2/4) / 2 = 0.5 (g1: same pid and camera, g3: junk -1, both removed)
    # q1: pid 2 cam 0 -> g0 first: rank 1, AP = 1
    # q2: pid 4 has no gallery item; q3: pid 3 cam 1 only matches g4 of the same camera: skipped
    g_pids, g_cams = [2, 1, 1, -1, 3, 1], [1, 0, 1, 1, 1, 2]
    q_pids, q_cams = [1, 2, 4, 3], [0, 0, 0, 1]
    dist = np.array([[0.10, 0.20, 0.30, 0.05, 0.40, 0.50],
                     [0.10, 0.90, 0.80, 0.70, 0.60, 0.50],
                     [0.10, 0.20, 0.30, 0.40, 0.50, 0.60],
                     [0.50, 0.40, 0.30, 0.20, 0.10, 0.05]])
    r = evaluate_ranking(dist, q_pids, g_pids, q_cams, g_cams, ranks=(1, 2, 5), junk_pids=[-1])
    assert r["num_queries"] == 2 and r["num_skipped_queries"] == 2 and r["skipped_queries"] == [2, 3]
    assert r["ap"].tolist() == [0.5, 1.0]
    assert r["mAP"] == pytest.approx(75.0) and r["rank1"] == 50.0 and r["rank2"] == 100.0 and r["rank5"] == 100.0
    # junk counted as a non-match: q0's valid list is g3 (x), g0 (x), g2 (match), g4, g5 (match)
    r2 = evaluate_ranking(dist, q_pids, g_pids, q_cams, g_cams, ranks=(1, 2, 5), junk_pids=[])
    assert r2["ap"][0] == pytest.approx((1 / 3 + 2 / 5) / 2) and r2["rank2"] == 50.0


@pytest.mark.parametrize("method", ["count", "sort"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_on_random_data(seed, method):
    rng = np.random.default_rng(seed)
    nq, ng = 60, 400
    q_pids, g_pids = rng.integers(0, 25, nq), rng.integers(-1, 25, ng)  # -1: junk
    q_cams, g_cams = rng.integers(0, 4, nq), rng.integers(0, 4, ng)
    qf, gf = torch.randn(nq, 16, dtype=torch.float64), torch.randn(ng, 16, dtype=torch.float64)
    dist = distance_matrix(qf, gf, "euclidean", chunk=7)
    r = evaluate_ranking(dist, q_pids, g_pids, q_cams, g_cams, junk_pids=[-1], chunk=9, method=method)
    ap, cmc, skipped = brute_force(dist.numpy(), q_pids, g_pids, q_cams, g_cams, junk=(-1,))
    assert r["skipped_queries"] == skipped and r["num_queries"] == nq - len(skipped) > 40
    np.testing.assert_allclose(r["ap"], ap, rtol=0, atol=1e-9)
    np.testing.assert_allclose(r["cmc"], cmc, rtol=0, atol=1e-9)
    assert r["mAP"] == pytest.approx(100 * ap.mean(), abs=1e-9) and r["rank1"] == pytest.approx(100 * cmc[0])


@pytest.mark.parametrize("method", ["count", "sort"])
def test_ties_keep_gallery_order(method):
    # integer distances: many matches tie with non-matches; the earlier gallery item ranks first
    rng = np.random.default_rng(5)
    nq, ng = 40, 150
    q_pids, g_pids = rng.integers(0, 10, nq), rng.integers(-1, 10, ng)
    q_cams, g_cams = rng.integers(0, 3, nq), rng.integers(0, 3, ng)
    dist = torch.from_numpy(rng.integers(0, 6, (nq, ng)).astype(np.float64))
    r = evaluate_ranking(dist, q_pids, g_pids, q_cams, g_cams, junk_pids=[-1], chunk=16, method=method)
    ap, cmc, skipped = brute_force(dist.numpy(), q_pids, g_pids, q_cams, g_cams, junk=(-1,))
    assert r["skipped_queries"] == skipped
    np.testing.assert_allclose(r["ap"], ap, rtol=0, atol=1e-9)
    np.testing.assert_allclose(r["cmc"], cmc, rtol=0, atol=1e-9)
    # a tie decided by gallery order: match g1 and non-match g0 at the same distance -> rank 2
    one = evaluate_ranking(np.array([[1.0, 1.0]]), [3], [4, 3], [0], [1, 1], ranks=(1, 2), method=method)
    assert (one["rank1"], one["rank2"], one["mAP"]) == (0.0, 100.0, 50.0)


def test_queries_skipped_when_only_same_camera_matches():
    # q0 (pid 5, cam 0) only has g0 of its own camera: skipped; q1 (pid 6, cam 0) ranks g0 (pid 5)
    # before its match g1 (pid 6, cam 1): first match at rank 2, AP 1/2
    dist = np.array([[0.1, 0.2], [0.1, 0.2]])
    r = evaluate_ranking(dist, [5, 6], [5, 6], [0, 0], [0, 1], ranks=(1, 2))
    assert r["skipped_queries"] == [0] and r["num_queries"] == 1
    assert (r["rank1"], r["rank2"], r["mAP"]) == (0.0, 100.0, 50.0)


def test_distance_matrix():
    torch.manual_seed(0)
    q, g = torch.randn(11, 5, dtype=torch.float64), torch.randn(13, 5, dtype=torch.float64)
    torch.testing.assert_close(distance_matrix(q, g, "euclidean", chunk=4), torch.cdist(q, g), rtol=0, atol=1e-10)
    cos = 1 - F.normalize(q, dim=1) @ F.normalize(g, dim=1).t()
    torch.testing.assert_close(distance_matrix(q, g, "cosine", chunk=3), cos, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="REID.DISTANCE"):
        distance_matrix(q, g, "manhattan")


def test_average_over_splits():
    res = [{"mAP": 80.0, "rank1": 70.0, "num_queries": 10, "num_skipped_queries": 0},
           {"mAP": 90.0, "rank1": 60.0, "num_queries": 10, "num_skipped_queries": 1}]
    avg = average_results(res, ranks=(1,))
    assert (avg["mAP"], avg["rank1"], avg["num_splits"], avg["num_queries"]) == (85.0, 65.0, 2, 20)
    assert avg["mAP_std"] == 5.0 and avg["num_skipped_queries"] == 1


# ------------------------------------------------------------------------------------------------
# Losses
# ------------------------------------------------------------------------------------------------
def brute_triplet(x, y, margin):
    terms = []
    for a in range(len(y)):
        pos = [float(torch.dist(x[a], x[p])) for p in range(len(y)) if p != a and y[p] == y[a]]
        neg = [float(torch.dist(x[a], x[n])) for n in range(len(y)) if y[n] != y[a]]
        if pos and neg:
            terms.append(max(0.0, max(pos) - min(neg) + margin))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("margin", [0.0, 0.3, 5.0])
def test_batch_hard_triplet_equals_brute_force(margin):
    torch.manual_seed(1)
    x = torch.randn(13, 6, dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3])  # identity 3 has no positive: left out
    loss = batch_hard_triplet_loss(x, y, margin)
    assert float(loss) == pytest.approx(brute_triplet(x, y, margin), abs=1e-6)
    xg = x.float().requires_grad_()
    batch_hard_triplet_loss(xg, y, margin).backward()
    assert torch.isfinite(xg.grad).all()
    assert float(batch_hard_triplet_loss(x, torch.zeros(13, dtype=torch.long), margin)) == 0.0  # no negatives


def test_pairwise_and_combined_loss():
    torch.manual_seed(2)
    x = torch.randn(8, 4)
    torch.testing.assert_close(pairwise_euclidean(x), torch.cdist(x, x), atol=1e-5, rtol=0)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    logits = torch.randn(8, 5)
    total, parts = reid_loss(logits, x, y, ce_weight=0.5, triplet_weight=2.0, margin=0.3, label_smoothing=0.1)
    ce = F.cross_entropy(logits, y, label_smoothing=0.1)
    assert parts["ce"] == pytest.approx(float(ce), abs=1e-6)
    assert parts["triplet"] == pytest.approx(brute_triplet(x.double(), y, 0.3), abs=1e-5)
    assert float(total) == pytest.approx(0.5 * parts["ce"] + 2.0 * parts["triplet"], abs=1e-5)
