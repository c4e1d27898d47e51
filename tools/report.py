#!/usr/bin/env python
"""Write a run's self-contained HTML report (images embedded, opens offline): training curves with
resume points, test metrics, confusion matrix, per-class accuracy, worst-classified videos and
attention maps of a few test clips (docs/report.md).

    python tools/report.py OUTPUT_DIR [--out report.html] [--split test]
                           [--cfg CONFIG.yaml] [--checkpoint CKPT.pyth] [--no-attention] [--opts KEY VALUE ...]

The attention maps need the model: it is built from OUTPUT_DIR/config.yaml (or --cfg, with --opts KEY
VALUE overrides) with the weights of the newest checkpoint of the run (or --checkpoint), on the
CPU. That section is a note when the model has no nonlocal block or the test videos are not
readable here. ``tools/run_net.py`` writes OUTPUT_DIR/report.html at the end of every test.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vidnl.cli import cli_entry  # noqa: E402



def _default_split(output_dir: str) -> str:
    """TEST.SPLIT of the run's config.yaml, else ``test``."""
    path = os.path.join(output_dir, "config.yaml")
    try:
        import yaml

        with open(path) as f:
            split = ((yaml.safe_load(f) or {}).get("TEST") or {}).get("SPLIT")
        return str(split) if split else "test"
    except (OSError, ValueError, AttributeError, ImportError):
        return "test"


@cli_entry(tool="vidnl")
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output_dir", help="the run's OUTPUT_DIR (holds log.txt)")
    p.add_argument("--out", default=None, help="HTML path (default OUTPUT_DIR/report.html)")
    p.add_argument("--split", default=None, help="which predictions_<split>.json (default: TEST.SPLIT of the run)")
    p.add_argument("--cfg", dest="cfg_file", default=None, help="config of the model (default OUTPUT_DIR/config.yaml)")
    p.add_argument("--checkpoint", default=None, help="weights (default: the newest checkpoint of the run)")
    p.add_argument("--no-attention", action="store_true", help="skip the attention maps (no model is built)")
    p.add_argument("--worst", type=int, default=10, help="how many worst-classified videos to list")
    p.add_argument("--clips", type=int, default=2, help="how many test clips get attention maps")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE overrides of the config (last)")
    a = p.parse_args(argv)
    from vidnl.engine.report import ReportError, attention_source_from_run, read_log, write_report

    if not os.path.isdir(a.output_dir):
        raise ReportError(f"{a.output_dir} is not a folder: give the OUTPUT_DIR of a vidnl run")
    read_log(os.path.join(a.output_dir, "log.txt"))  # the one thing a report cannot do without
    if a.worst < 0 or a.clips < 0:
        raise ReportError(f"--worst and --clips must be >= 0, got {a.worst} and {a.clips}")
    start = time.time()
    split = a.split or _default_split(a.output_dir)
    attention = None
    if a.no_attention or a.clips == 0:
        attention = "Attention maps not rendered (--no-attention)."
    else:
        attention = attention_source_from_run(a.output_dir, split, a.cfg_file, a.checkpoint, a.opts)
        if not isinstance(attention, str):
            attention.num_clips = a.clips
    out = write_report(a.output_dir, a.out, split=split, attention=attention, worst=a.worst)
    print(f"{out} ({time.time() - start:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
