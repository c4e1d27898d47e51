#!/usr/bin/env python
"""Fast vs dense forward time of every nonlocal block type, side by side in one run.

Sizes are the I3D-R50 stages (batch 2 by default): res2 8×56×56 (C=256→128), res3 8×28×28
(C=512→256), res4 8×14×14 and 4×14×14 (C=1024→512). The dense form builds the N×N affinity;
where that would need more than ``--dense-mem-gb`` it is not run and marked so. Prints a table
of median times and the dense/fast ratio, and writes it as JSON.

    python benchmarks/nonlocal_blocks.py                      # all types and sizes
    python benchmarks/nonlocal_blocks.py --types snl nl --sizes res3 res4 --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vidnl.nonlocal_blocks import build_nonlocal_block  # noqa: E402

SIZES = {  # name: (C, Cs, T, H, W)
    "res2": (256, 128, 8, 56, 56),
    "res3": (512, 256, 8, 28, 28),
    "res4": (1024, 512, 8, 14, 14),
    "res4_t4": (1024, 512, 4, 14, 14),
}
TYPES = ["nl", "snl", "gsnl", "ns", "a2", "cgnl", "cc"]
# Rough number of live N×N float32 matrices per batch item in each dense form.
DENSE_COPIES = {"nl": 3, "snl": 4, "gsnl": 4, "ns": 3, "a2": 3, "cgnl": 0, "cc": 3}


def dense_bytes(block_type: str, batch: int, c: int, cs: int, t: int, h: int, w: int) -> float:
    n = t * h * w
    if block_type == "cgnl":
        return batch * (n * cs) ** 2 * 4  # channel-position graph
    return batch * n * n * 4 * DENSE_COPIES[block_type]


def time_forward(block, x, repeat: int) -> float:
    times = []
    with torch.no_grad():
        block(x)  # warm-up
        for _ in range(repeat):
            start = time.perf_counter()
            block(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--types", nargs="+", default=TYPES, choices=TYPES)
    p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--dense-mem-gb", type=float, default=4.0, help="skip dense forms needing more than this")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--json", default="benchmarks/results/nonlocal_blocks.json")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    rows = []
    print(f"# nonlocal blocks, forward, batch {a.batch}, float32, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}")
    print(f"{'type':6} {'size':8} {'N':>6} {'fast s':>9} {'dense s':>9} {'dense/fast':>10}")
    for size in a.sizes:
        c, cs, t, h, w = SIZES[size]
        x = torch.randn(a.batch, c, t, h, w)
        for block_type in a.types:
            fast = build_nonlocal_block(block_type, c, dim_inner=cs, implementation="fast").eval()
            t_fast = time_forward(fast, x, a.repeat)
            need = dense_bytes(block_type, a.batch, c, cs, t, h, w)
            if need > a.dense_mem_gb * 1e9:
                t_dense, note = None, f"dense not run: needs ~{need / 1e9:.0f} GB"
            else:
                dense = build_nonlocal_block(block_type, c, dim_inner=cs, implementation="dense").eval()
                dense.load_state_dict(fast.state_dict())
                t_dense, note = time_forward(dense, x, a.repeat), ""
            ratio = t_dense / t_fast if t_dense else None
            rows.append({"type": block_type, "size": size, "N": t * h * w, "C": c, "Cs": cs, "batch": a.batch,
                         "fast_s": t_fast, "dense_s": t_dense, "dense_over_fast": ratio, "note": note})
            print(f"{block_type:6} {size:8} {t * h * w:6d} {t_fast:9.4f} "
                  f"{(f'{t_dense:9.4f}' if t_dense else '        -')} "
                  f"{(f'{ratio:9.1f}x' if ratio else '         -')} {note}", flush=True)
    os.makedirs(os.path.dirname(a.json) or ".", exist_ok=True)
    with open(a.json, "w") as f:
        json.dump({"machine": platform.platform(), "threads": torch.get_num_threads(), "rows": rows}, f, indent=1)
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
