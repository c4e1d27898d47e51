#!/usr/bin/env python
"""The multi-view test end to end, eager vs ``TEST.COMPILE True``.

Runs vidnl's test (``vidnl.engine.test``, what ``tools/run_net.py`` runs with ``TRAIN.ENABLE
False``) twice on the same videos with the same weights: eager, then compiled (after an
untimed eager test of one video, which pays the one-time costs of both). The predictions
must agree (the same predicted class for every video, and scores within ``--tol`` of the
views' count) before any time is printed. Reported: the wall time of each test (decoding,
model, metrics: what a user waits for), the compile time of the first forward pass, the
compiled test's time without it, and from how many clips compiling pays.

Weights are random, with a classifier of std 1 so that the views' scores differ clearly; the
BN running statistics are left as initialised (the test's arithmetic does not depend on them).

    python benchmarks/multiview_compile.py                     # I3D_NLN_8x8_R50, 10x3 views at 256²
    python benchmarks/multiview_compile.py --videos a.mp4 b.mp4 --copies 4
    python benchmarks/multiview_compile.py --size tiny --backend aot_eager   # the smoke test, seconds

Videos: ``--videos``, else ../shared/data/videos/*, else synthetic ones
(data_prep/make_synthetic_motion.py); each listed ``--copies`` times in the test CSV.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import platform
import sys
import tempfile
import time

import torch
import torch.nn as nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from vidnl.config import load_config  # noqa: E402
from vidnl.engine import test as run_test  # noqa: E402
from vidnl.models import build_model  # noqa: E402

SIZES = {  # config, overrides
    "i3d": ("configs/Kinetics/I3D_NLN_8x8_R50.yaml", {}),
    "tiny": ("configs/Kinetics/I3D_NLN_8x8_R50.yaml",
             {"RESNET.DEPTH": 18, "RESNET.BASE_WIDTH": 4, "MODEL.NUM_CLASSES": 5, "DATA.NUM_FRAMES": 4,
              "DATA.TEST_CROP_SIZE": 32, "TEST.NUM_ENSEMBLE_VIEWS": 2, "TEST.NUM_SPATIAL_CROPS": 3,
              "TEST.BATCH_SIZE": 4, "NONLOCAL.LOCATION": "[[], [1], [], []]"}),
}


class CompileTime(logging.Handler):
    """Catches TEST.COMPILE's "compiled the model ... in S s" line (its last argument)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.seconds = None

    def emit(self, record):
        if "compiled the model" in record.msg:
            self.seconds = float(record.args[-1])


def default_videos(work: str) -> list[str]:
    """../shared/data/videos/*, else two synthetic videos written under ``work``."""
    shared = sorted(glob.glob(os.path.join(ROOT, "..", "shared", "data", "videos", "*")))
    if shared:
        return shared
    from data_prep import make_synthetic_motion as synth

    out = os.path.join(work, "synthetic")
    synth.main(["--out", out, "--num-classes", "2", "--train", "1", "--val", "1", "--test", "2", "--frames", "40",
                "--height", "128", "--width", "160", "--workers", "1"])
    return sorted(os.path.join(out, line.split()[0]) for line in open(os.path.join(out, "test.csv")))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=sorted(SIZES), default="i3d")
    p.add_argument("--backend", default="inductor", choices=("inductor", "aot_eager", "eager"))
    p.add_argument("--videos", nargs="*", default=None)
    p.add_argument("--copies", type=int, default=2, help="times each video is listed in the test CSV")
    p.add_argument("--workers", type=int, default=1, help="DATA_LOADER.NUM_WORKERS")
    p.add_argument("--tol", type=float, default=1e-4, help="allowed score difference per view")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    catcher = CompileTime()
    logger = logging.getLogger("vidnl.engine.inference")
    logger.addHandler(catcher)
    try:
        with tempfile.TemporaryDirectory(prefix="vidnl_multiview_compile_") as work:
            return run(args, work, catcher)
    finally:
        logger.removeHandler(catcher)


