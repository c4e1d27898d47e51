#!/usr/bin/env python
"""Plot a run's training curves from the ``json_stats`` lines of OUTPUT_DIR/log.txt: loss (per
logged iteration and per epoch), accuracy (training clips, validation videos) and learning
rate, as one PNG.

    python tools/plot_training.py output/synthetic_i3d_r18_snl [--out curves.png]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vidnl.cli import run_cli  # noqa: E402


def read_stats(log_path: str) -> dict[str, list[dict]]:
    """json_stats records of a log, grouped by their ``_type``."""
    if not os.path.isfile(log_path):
        raise FileNotFoundError(f"{log_path} not found (is this a vidnl OUTPUT_DIR?)")
    groups: dict[str, list[dict]] = {}
    with open(log_path) as f:
        for lineno, line in enumerate(f, 1):
            if "json_stats: " not in line:
                continue
            try:
                rec = json.loads(line.split("json_stats: ", 1)[1])
            except json.JSONDecodeError as e:
                raise ValueError(f"{log_path}:{lineno}: malformed json_stats line ({e})") from None
            groups.setdefault(rec.get("_type", "?"), []).append(rec)
    return groups


def plot(groups: dict[str, list[dict]], out: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    it = groups.get("train_iter", [])
    ep = groups.get("train_epoch", [])
    val = groups.get("val_epoch", [])
    fig, (ax_loss, ax_acc, ax_lr) = plt.subplots(1, 3, figsize=(13, 3.6))
    if it:
        x = [r["epoch"] - 1 + r["iter"] / r["iters"] for r in it]
        ax_loss.plot(x, [r["loss"] for r in it], lw=0.8, alpha=0.6, label="iteration")
        ax_lr.plot(x, [r["lr"] for r in it], lw=1.2)
    if ep:
        ax_loss.plot([r["epoch"] for r in ep], [r["loss"] for r in ep], "o-", label="epoch mean")
        ax_acc.plot([r["epoch"] for r in ep], [r["top1_acc"] for r in ep], "o-", label="train clips top-1")
        if not it:
            ax_lr.plot([r["epoch"] for r in ep], [r["lr"] for r in ep], "o-")
    if val:
        ax_acc.plot([r["epoch"] for r in val], [r["video_top1"] for r in val], "s-", label="val top-1")
    ax_loss.set(title="loss", xlabel="epoch")
    ax_acc.set(title="accuracy (%)", xlabel="epoch", ylim=(0, 100))
    ax_lr.set(title="learning rate", xlabel="epoch")
    for ax in (ax_loss, ax_acc):
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output_dir")
    p.add_argument("--out", default=None, help="PNG path (default OUTPUT_DIR/training_curves.png)")
    a = p.parse_args(argv)
    try:
        groups = read_stats(os.path.join(a.output_dir, "log.txt"))
    except (FileNotFoundError, ValueError) as e:
        print(f"vidnl: error: {e}", file=sys.stderr)
        return 2
    if not groups.get("train_epoch") and not groups.get("train_iter"):
        print(f"vidnl: error: no training json_stats in {a.output_dir}/log.txt", file=sys.stderr)
        return 2
    out = a.out or os.path.join(a.output_dir, "training_curves.png")
    plot(groups, out, os.path.abspath(a.output_dir))
    print(f"{out}: {len(groups.get('train_epoch', []))} epochs, {len(groups.get('val_epoch', []))} validations")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
