#!/usr/bin/env python
"""Nonlocal blocks, side by side in one run: time and peak memory of the fast and dense forms.

Three tables, at the I3D-R50 sizes (batch 2 by default): res2 8×56×56 (C=256→Cs=128), res3
8×28×28 (512→256), res4 8×14×14 and 4×14×14 (1024→512):

1. ``snl``: the SNL aggregation A·g (relu-dot kernel, symmetric normalisation), dense (N×N
   matrix) vs linear (associativity) vs ``auto`` (vidnl's choice per call); forward and
   forward+backward.
   ``crossover`` (not in the default set): the same forward+backward on one graph of N nodes
   at Cs = 256 and 512, where dense needs r = 1 … 12 times the linear form's multiply-adds,
   to place ``implementation: auto``'s thresholds (``FACTORED_MIN_DENSE_MADDS``) per device.
2. ``softmax``: the embedded-Gaussian NL aggregation, naive (explicit N×N matmul + softmax, as
   PySlowFast computes it) vs vidnl's form (``embedded_gaussian_fast``: per call, the explicit
   scores when they are few (batch·N·M ≤ 6 Mi), else ``scaled_dot_product_attention``; the form taken
   is printed); forward+backward.
3. ``blocks``: every block type (whole module incl. projections), fast vs dense, forward.

Every measurement runs in a fresh process, so peak memory is that process's peak resident set
(CPU) above its baseline, or ``torch.cuda.max_memory_allocated`` on a GPU. Forward+backward
runs set the inputs' ``.grad`` to None before every run, as a training loop does each step, so
no gradient of the previous run is held (or accumulated into) during the next. Times are the
median of at least ``--repeat`` runs after one warm-up, repeated until ``--min-time`` seconds
have been timed (so fast configurations get many runs), but not past half the ``--time-cap``.
For the SNL table the time of the form ``auto`` chooses is printed relative to the better of
linear and dense (flagged when above 1.10), and ``auto``'s own measured time likewise. A dense form whose
N×N matrices would exceed ``--mem-cap-gb`` is not run and is marked so (with the batch-1 figure
when that fits, reported per clip). Ratios are printed; absolute times vary between machines.

    python benchmarks/nonlocal_blocks.py                 # everything (about 5 minutes on 2 cores)
    python benchmarks/nonlocal_blocks.py --tables snl softmax --sizes res3 res4
    python benchmarks/nonlocal_blocks.py --tables crossover --batch 2
    python benchmarks/nonlocal_blocks.py --tables blocks --types nl ns --merge   # update those rows
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
import warnings
from datetime import date

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from vidnl.nonlocal_blocks import list_blocks  # noqa: E402

SIZES = {  # name: (C, Cs, T, H, W)
    "res2": (256, 128, 8, 56, 56),
    "res3": (512, 256, 8, 28, 28),
    "res4": (1024, 512, 8, 14, 14),
    "res4_t4": (1024, 512, 4, 14, 14),
    "tiny": (16, 8, 2, 6, 6),  # smoke tests only
}
BLOCK_TYPES = list(list_blocks())  # every registered block type
# The "crossover" table: SNL linear vs dense where dense needs r times the linear form's
# multiply-adds (r ≈ N / (2·Cs)), to place the thresholds of `implementation: auto`.
CROSSOVER_RATIOS = [1, 1.5, 2, 3, 4, 6, 8, 12]
CROSSOVER_CHANNELS = [256, 512]


def dims(size: str) -> tuple:
    """(C, Cs, T, H, W) of a named size, or of "n<N>c<Cs>" (one graph of N nodes, C = 2·Cs)."""
    if size in SIZES:
        return SIZES[size]
    n, cs = (int(v) for v in size[1:].split("c"))
    return 2 * cs, cs, 1, 1, n
# Live N×N float32 matrices per batch item (forward, forward+backward) of the dense forms.
DENSE_COPIES = {"snl": (3, 6), "crossover": (3, 6), "softmax": (2, 4), "nl": (3, 5), "gsnl": (3, 6), "ns": (3, 5), "a2": (2, 4),
                "cc": (3, 5), "cgnl": (1, 2)}


def _measure_child(job: dict, queue) -> None:
    """Child process entry: one measurement, its result put on ``queue``."""
    queue.put(_measure(job))


def _measure(job: dict) -> dict:
    """Build inputs, then time at least ``repeat`` runs (and at least ``min_time`` seconds, within
    half the time cap) after a warm-up; return the median time and the peak memory."""
    import torch

    from vidnl.nonlocal_blocks import build_nonlocal_block
    from vidnl.nonlocal_blocks import functional as NF

    if job["threads"]:
        torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    dev = torch.device(job["device"])
    dtype = getattr(torch, job.get("dtype", "float32"))
    c, cs, t, h, w = dims(job["size"])
    b, n = job["batch"], t * h * w
    grad = job["mode"] == "fwd+bwd"
    extra = {}
    if job["table"] in ("snl", "crossover", "softmax"):
        # entries of scale Cs^-1/4, so θ·φ logits are of unit scale, as in a trained network: with
        # plain randn they would have std √Cs ≈ 22, the softmax would be saturated, and its
        # underflowing (denormal) probabilities slow CPU matmuls tens of times, an artefact.
        inputs = [(torch.randn(b, n, cs, device=dev) * cs ** -0.25).to(dtype).requires_grad_(grad) for _ in range(3)]
        impl = job["impl"]
        if job["table"] in ("snl", "crossover"):
            if impl == "auto":
                impl = "linear" if NF.snl_fast_is_cheaper(n, n, cs, dev.type, b) else "dense"
            fn = NF.snl_fast if impl == "linear" else NF.snl_dense
            extra["form"] = impl
        else:
            fn = NF.embedded_gaussian_fast if impl == "vidnl" else NF.embedded_gaussian_dense
            if impl == "vidnl":
                extra["form"] = "explicit" if NF.softmax_is_explicit(inputs[0], inputs[1]) else "fused"
                if dev.type == "cuda" and extra["form"] == "fused":
                    extra["form"] = "fused: " + _cuda_sdpa_backend(*inputs)

        def run():
            for t in inputs:  # as a training step: no gradient of the previous run is held
                t.grad = None
            out = fn(*inputs)
            if grad:
                out.sum().backward()
    else:
        block = build_nonlocal_block(job["block"], c, dim_inner=cs, implementation=job["impl"]).to(dev, dtype).eval()
        x = torch.randn(b, c, t, h, w, device=dev, dtype=dtype)

        def run():
            with torch.no_grad():
                block(x)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    try:
        run()
    except torch.cuda.OutOfMemoryError:
        return {"skipped": "out of GPU memory"}
    sync()
    times = []
    while (len(times) < job["repeat"] or sum(times) < job["min_time"]) and \
            (not times or sum(times) + statistics.median(times) < job["time_cap"] / 2):
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base_cuda
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) * 1024
    return {"time_s": statistics.median(times), "runs": len(times), "peak_mb": peak / 2**20, **extra}


def _cuda_sdpa_backend(q, k, v) -> str:
    """The first of PyTorch's fused attention kernels (in its dispatch order) that accepts these
    inputs as vidnl passes them (B×1×N×C, contiguous), or "math" (stores N×M) if none does."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = (t.detach()[:, None, :8].contiguous() for t in (q, k, v))
    for name in ("FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION"):
        backend = getattr(SDPBackend, name, None)
        if backend is None:
            continue
        try:
            with sdpa_kernel(backend), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # each refusal warns why
                torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=1.0)
            return name.split("_")[0].lower()
        except RuntimeError:
            continue
    return "math"


