#!/usr/bin/env python
"""Nonlocal blocks, side by side in one run: time and peak memory of the fast and dense forms.

Three tables, at the I3D-R50 sizes (batch 2 by default): res2 8×56×56 (C=256→Cs=128), res3
8×28×28 (512→256), res4 8×14×14 and 4×14×14 (1024→512):

1. ``snl``: the SNL aggregation A·g (relu-dot kernel, symmetric normalisation), dense (N×N
   matrix) vs linear (associativity) vs ``auto`` (vidnl's choice per call); forward and
   forward+backward.
2. ``softmax``: the embedded-Gaussian NL aggregation, naive (explicit N×N matmul + softmax, as
   PySlowFast computes it) vs vidnl's ``scaled_dot_product_attention`` form; forward+backward.
3. ``blocks``: every block type (whole module incl. projections), fast vs dense, forward.

Every measurement runs in a fresh process, so peak memory is that process's peak resident set
(CPU) above its baseline, or ``torch.cuda.max_memory_allocated`` on a GPU. A dense form whose
N×N matrices would exceed ``--mem-cap-gb`` is not run and is marked so (with the batch-1 figure
when that fits, reported per clip). Ratios are printed; absolute times vary between machines.

    python benchmarks/nonlocal_blocks.py                 # everything (about 8 minutes on 2 cores)
    python benchmarks/nonlocal_blocks.py --tables snl softmax --sizes res3 res4
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SIZES = {  # name: (C, Cs, T, H, W)
    "res2": (256, 128, 8, 56, 56),
    "res3": (512, 256, 8, 28, 28),
    "res4": (1024, 512, 8, 14, 14),
    "res4_t4": (1024, 512, 4, 14, 14),
    "tiny": (16, 8, 2, 6, 6),  # smoke tests only
}
BLOCK_TYPES = ["nl", "snl", "gsnl", "ns", "a2", "cgnl", "cc"]
# Live N×N float32 matrices per batch item (forward, forward+backward) of the dense forms.
DENSE_COPIES = {"snl": (3, 6), "softmax": (2, 4), "nl": (3, 5), "gsnl": (3, 6), "ns": (3, 5), "a2": (2, 4),
                "cc": (3, 5), "cgnl": (1, 2)}


def _measure(job: dict, queue) -> None:
    """Child process: build inputs, then time ``repeat`` runs after a warm-up; report peak memory."""
    import torch

    from vidnl.nonlocal_blocks import build_nonlocal_block
    from vidnl.nonlocal_blocks import functional as NF

    if job["threads"]:
        torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    dev = torch.device(job["device"])
    c, cs, t, h, w = SIZES[job["size"]]
    b, n = job["batch"], t * h * w
    grad = job["mode"] == "fwd+bwd"
    if job["table"] in ("snl", "softmax"):
        inputs = [torch.randn(b, n, cs, device=dev, requires_grad=grad) for _ in range(3)]
        impl = job["impl"]
        if job["table"] == "snl":
            if impl == "auto":
                impl = "linear" if NF.snl_fast_is_cheaper(n, n, cs) else "dense"
            fn = NF.snl_fast if impl == "linear" else NF.snl_dense
        else:
            fn = NF.embedded_gaussian_fast if impl == "sdpa" else NF.embedded_gaussian_dense

        def run():
            out = fn(*inputs)
            if grad:
                out.sum().backward()
    else:
        block = build_nonlocal_block(job["block"], c, dim_inner=cs, implementation=job["impl"]).to(dev).eval()
        x = torch.randn(b, c, t, h, w, device=dev)

        def run():
            with torch.no_grad():
                block(x)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    run()
    sync()
    times = []
    for _ in range(job["repeat"]):
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base_cuda
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) * 1024
    queue.put({"time_s": statistics.median(times), "peak_mb": peak / 2**20})


def measure(job: dict, timeout: float) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_measure, args=(job, q))
    p.start()
    p.join(timeout)
    if p.is_alive():
        p.kill()
        p.join()
        return {"skipped": f"over the {timeout:.0f} s cap"}
    if p.exitcode != 0:
        return {"skipped": f"failed (exit code {p.exitcode}, probably out of memory)"}
    return q.get()


def dense_gb(table: str, size: str, batch: int, mode: str) -> float:
    c, cs, t, h, w = SIZES[size]
    n = t * h * w
    copies = DENSE_COPIES[table][1 if mode == "fwd+bwd" else 0]
    if table == "cgnl":
        return batch * (n * cs) ** 2 * 4 / 1e9
    return batch * n * n * 4 * copies / 1e9


def run_pair(rows, table, size, mode, impls, dense_impl, a, extra=None):
    """Measure ``impls`` (dense one last) for one configuration and print a row with ratios."""
    res = {}
    for impl in impls:
        job = {"table": table, "size": size, "mode": mode, "impl": impl, "batch": a.batch, "repeat": a.repeat,
               "threads": a.threads, "device": a.device, **(extra or {})}
        note = ""
        if impl == dense_impl:
            need = dense_gb(extra["block"] if extra else table, size, a.batch, mode)
            if need > a.mem_cap_gb:
                if dense_gb(extra["block"] if extra else table, size, 1, mode) <= a.mem_cap_gb and not extra:
                    job["batch"] = 1
                    note = f"batch 1 (batch {a.batch} needs ~{need:.0f} GB); time x{a.batch} per batch"
                else:
                    res[impl] = {"skipped": f"not run: needs ~{need:.0f} GB"}
                    continue
        r = measure(job, a.time_cap)
        if note and "time_s" in r:
            r["time_s"] *= a.batch / job["batch"]
            r["peak_mb"] *= a.batch / job["batch"]
            r["note"] = note
        res[impl] = r
    row = {"table": table, "size": size, "mode": mode, "batch": a.batch, **(extra or {}), "results": res}
    dense = res.get(dense_impl, {})
    for impl in impls:
        if impl != dense_impl and "time_s" in res[impl] and "time_s" in dense:
            row[f"speedup_{impl}_vs_{dense_impl}"] = dense["time_s"] / res[impl]["time_s"]
            row[f"memory_ratio_{impl}_vs_{dense_impl}"] = res[impl]["peak_mb"] / max(dense["peak_mb"], 1e-3)
    rows.append(row)
    label = extra["block"] if extra else table
    cells = []
    for impl in impls:
        r = res[impl]
        cells.append(f"{impl} {r['time_s']:8.3f} s {r['peak_mb']:8.0f} MB" if "time_s" in r else f"{impl} {r['skipped']}")
    ratios = "  ".join(f"{k.split('_vs_')[0].replace('speedup_', '')}: {v:6.1f}x faster"
                       for k, v in row.items() if k.startswith("speedup_"))
    mems = "  ".join(f"mem {v:6.3f}x" for k, v in row.items() if k.startswith("memory_ratio_"))
    print(f"{label:7} {size:8} {mode:8} | " + " | ".join(cells) + f" || {ratios} {mems}", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tables", nargs="+", default=["snl", "softmax", "blocks"], choices=["snl", "softmax", "blocks"])
    p.add_argument("--sizes", nargs="+", default=["res4_t4", "res4", "res3", "res2"], choices=list(SIZES))
    p.add_argument("--types", nargs="+", default=BLOCK_TYPES, choices=BLOCK_TYPES)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--mem-cap-gb", type=float, default=6.0, help="dense forms needing more are not run")
    p.add_argument("--time-cap", type=float, default=240.0, help="seconds per measurement")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "results", "nonlocal_blocks.json"))
    a = p.parse_args(argv)
    print(f"# nonlocal blocks on {a.device} ({platform.machine()}, {os.cpu_count()} cores), batch {a.batch}, "
          f"float32, median of {a.repeat}; memory = peak above baseline")
    rows: list[dict] = []
    if "snl" in a.tables:
        print("## SNL aggregation A·g: linear (associativity) and auto vs dense N×N")
        for size in a.sizes:
            for mode in ("fwd", "fwd+bwd"):
                run_pair(rows, "snl", size, mode, ["linear", "auto", "dense"], "dense", a)
    if "softmax" in a.tables:
        print("## embedded-Gaussian NL aggregation: vidnl's SDPA form vs naive matmul + softmax")
        for size in a.sizes:
            run_pair(rows, "softmax", size, "fwd+bwd", ["sdpa", "naive"], "naive", a)
    if "blocks" in a.tables:
        print("## whole blocks (projections included), forward: fast vs dense")
        for size in a.sizes:
            for block in a.types:
                run_pair(rows, "blocks", size, "fwd", ["fast", "dense"], "dense", a, extra={"block": block})
    os.makedirs(os.path.dirname(a.json), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump({"machine": platform.platform(), "device": a.device, "cores": os.cpu_count(), "rows": rows}, f,
                  indent=1)
    print(f"wrote {a.json}")
    return 0


def _cuda() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return False


if __name__ == "__main__":
    sys.exit(main())