def run(args, work: str, catcher: CompileTime) -> dict:
    """Both tests in the folder ``work``; the compile time from ``catcher``."""
    videos = [os.path.abspath(v) for v in (args.videos or default_videos(work))]
    for folder, listed in (("data", videos * args.copies), ("warmup", videos[:1])):
        os.makedirs(os.path.join(work, folder))
        with open(os.path.join(work, folder, "test.csv"), "w") as f:
            f.writelines(f"{v} 0\n" for v in listed)
    config, overrides = SIZES[args.size]
    opts = {**overrides, "NUM_GPUS": 0, "TRAIN.ENABLE": False, "DATA.PATH_TO_DATA_DIR": os.path.join(work, "data"),
            "DATA_LOADER.NUM_WORKERS": args.workers, "TENSORBOARD.ENABLE": False,
            "TEST.CHECKPOINT_FILE_PATH": os.path.join(work, "weights.pyth")}

    def cfg_for(name: str, **extra):
        flat = []
        for k, v in {**opts, "OUTPUT_DIR": os.path.join(work, name), **extra}.items():
            flat += [k, str(v)]
        return load_config(os.path.join(ROOT, config), flat)

    cfg = cfg_for("eager")
    torch.manual_seed(0)
    model = build_model(cfg)
    nn.init.normal_(model.head.fc.weight, std=1.0)
    torch.save({"model_state": model.state_dict(), "epoch": 1}, cfg.TEST.CHECKPOINT_FILE_PATH)

    run_test(cfg_for("warmup", **{"DATA.PATH_TO_DATA_DIR": os.path.join(work, "warmup")}))  # one-time costs
    start = time.time()
    eager = run_test(cfg)
    eager_s = time.time() - start
    torch._dynamo.reset()
    start = time.time()
    compiled = run_test(cfg_for("compiled", **{"TEST.COMPILE": True, "TEST.COMPILE_BACKEND": args.backend}))
    compiled_s = time.time() - start
    if catcher.seconds is None:
        raise SystemExit("TEST.COMPILE did not compile (see the log above): no comparison")

    views = eager["views_per_video"]
    worst = max(max(abs(a - b) for a, b in zip(pa["scores"], pb["scores"]))
                for pa, pb in zip(eager["predictions"], compiled["predictions"]))
    same_class = all(pa["pred"] == pb["pred"] for pa, pb in zip(eager["predictions"], compiled["predictions"]))
    if not same_class or worst > args.tol * views:
        raise SystemExit(f"REFUSED: the compiled test's predictions differ from eager mode's (classes equal: "
                         f"{same_class}, largest score difference {worst:.2e} > {args.tol * views:.1e}); no times")

    clips = eager["num_clips"]
    steady = compiled_s - catcher.seconds
    saved_per_clip = (eager_s - steady) / clips
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "size": args.size, "config": config, "backend": args.backend, "videos": len(eager["predictions"]),
        "views_per_video": views, "clips": clips, "clips_per_forward": cfg.TEST.BATCH_SIZE,
        "crop": cfg.DATA.TEST_CROP_SIZE, "frames": cfg.DATA.NUM_FRAMES,
        "eager_s": round(eager_s, 2), "compiled_s": round(compiled_s, 2), "compile_s": round(catcher.seconds, 2),
        "compiled_without_compile_s": round(steady, 2),
        "ratio_with_compile": round(eager_s / compiled_s, 3), "ratio_without_compile": round(eager_s / steady, 3),
        "pays_from_clips": round(catcher.seconds / saved_per_clip) if saved_per_clip > 0 else None,
        "max_score_difference": worst,
    }
    print(f"\n{result['videos']} videos x {views} views = {clips} clips of {cfg.DATA.NUM_FRAMES}x"
          f"{cfg.DATA.TEST_CROP_SIZE}², {config} ({args.size}), {result['machine']}")
    print(f"eager test            {eager_s:8.1f} s")
    print(f"TEST.COMPILE test     {compiled_s:8.1f} s   ({eager_s / compiled_s:.2f}x; compile {catcher.seconds:.1f} s of it)")
    print(f"  without the compile {steady:8.1f} s   ({eager_s / steady:.2f}x)")
    print(f"compiling pays from about {result['pays_from_clips']} clips" if result["pays_from_clips"] is not None
          else "compiling does not pay at this size")
    print(f"predictions equal (largest score difference {worst:.1e})")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