def measure(job: dict, timeout: float) -> dict:
    """One measurement in a fresh process (peak RSS is then its own; killed past ``timeout``),
    or, on a GPU, in this process: ``torch.cuda.max_memory_allocated`` is reset per measurement
    and a CUDA start-up per measurement would dominate."""
    if job["device"].startswith("cuda"):
        return _measure(job)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_measure_child, args=(job, q))
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
    c, cs, t, h, w = dims(size)
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
               "min_time": a.min_time, "time_cap": a.time_cap, "threads": a.threads, "device": a.device,
               "dtype": a.dtype, **(extra or {})}
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
    row = {"table": table, "size": size, "mode": mode, "batch": a.batch, "dtype": a.dtype, **(extra or {}),
           "date": str(date.today()), "results": res}
    dense = res.get(dense_impl, {})
    for impl in impls:
        if impl != dense_impl and "time_s" in res[impl] and "time_s" in dense:
            row[f"speedup_{impl}_vs_{dense_impl}"] = dense["time_s"] / res[impl]["time_s"]
            row[f"memory_ratio_{impl}_vs_{dense_impl}"] = res[impl]["peak_mb"] / max(dense["peak_mb"], 1e-3)
    check = ""
    if "auto" in res and all("time_s" in res[k] for k in ("auto", "linear", "dense")):
        # auto runs one of the two forms: the chosen form's time over the better one's checks the
        # cost model's choice; auto's own time over the better one's also includes the noise of
        # timing the same code twice (on a shared 2-core machine often 10-25 %)
        best = min(res["linear"]["time_s"], res["dense"]["time_s"])
        row["auto_choice_vs_best"] = res[res["auto"]["form"]]["time_s"] / best
        row["auto_vs_best"] = res["auto"]["time_s"] / best
        check = (f" | auto's choice/best {row['auto_choice_vs_best']:.2f}"
                 + (" OVER 1.10" if row["auto_choice_vs_best"] > 1.10 else "")
                 + f" (auto measured/best {row['auto_vs_best']:.2f})")
    rows.append(row)
    label = extra["block"] if extra else table
    cells = []
    for impl in impls:
        r = res[impl]
        form = f" ({r['form']})" if "form" in r and r["form"] != impl else ""
        cells.append(f"{impl}{form} {r['time_s']:8.3f} s {r['peak_mb']:8.0f} MB x{r['runs']}" if "time_s" in r
                     else f"{impl} {r['skipped']}")
    ratios = "  ".join(f"{k.split('_vs_')[0].replace('speedup_', '')}: {v:6.1f}x faster"
                       for k, v in row.items() if k.startswith("speedup_"))
    mems = "  ".join(f"mem {v:6.3f}x" for k, v in row.items() if k.startswith("memory_ratio_"))
    print(f"{label:7} {size:8} {mode:8} | " + " | ".join(cells) + f" || {ratios} {mems}{check}", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tables", nargs="+", default=["snl", "softmax", "blocks"],
                   choices=["snl", "crossover", "softmax", "blocks"])
    p.add_argument("--sizes", nargs="+", default=["res4_t4", "res4", "res3", "res2"], choices=list(SIZES))
    p.add_argument("--types", nargs="+", default=BLOCK_TYPES, choices=BLOCK_TYPES)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--crossover-channels", type=int, nargs="+", default=CROSSOVER_CHANNELS, help="Cs of the crossover table")
    p.add_argument("--crossover-ratios", type=float, nargs="+", default=CROSSOVER_RATIOS,
                   help="r = dense / linear multiply-adds of the crossover table (N = 2·r·Cs)")
    p.add_argument("--repeat", type=int, default=3, help="at least this many timed runs (median reported)")
    p.add_argument("--min-time", type=float, default=1.0,
                   help="keep timing until this many seconds have been timed (within half the time cap)")
    p.add_argument("--mem-cap-gb", type=float, default=6.0, help="dense forms needing more are not run")
    p.add_argument("--time-cap", type=float, default=240.0, help="seconds per measurement")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "results", "nonlocal_blocks.json"))
    p.add_argument("--merge", action="store_true",
                   help="replace only the measured rows in an existing --json file, keep the others")
    a = p.parse_args(argv)
    print(f"# nonlocal blocks on {_device_name(a.device)} ({platform.machine()}, {os.cpu_count()} cores), batch {a.batch}, "
          f"{a.dtype}, median of >= {a.repeat} runs and >= {a.min_time:g} s; memory = peak above baseline")
    rows: list[dict] = []
    if "snl" in a.tables:
        print("## SNL aggregation A·g: linear (associativity) and auto vs dense N×N")
        for size in a.sizes:
            for mode in ("fwd", "fwd+bwd"):
                run_pair(rows, "snl", size, mode, ["linear", "auto", "dense"], "dense", a)
    if "crossover" in a.tables:
        print("## SNL aggregation, forward+backward, linear vs dense around the crossover: r = dense / linear "
              "multiply-adds")
        for cs in a.crossover_channels:
            for r in a.crossover_ratios:
                run_pair(rows, "crossover", f"n{int(round(2 * r * cs))}c{cs}", "fwd+bwd", ["linear", "dense"], "dense", a)
    if "softmax" in a.tables:
        print("## embedded-Gaussian NL aggregation: vidnl's form (explicit or fused, per call) vs naive matmul + softmax")
        for size in a.sizes:
            run_pair(rows, "softmax", size, "fwd+bwd", ["vidnl", "naive"], "naive", a)
    if "blocks" in a.tables:
        print("## whole blocks (projections included), forward: fast vs dense")
        for size in a.sizes:
            for block in a.types:
                run_pair(rows, "blocks", size, "fwd", ["fast", "dense"], "dense", a, extra={"block": block})
    os.makedirs(os.path.dirname(a.json), exist_ok=True)
    if a.merge and os.path.exists(a.json):
        rows = merge_rows(json.load(open(a.json))["rows"], rows)
    with open(a.json, "w") as f:
        json.dump({"machine": platform.platform(), "device": _device_name(a.device), "cores": os.cpu_count(),
                   "torch": _torch_version(), "rows": rows}, f, indent=1)
    print(f"wrote {a.json}")
    return 0


def _row_key(row: dict) -> tuple:
    return row["table"], row["size"], row["mode"], row.get("block"), row["batch"], row.get("dtype", "float32")


def merge_rows(old: list[dict], new: list[dict]) -> list[dict]:
    """Rows of ``old`` with those measured again replaced by ``new``, in table/size order."""
    fresh = {_row_key(r) for r in new}
    rows = [r for r in old if _row_key(r) not in fresh] + new
    tables, sizes = ["snl", "crossover", "softmax", "blocks"], ["res4_t4", "res4", "res3", "res2", "tiny"]
    return sorted(rows, key=lambda r: (tables.index(r["table"]), sizes.index(r["size"]) if r["size"] in sizes else
                                       (dims(r["size"])[1], dims(r["size"])[4]), r["mode"] != "fwd",
                                       BLOCK_TYPES.index(r["block"]) if "block" in r else 0))


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return device


def _torch_version() -> str:
    import torch

    return torch.__version__


def _cuda() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return False


if __name__ == "__main__":
    sys.exit(main())
