"""Convert a checkpoint of another codebase into a vidnl checkpoint for a config's model.

    python tools/convert_checkpoint.py I3D_NLN_8x8_R50.pyth out/i3d_nln_8x8.pyth \
        --cfg configs/Kinetics/I3D_NLN_8x8_R50.yaml [--format pyslowfast] [--skip 'head.*'] [KEY VALUE ...]

Reads PySlowFast / pytorchvideo .pyth, Caffe2 .pkl (numpy arrays only), mmaction2, torchvision and
the official SNL / CGNL layouts (detected from the key names unless --format is given; see
docs/pretrained.md), builds the model of --cfg, loads the weights strictly (every tensor of the
model must come from the file and every tensor of the file must be used, except keys matching
--skip, e.g. the classifier when fine-tuning to other classes), prints what was mapped, skipped
and missing, and writes ``{"model_state": ...}``, which TRAIN/TEST.CHECKPOINT_FILE_PATH then
load as vidnl weights. A file that does not fit prints why and exits 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vidnl.cli import cli_entry, split_overrides  # noqa: E402
from vidnl.errors import VidnlUserError  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="checkpoint to convert (.pyth, .pth, .pth.tar, .pkl)")
    p.add_argument("output", help="vidnl checkpoint to write")
    p.add_argument("--cfg", required=True, help="config of the model the weights are for")
    p.add_argument("--format", default="auto", help="layout of the input (default: detected from its keys)")
    p.add_argument("--skip", nargs="*", default=None,
                   help="fnmatch patterns of vidnl keys not to take from the file (default: TRAIN.CHECKPOINT_SKIP)")
    args, opts = p.parse_known_args(argv)
    if args.skip:  # KEY VALUE overrides written after the patterns are not patterns
        args.skip, overrides = split_overrides(args.skip)
        opts = overrides + opts
    args.opts = opts  # KEY VALUE config overrides
    return args


@cli_entry(tool="convert_checkpoint")
def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from vidnl.config import load_config
    from vidnl.engine.checkpoint import atomic_torch_save
    from vidnl.models.weights import extract_model_state, load_checkpoint_file, load_weights
    from vidnl.models import build_model
    from vidnl.models.weight_formats import FORMATS, detect_format

    if args.format not in FORMATS:
        raise VidnlUserError(f"--format must be one of {', '.join(FORMATS)}, got {args.format!r}")
    cfg = load_config(args.cfg, args.opts)
    model = build_model(cfg)
    ckpt = load_checkpoint_file(args.input)
    fmt = args.format if args.format != "auto" else detect_format(extract_model_state(ckpt))
    if fmt == "unknown":
        print(f"{args.input}: no known layout recognised in its keys; read as vidnl keys")
        fmt = "vidnl"
    else:
        print(f"{args.input}: {fmt} layout{' (detected)' if args.format == 'auto' else ''}")
    report = load_weights(model, args.input, ckpt=ckpt, fmt=fmt, inflate=cfg.MODEL.INFLATE,
                          skip=cfg.TRAIN.CHECKPOINT_SKIP if args.skip is None else args.skip)
    total = len(model.state_dict())
    print(f"mapped: {total - len(report['skipped'])} of {total} model tensors")
    if report["skipped"]:
        print(f"not taken from the file (--skip): {len(report['skipped'])}: {', '.join(report['skipped'][:20])}")
    print("missing: 0, unexpected: 0")
    atomic_torch_save({"model_state": model.state_dict(), "converted_from": os.path.abspath(args.input),
                       "source_format": fmt}, args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
