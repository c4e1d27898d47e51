"""Re-ID evaluation: query-gallery distances, CMC and mAP, vectorised over queries.

Protocol (as MARS's evaluation_mars.m, Market-1501 and Gao & Nevatia's code): for a query,
gallery items of the same identity *and* the same camera are removed from its ranking, and so
are items whose identity is a junk id; the remaining items of its identity are its true matches.
A query without any true match is skipped (and counted). CMC(k) = fraction of queries whose first
true match is within the top k; AP = mean over the true matches of the precision at their rank
(non-interpolated); mAP = mean AP over the evaluated queries.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

DISTANCES = ("euclidean", "cosine")


def distance_matrix(qf: torch.Tensor, gf: torch.Tensor, metric: str = "euclidean", chunk: int = 2048) -> torch.Tensor:
    """Q×D query and G×D gallery features -> Q×G distances, ``chunk`` queries at a time.

    ``euclidean``: ||q - g||; ``cosine``: 1 - cos(q, g).
    """
    if metric not in DISTANCES:
        raise ValueError(f"REID.DISTANCE must be one of {DISTANCES}, got {metric!r}")
    qf, gf = torch.as_tensor(qf), torch.as_tensor(gf)
    if metric == "cosine":
        qf, gf = F.normalize(qf, dim=1), F.normalize(gf, dim=1)
    else:
        g_sq = gf.pow(2).sum(1)
    out = torch.empty(qf.shape[0], gf.shape[0], dtype=qf.dtype, device=qf.device)
    for s in range(0, qf.shape[0], chunk):
        q = qf[s:s + chunk]
        if metric == "cosine":
            out[s:s + chunk] = 1.0 - q @ gf.t()
        else:
            d2 = q.pow(2).sum(1, keepdim=True) + g_sq[None, :] - 2.0 * (q @ gf.t())
            out[s:s + chunk] = d2.clamp_min_(0).sqrt_()
    return out


def _ranks_by_sorting(d: torch.Tensor, match: torch.Tensor, valid: torch.Tensor):
    """Per query: rank of the first true match and AP, from a stable sort of each row (ties in
    gallery order). d, match, valid: n×G -> (first n, ap n)."""
    order = torch.argsort(d, dim=1, stable=True)
    match_s, valid_s = match.gather(1, order), valid.gather(1, order)
    pos = torch.cumsum(valid_s, 1)  # rank of each valid item among the valid ones
    hits = torch.cumsum(match_s, 1)
    num_rel = hits[:, -1]
    prec = torch.where(match_s, hits.double() / pos.clamp_min(1).double(), torch.zeros((), dtype=torch.float64,
                                                                                        device=d.device))
    ap = prec.sum(1) / num_rel.clamp_min(1).double()
    first = torch.where(match_s, pos, torch.full_like(pos, d.shape[1] + 1)).amin(1)
    return first, ap


def _ranks_by_counting(d: torch.Tensor, match: torch.Tensor, nonmatch: torch.Tensor, num_rel: torch.Tensor):
    """The same without sorting the gallery: the m closest true matches of each query are taken
    with topk; a gallery item's position among them (searchsorted) says how many matches it
    precedes, so one histogram per query gives the number of valid non-matches ahead of its k-th
    match, whose rank is then k + that number. Rows where a non-match ties with a match (their
    order would depend on gallery order) are flagged for :func:`_ranks_by_sorting`.
    -> (first n, ap n, ties n)."""
    n, m = d.shape[0], int(num_rel.max())
    dev = d.device
    s = torch.topk(torch.where(match, d, torch.full((), float("inf"), dtype=d.dtype, device=dev)), m, dim=1,
                   largest=False, sorted=True).values  # n×m ascending, +inf past a query's matches
    d = d.contiguous()
    right = torch.searchsorted(s, d, right=True)  # matches at distance <= d_g
    ties = ((right != torch.searchsorted(s, d, right=False)) & nonmatch).any(1)
    hist = torch.zeros(n, m + 1, dtype=torch.int64, device=dev).scatter_add_(1, right, nonmatch.long())
    k = torch.arange(1, m + 1, device=dev)
    rank = hist.cumsum(1)[:, :m] + k  # rank of the k-th closest match among the valid items
    real = k[None, :] <= num_rel[:, None]
    ap = torch.where(real, k.double() / rank.double(), torch.zeros((), dtype=torch.float64, device=dev)).sum(1)
    return rank[:, 0], ap / num_rel.clamp_min(1).double(), ties


def evaluate_ranking(dist, q_pids, g_pids, q_camids, g_camids, *, ranks: Sequence[int] = (1, 5, 10, 20),
                     junk_pids: Sequence[int] = (), chunk: int = 256, method: str = "count") -> dict:
    """CMC and mAP from a Q×G distance matrix (smaller = more similar; ties keep gallery order).

    Returns {"mAP", "rank<k>" (percent), "cmc" (fractions at ranks 1..max(ranks)), "ap"
    (per evaluated query, float64 numpy), "num_queries" (evaluated), "num_skipped_queries",
    "skipped_queries" (query indices without a true match)}. Work is done ``chunk`` queries at a
    time, vectorised within a chunk on the device of ``dist``. ``method`` "count" ranks the true
    matches by counting (topk + searchsorted, no sort of the gallery; rows with match/non-match
    ties fall back to sorting), "sort" sorts every row; both give the same numbers.
    """
    if method not in ("count", "sort"):
        raise ValueError(f"method must be 'count' or 'sort', got {method!r}")
    dist = torch.as_tensor(dist)
    dev = dist.device

    def ids(v):
        return torch.as_tensor(np.asarray(v), dtype=torch.long, device=dev).reshape(-1)

    qp, gp, qc, gc = ids(q_pids), ids(g_pids), ids(q_camids), ids(g_camids)
    nq, ng = dist.shape
    if (len(qp), len(qc)) != (nq, nq) or (len(gp), len(gc)) != (ng, ng):
        raise ValueError(f"distance matrix {tuple(dist.shape)} does not match {len(qp)} query / {len(gp)} gallery "
                         f"identities and {len(qc)} / {len(gc)} cameras")
    max_rank = max(ranks)
    junk_g = torch.isin(gp, ids(list(junk_pids))) if len(junk_pids) else torch.zeros(ng, dtype=torch.bool, device=dev)
    first = np.zeros(nq, np.int64)
    ap = np.zeros(nq)
    has = np.zeros(nq, bool)
    for s in range(0, nq, chunk):
        d = dist[s:s + chunk]
        same_id = gp[None, :] == qp[s:s + chunk, None]
        valid = ~((same_id & (gc[None, :] == qc[s:s + chunk, None])) | junk_g[None, :])
        match = same_id & valid
        num_rel = match.sum(1)
        ok = num_rel > 0
        if not ok.any():
            continue
        if method == "count":
            f, a, ties = _ranks_by_counting(d, match, valid & ~same_id, num_rel)
            if ties.any():
                f[ties], a[ties] = _ranks_by_sorting(d[ties], match[ties], valid[ties])
        else:
            f, a = _ranks_by_sorting(d, match, valid)
        first[s:s + chunk], ap[s:s + chunk] = f.cpu().numpy(), a.cpu().numpy()
        has[s:s + chunk] = ok.cpu().numpy()
    n_eval = int(has.sum())
    cmc = np.array([(first[has] <= k).mean() if n_eval else 0.0 for k in range(1, max_rank + 1)])
    out = {"mAP": 100.0 * float(ap[has].mean()) if n_eval else 0.0}
    for k in ranks:
        out[f"rank{k}"] = 100.0 * float(cmc[k - 1])
    out.update({"cmc": cmc, "ap": ap[has], "num_queries": n_eval, "num_skipped_queries": int(nq - n_eval),
                "skipped_queries": np.flatnonzero(~has).tolist()})
    return out


def average_results(results: Sequence[dict], ranks: Sequence[int] = (1, 5, 10, 20)) -> dict:
    """Mean of mAP and rank-k over splits (iLIDS-VID / PRID protocol), plus their spread."""
    keys = ["mAP"] + [f"rank{k}" for k in ranks]
    out = {k: float(np.mean([r[k] for r in results])) for k in keys}
    out.update({f"{k}_std": float(np.std([r[k] for r in results])) for k in keys})
    out["num_splits"] = len(results)
    out["num_queries"] = int(sum(r["num_queries"] for r in results))
    out["num_skipped_queries"] = int(sum(r["num_skipped_queries"] for r in results))
    return out
