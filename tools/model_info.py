#!/usr/bin/env python
"""Parameters and FLOPs of a config's model: total, per stage and per nonlocal block.

    python tools/model_info.py --cfg configs/Kinetics/I3D_R50_NL.yaml [KEY VALUE ...]

The input is one clip of DATA.NUM_FRAMES frames (1 for image models) of DATA.TRAIN_CROP_SIZE².
FLOPs are multiply-adds counted by torch.utils.flop_counter.FlopCounterMode (its count / 2:
convolutions, matrix products and attention; batch norm and pooling are not counted), see
vidnl/models/complexity.py. The model is built on the "meta" device (shapes only: no weights are
allocated and nothing is computed, so a ResNet-101 at 32×224² takes about a second); a model
whose forward needs real values is run on the CPU instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vidnl.cli import cli_entry  # noqa: E402

import torch  # noqa: E402

from vidnl.config import load_config  # noqa: E402

IMAGE_ARCHS = ("resnet2d", "preresnet", "preresnet_snl_code")


@cli_entry()
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", dest="cfg_file", default=None)
    p.add_argument("--json", default=None, help="also write the table here")
    p.add_argument("overrides", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    cfg = load_config(a.cfg_file, a.overrides)
    from vidnl.models import build_model
    from vidnl.models.complexity import complexity_table, format_table

    t = 1 if cfg.MODEL.ARCH in IMAGE_ARCHS else cfg.DATA.NUM_FRAMES
    size = cfg.DATA.TRAIN_CROP_SIZE
    shape = (1, cfg.DATA.INPUT_CHANNEL_NUM, t, size, size)
    try:
        with torch.device("meta"):
            model = build_model(cfg)
        rows = complexity_table(model, torch.empty(shape, device="meta"))
    except (NotImplementedError, RuntimeError):  # an op without a meta kernel, or one that reads values
        rows = complexity_table(build_model(cfg), torch.randn(shape))
    print(f"{cfg.MODEL.ARCH} depth {cfg.RESNET.DEPTH}, input 1x{cfg.DATA.INPUT_CHANNEL_NUM}x{t}x{size}x{size}; "
          f"FLOPs = multiply-adds (conv, matmul, attention)")
    print(format_table(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
