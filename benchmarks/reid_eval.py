#!/usr/bin/env python
"""Re-ID evaluation speed: vidnl's vectorised CMC/mAP vs a straightforward per-query loop.

Random 2048-d features for 2,000 queries and 10,000 gallery tracklets (625 identities seen by 6
cameras, features = identity centre + noise, so that the metrics are not trivial), one Euclidean
distance matrix (vidnl.engine.reid_metrics.distance_matrix, timed separately), then CMC ranks
1/5/10/20 and mAP with the same-identity-same-camera exclusion and junk identity -1:

* ``loop``: for each query, numpy argsort of its row, masks, cumulative sums (the usual
  per-query Python loop of re-ID code bases);
* ``vidnl``: ``evaluate_ranking``: blocks of queries scored at once with torch; the true matches
  are ranked by counting (topk + searchsorted + one histogram per query, no sort of the gallery);
  ``vidnl-sort`` is the same with a stable sort of every row (its fallback for tied distances).

Both must give the same AP for every query (checked to 1e-9) before the times are reported. The
median of ``--repeat`` runs is printed side by side with the ratio, and written to JSON.

    python benchmarks/reid_eval.py                      # CPU, about a minute on 2 cores
    python benchmarks/reid_eval.py --device cuda        # vidnl's metric on the GPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from vidnl.engine.reid_metrics import distance_matrix, evaluate_ranking  # noqa: E402


def loop_cmc_map(dist: np.ndarray, q_pids, g_pids, q_cams, g_cams, junk=(-1,), max_rank: int = 20):
    """Per-query reference: returns (AP per evaluated query, CMC at 1..max_rank)."""
    aps, cmcs = [], []
    junk_g = np.isin(g_pids, junk)
    for i in range(dist.shape[0]):
        order = np.argsort(dist[i], kind="stable")
        keep = ~(((g_pids[order] == q_pids[i]) & (g_cams[order] == q_cams[i])) | junk_g[order])
        match = (g_pids[order] == q_pids[i])[keep]
        if not match.any():
            continue
        cmc = match.cumsum()
        cmc[cmc > 1] = 1
        cmcs.append(cmc[:max_rank])
        hits = match.cumsum()
        ranks = np.arange(1, len(match) + 1)
        aps.append(float((hits / ranks)[match].sum() / match.sum()))
    return np.array(aps), np.mean(np.stack(cmcs), axis=0)


def timed(fn, repeat: int, sync=lambda: None):
    times, out = [], None
    for _ in range(repeat):
        sync()
        t = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times, out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument("--gallery", type=int, default=10000)
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--ids", type=int, default=625)
    p.add_argument("--cams", type=int, default=6)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu", help="device of vidnl's distance and metric (cpu or cuda)")
    p.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "results", "reid_eval.json"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((args.ids, args.dim)).astype(np.float32)
    q_pids = rng.integers(0, args.ids, args.queries)
    g_pids = rng.integers(-1, args.ids, args.gallery)  # -1: junk
    q_cams, g_cams = rng.integers(0, args.cams, args.queries), rng.integers(0, args.cams, args.gallery)
    noise = 3.0  # per-dimension noise sd vs unit-variance identity centres: a non-trivial ranking
    qf = torch.from_numpy(centres[q_pids] + noise * rng.standard_normal((args.queries, args.dim), dtype=np.float32))
    gf = torch.from_numpy(centres[np.maximum(g_pids, 0)]
                          + noise * rng.standard_normal((args.gallery, args.dim), dtype=np.float32))
    qf, gf = qf.to(dev), gf.to(dev)

    t_dist, _, dist = timed(lambda: distance_matrix(qf, gf, "euclidean"), args.repeat, sync)
    dist_np = dist.cpu().numpy()
    t_vec, vec_times, res = timed(lambda: evaluate_ranking(dist, q_pids, g_pids, q_cams, g_cams, junk_pids=[-1]),
                                  args.repeat, sync)
    t_sort, sort_times, res_sort = timed(lambda: evaluate_ranking(dist, q_pids, g_pids, q_cams, g_cams,
                                                                  junk_pids=[-1], method="sort"), args.repeat, sync)
    t_loop, loop_times, (ap_loop, cmc_loop) = timed(
        lambda: loop_cmc_map(dist_np, q_pids, g_pids, q_cams, g_cams), args.repeat)

    max_ap_diff = float(max(np.abs(res["ap"] - ap_loop).max(), np.abs(res_sort["ap"] - ap_loop).max()))
    max_cmc_diff = float(max(np.abs(res["cmc"] - cmc_loop).max(), np.abs(res_sort["cmc"] - cmc_loop).max()))
    if max_ap_diff > 1e-9 or max_cmc_diff > 1e-9:
        print(f"MISMATCH: max AP difference {max_ap_diff}, max CMC difference {max_cmc_diff}")
        return 1

    shape = f"{args.queries} queries x {args.gallery} gallery, {args.dim}-d"
    print(f"re-ID evaluation, {shape} ({res['num_queries']} queries with a true match; mAP {res['mAP']:.2f}%, "
          f"rank-1 {res['rank1']:.2f}%), median of {args.repeat}, torch threads {torch.get_num_threads()}")
    print(f"  distance matrix (vidnl, {args.device}):        {t_dist:8.3f} s")
    print(f"  CMC + mAP  per-query loop (numpy)   vidnl ({args.device})   ratio   vidnl-sort   ratio")
    print(f"             {t_loop:10.3f} s           {t_vec:8.3f} s     {t_loop / t_vec:5.1f}x  {t_sort:8.3f} s  "
          f"{t_loop / t_sort:5.1f}x")
    out = {"benchmark": "reid_eval", "queries": args.queries, "gallery": args.gallery, "dim": args.dim,
           "identities": args.ids, "cameras": args.cams, "device": args.device, "repeat": args.repeat,
           "torch_threads": torch.get_num_threads(), "distance_s": t_dist, "loop_s": t_loop, "vidnl_s": t_vec,
           "loop_times_s": loop_times, "vidnl_times_s": vec_times, "speedup": t_loop / t_vec,
           "vidnl_sort_s": t_sort, "vidnl_sort_times_s": sort_times, "speedup_sort": t_loop / t_sort,
           "mAP": res["mAP"], "rank1": res["rank1"], "evaluated_queries": res["num_queries"],
           "max_ap_difference": max_ap_diff, "max_cmc_difference": max_cmc_diff,
           "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                       "torch": torch.__version__,
                       "gpu": torch.cuda.get_device_name(0) if dev.type == "cuda" else None}}
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1)
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
