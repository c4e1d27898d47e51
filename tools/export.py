#!/usr/bin/env python
"""Export a trained model, nonlocal blocks included, to torch.export (.pt2) or ONNX.

    python tools/export.py --cfg configs/UCF101/I3D_R50_SNL.yaml --weights out/ucf/checkpoints/checkpoint_epoch_00100.pyth \\
        --format onnx i3d_snl.onnx [KEY VALUE ...]

The model is build_model(cfg) with the weights loaded as the test loads them; its input is a
normalised clip B×C×T×H×W at the config's test size (docs/export.md), with a dynamic batch
axis. After writing, the file is run on a batch of a size other than the example's and compared
with PyTorch (--no-check skips this). A missing file or a config mistake prints one message
and exits 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vidnl.cli import cli_entry  # noqa: E402
from vidnl.config import load_config  # noqa: E402
from vidnl.errors import VidnlUserError  # noqa: E402

FORMATS = ("torch_export", "onnx")  # vidnl.export.FORMATS, without importing torch before the checks


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", dest="cfg_file", required=True, help="path to a YAML config")
    p.add_argument("--weights", required=True, help="checkpoint or state dict to export (as TEST.CHECKPOINT_FILE_PATH)")
    p.add_argument("--format", dest="fmt", required=True, choices=FORMATS,
                   help="torch_export: torch.export.save's .pt2; onnx: an ONNX file for ONNX Runtime")
    p.add_argument("--batch", type=int, default=2, help="batch size of the example input (>= 2; default 2)")
    p.add_argument("--static-batch", action="store_true", help="fix the batch size to --batch instead of dynamic")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    p.add_argument("--no-check", dest="check", action="store_false",
                   help="do not run the written file and compare it with PyTorch")
    p.add_argument("out", help="output file (.pt2 or .onnx)")
    p.add_argument("overrides", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p.parse_args(argv)


@cli_entry(tool="vidnl")
def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("vidnl").setLevel(logging.INFO)  # vidnl's lines; the exporters' chatter stays off
    # the quick checks first, before the config's validation and the export import torch
    if args.batch < 1 or (args.batch < 2 and not args.static_batch):
        raise VidnlUserError(f"--batch {args.batch}: a dynamic batch needs an example batch of at least 2 "
                             f"(or pass --static-batch)")
    for flag, path, what in (("--weights", args.weights, "a checkpoint file"), ("--cfg", args.cfg_file,
                                                                              "a YAML config file")):
        if os.path.isdir(path):
            raise VidnlUserError(f"{flag} {path} is a folder; expected {what}")
    if not os.path.isfile(args.weights):
        raise VidnlUserError(f"--weights: checkpoint not found: {args.weights}")
    cfg = load_config(args.cfg_file, list(args.overrides))
    from vidnl.export import build_export_model, check_output_path, example_input, export_model, max_abs_diff

    check_output_path(args.out, args.fmt)  # before the model is built and traced

    model = build_export_model(cfg, args.weights)
    example = example_input(cfg, args.batch)
    export_model(model, example, args.out, args.fmt, dynamic_batch=not args.static_batch, opset=args.opset)
    message = f"wrote {os.path.abspath(args.out)} ({args.fmt}, input {'B' if not args.static_batch else args.batch}" \
              f"x{'x'.join(map(str, example.shape[1:]))})"
    if args.check:
        check_batch = args.batch if args.static_batch else args.batch + 1
        diff = max_abs_diff(model, args.out, args.fmt, example_input(cfg, check_batch, seed=1))
        message += f"; max |exported - PyTorch| = {diff:.2e} on a batch of {check_batch}"
    print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
