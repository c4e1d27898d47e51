#!/usr/bin/env python
"""Mixed precision on this machine: speed of a training step, and stability of AMP training.

1. **Step time** (``--speed``): one SGD step (forward, backward, update) of a network on a
   random batch, in float32, in vidnl's bfloat16 autocast (``autocast_context``: the guard of
   padded convolutions and float32 nonlocal graphs) and, for the guard's cost, in plain
   ``torch.autocast`` bfloat16. Modes are interleaved, medians of ``--repeat`` steps each after
   warm-up; ratio = float32 time / mode time. On a GPU (``--device cuda``) also float16.
2. **Stability** (``--seeds``): the experiment of issue 28: the tests' tiny I3D-R18 + SNL (width 4,
   4 frames of 32², SGD lr 0.05 cosine, 2 epochs of 2 steps) per seed in float32 and in AMP,
   twice each in AMP. Printed per seed: NaN or not, whether the two AMP runs end bit-identical,
   and the distance of the AMP run's final weights from the float32 run's,
   ``||w_amp − w_f32|| / ||w_f32 − w_init||``, beside float32's own sensitivity: the same distance
   for a float32 run started from the initial weights rounded to bfloat16 (a perturbation of the
   size AMP makes at every step).

    python benchmarks/amp.py                        # both, CPU (about 4 minutes on 2 cores)
    python benchmarks/amp.py --speed --device cuda  # a lent GPU: float32 / bfloat16 / float16
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from vidnl.config import load_config  # noqa: E402
from vidnl.engine.precision import autocast_context  # noqa: E402
from vidnl.models import build_model  # noqa: E402

NETWORKS = {  # name: (config, overrides, batch shape B×C×T×H×W)
    "I3D-R18 + SNL (demo config)": ("configs/Synthetic/I3D_R18_SNL.yaml", {}, (8, 3, 8, 64, 64)),
    "I3D-R50 + NL (5 blocks), 8x112²": ("configs/Kinetics/I3D_NLN_8x8_R50.yaml", {"MODEL.NUM_CLASSES": 400},
                                       (2, 3, 8, 112, 112)),
}


def cpu_flags() -> str:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return "unknown"
    found = [f for f in ("avx512_bf16", "amx_bf16", "avx512f") if f" {f}" in flags]
    return ", ".join(found) or "no AVX-512"


def step_times(device: torch.device, repeat: int) -> list[dict]:
    modes = {"float32": lambda: nullcontext(),
             "bfloat16 (vidnl)": lambda: autocast_context(device, torch.bfloat16)}
    if device.type == "cpu":
        modes["bfloat16 (plain torch.autocast)"] = lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    else:
        modes["float16 (vidnl, no scaler)"] = lambda: autocast_context(device, torch.float16)
    rows = []
    for name, (cfg_path, extra, shape) in NETWORKS.items():
        opts = [str(x) for kv in extra.items() for x in kv] + ["NUM_GPUS", "0"]
        model = build_model(load_config(os.path.join(ROOT, cfg_path), opts)).to(device).train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        x = torch.randn(*shape, device=device)
        y = torch.zeros(shape[0], dtype=torch.long, device=device)

        def step(ctx):
            with ctx():
                out = model(x)
            loss = F.cross_entropy(out.float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()

        times = {m: [] for m in modes}
        for m in modes:  # warm-up: oneDNN primitives, caches
            step(modes[m])
        for _ in range(repeat):
            for m, ctx in modes.items():
                t0 = time.perf_counter()
                step(ctx)
                times[m].append(time.perf_counter() - t0)
        med = {m: statistics.median(v) for m, v in times.items()}
        row = {"network": name, "batch": list(shape), **{f"{m} s": round(v, 4) for m, v in med.items()},
               **{f"ratio {m}": round(med["float32"] / v, 2) for m, v in med.items() if m != "float32"}}
        rows.append(row)
        print(f"{name}, batch {'x'.join(map(str, shape))}: " +
              ", ".join(f"{m} {v * 1e3:.0f} ms" + ("" if m == "float32" else f" ({med['float32'] / v:.2f}x)")
                        for m, v in med.items()), flush=True)
    return rows


def _flat(state: dict) -> torch.Tensor:
    return torch.cat([v.double().flatten() for k, v in sorted(state.items())
                      if v.is_floating_point() and "running" not in k])


def stability(seeds: list[int]) -> list[dict]:
    """The seed experiment (module docstring); one row per seed. Warnings are silenced meanwhile
    (the runs' own logging) and restored after."""
    previous = logging.root.manager.disable
    try:
        return _stability(seeds)
    finally:
        logging.disable(previous)


def _stability(seeds: list[int]) -> list[dict]:
    import shutil

    import data_prep.make_synthetic_motion as synth
    from conftest import tiny_opts
    from vidnl.engine import train
    from vidnl.engine.train import Trainer
    from vidnl.engine.optim import TrainingDiverged

    logging.disable(logging.WARNING)
    tmp = tempfile.mkdtemp(prefix="vidnl_amp_")
    data = os.path.join(tmp, "data")
    synth.main(["--out", data, "--num-classes", "2", "--train", "4", "--val", "2", "--test", "2",
                "--frames", "12", "--height", "48", "--width", "64", "--workers", "1"])
    rows = []
    for seed in seeds:
        def run(tag, amp, init_file=""):
            init = {"TRAIN.CHECKPOINT_FILE_PATH": init_file} if init_file else {}
            opts = tiny_opts(data, os.path.join(tmp, f"{tag}_{seed}"), **{
                "RNG_SEED": seed, "TRAIN.MIXED_PRECISION": amp, "TEST.ENABLE": False, **init})
            try:
                return _flat(train(load_config(None, opts))["model"].state_dict())
            except TrainingDiverged:
                return None
        cfg = load_config(None, tiny_opts(data, os.path.join(tmp, f"init_{seed}"), **{"RNG_SEED": seed}))
        init_state = Trainer(cfg).model.state_dict()
        init = _flat(init_state)
        rounded = os.path.join(tmp, f"init_bf16_{seed}.pyth")
        torch.save({"model_state": {k: v.bfloat16().to(v.dtype) if v.is_floating_point() else v
                                    for k, v in init_state.items()}}, rounded)
        w32, amp1, amp2 = run("f32", False), run("amp1", True), run("amp2", True)
        w32_pert = run("f32_bf16init", False, rounded)
        moved = (w32 - init).norm().item() if w32 is not None else float("nan")

        def dist(w):
            return None if w is None or w32 is None else round((w - w32).norm().item() / moved, 4)
        row = {"seed": seed, "float32_nan": w32 is None, "amp_nan": amp1 is None or amp2 is None,
               "amp_runs_identical": None if amp1 is None or amp2 is None else bool(torch.equal(amp1, amp2)),
               "amp_vs_float32": dist(amp1), "float32_bf16_init_vs_float32": dist(w32_pert),
               "float32_moved": round(moved, 4)}
        rows.append(row)
        print(f"seed {seed}: float32 {'NaN' if row['float32_nan'] else 'ok'}, AMP {'NaN' if row['amp_nan'] else 'ok'}"
              f", AMP runs bit-identical {row['amp_runs_identical']}; ||w_amp - w_f32|| / ||w_f32 - w_init|| "
              f"{row['amp_vs_float32']}, float32 from bf16-rounded init {row['float32_bf16_init_vs_float32']}",
              flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--speed", action="store_true", help="only the step times")
    ap.add_argument("--stability", action="store_true", help="only the seed experiment")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seeds", default="0,1,2,3,4,5")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "amp.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    both = not (args.speed or args.stability)
    device = torch.device(args.device)
    result = {"machine": {"cpu_flags": cpu_flags(), "processor": platform.processor() or platform.machine(),
                          "threads": args.threads, "torch": torch.__version__,
                          "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None}}
    print(f"torch {torch.__version__}, CPU flags: {result['machine']['cpu_flags']}, {args.threads} threads")
    if args.speed or both:
        result["step_time"] = step_times(device, args.repeat)
    if args.stability or both:
        result["stability"] = stability([int(s) for s in args.seeds.split(",")])
    if args.out:
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
