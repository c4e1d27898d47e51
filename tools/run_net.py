#!/usr/bin/env python
"""Train and/or test a model from a YAML config.

    python tools/run_net.py --cfg configs/UCF101/I3D_R50_SNL.yaml [KEY VALUE ...]
    python tools/run_net.py --cfg X.yaml --opts SOLVER.BASE_LR 0.01 OUTPUT_DIR out/run1

TRAIN.ENABLE runs training (resuming from OUTPUT_DIR/checkpoints if a checkpoint is there),
TEST.ENABLE then runs the multi-view test. Config mistakes print one message and exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vidnl.cli import cli_entry  # noqa: E402
from vidnl.config import load_config  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", dest="cfg_file", default=None, help="path to a YAML config")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE overrides")
    p.add_argument("overrides", nargs=argparse.REMAINDER, help="KEY VALUE overrides (same as --opts)")
    return p.parse_args(argv)


def check_what_the_config_names(cfg) -> None:
    """The model, datasets and decoder the config names exist (ConfigError naming the key
    otherwise). The config package checks keys and values only; these checks belong to the code
    that builds each thing and run here before OUTPUT_DIR is touched. The nonlocal block options
    are checked when the model is built (the first step of training and testing)."""
    from vidnl.data.datasets import check_dataset_name
    from vidnl.data.decoding import check_backend
    from vidnl.models.build import check_model_config

    check_model_config(cfg)
    if cfg.MODEL.TASK == "reid":
        from vidnl.data.datasets.reid import REID_DATASET_REGISTRY

        REID_DATASET_REGISTRY.check(cfg.REID.DATASET, "REID.DATASET")
    else:
        check_dataset_name(cfg.TRAIN.DATASET, "TRAIN.DATASET")
        check_dataset_name(cfg.TEST.DATASET, "TEST.DATASET")
    check_backend(cfg.DATA.DECODING_BACKEND)


@cli_entry(tool="vidnl", interrupted="interrupted; rerun the same command to resume from the last checkpoint")
def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.cfg_file, list(args.overrides) + list(args.opts))
    check_what_the_config_names(cfg)
    if cfg.MODEL.TASK == "reid":
        from vidnl.engine.reid import test, train
    else:
        from vidnl.engine import test, train

    from vidnl.engine.output_dir import output_dir_lock, prepare_output_dir

    prepare_output_dir(cfg.OUTPUT_DIR)
    with output_dir_lock(cfg.OUTPUT_DIR, enabled=int(os.environ.get("RANK", "0")) == 0):
        if cfg.TRAIN.ENABLE:
            train(cfg)
        if cfg.TEST.ENABLE:
            results = test(cfg)
            if "headline" in results:
                print(f"{results['headline']}; outputs in {os.path.abspath(cfg.OUTPUT_DIR)}")
            else:
                print(f"video top-1 {results['video_top1']:.2f}% on {results['num_videos']} {cfg.TEST.SPLIT} "
                      f"videos; outputs in {os.path.abspath(cfg.OUTPUT_DIR)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
