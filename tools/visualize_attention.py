#!/usr/bin/env python
"""Show what a nonlocal block attends to: for chosen query positions, the block's affinity row
over every frame of a clip, overlaid on the frames and saved as a PNG grid (Zhu et al. 2021
(SNL), Fig. 3; Wang et al. 2018 (NL), Fig. 3).

    python tools/visualize_attention.py --cfg configs/UCF101/I3D_R50_SNL.yaml \\
        --checkpoint out/ucf/checkpoints/checkpoint_epoch_00100.pyth --video v_Archery_g01_c01.avi \\
        --queries 0:0.5,0.5 4:0.3,0.7 [--block res4.nonlocal_blocks.4] [--out attention/]

A query ``t:y,x`` is frame t of the clip (0-based) and a point given as fractions of the frame
height and width. One row of the affinity is computed directly (O(N), never the N×N matrix),
so it works for the fast forms and for large graphs. Works for every block type: nl, ns, snl,
gsnl, a2, cc, and cgnl, whose nodes are (position, channel) pairs: its map is the affinity summed
over the channel pairs of each position pair (``CGNL.affinity_row``). Each row of the grid (one
query) has a colorbar giving its affinity scale. The computation and the figure are
:mod:`vidnl.engine.attention` (shared with the run report, ``tools/report.py``).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vidnl.cli import cli_entry  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from vidnl.config import load_config  # noqa: E402
from vidnl.engine.attention import attention_maps, render  # noqa: E402,F401 (attention_maps: public here too)
from vidnl.errors import VidnlUserError  # noqa: E402


def parse_query(text: str) -> tuple[int, float, float]:
    try:
        t, yx = text.split(":")
        y, x = (float(v) for v in yx.split(","))
        if not (0 <= y <= 1 and 0 <= x <= 1):
            raise ValueError
        return int(t), y, x
    except ValueError:
        raise argparse.ArgumentTypeError(f"query must look like 't:y,x' with y, x in [0, 1], got {text!r}") from None


def load_clip(cfg, video: str) -> torch.Tensor:
    """One centred clip and crop of ``video`` as the model sees it: 1×C×T×H×W."""
    from vidnl.data.datasets.video_csv import ClipConfig, VideoCSVDataset, VideoRecord

    d = cfg.DATA
    clip = ClipConfig(num_frames=d.NUM_FRAMES, sampling_rate=d.SAMPLING_RATE, short_video_mode=d.SHORT_VIDEO_MODE,
                      test_crop_size=d.TEST_CROP_SIZE, num_ensemble_views=1, num_spatial_crops=1, mean=list(d.MEAN),
                      std=list(d.STD), backend=d.DECODING_BACKEND)
    dataset = VideoCSVDataset([VideoRecord(video, 0)], "test", clip)
    item = dataset[0]
    if item["inputs"] is None:
        raise VidnlUserError(f"cannot decode {video}: {item['failures'][0][1]}")
    return dataset.normalizer(item["inputs"][:1])


@cli_entry(tool="vidnl")
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", dest="cfg_file", required=True)
    p.add_argument("--checkpoint", default="", help="weights (default: the model as configured)")
    p.add_argument("--video", required=True)
    p.add_argument("--queries", nargs="+", type=parse_query, default=[parse_query("0:0.5,0.5")])
    p.add_argument("--block", default="", help="module name of the block (default: every nonlocal block)")
    p.add_argument("--out", default="attention")
    p.add_argument("overrides", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    cfg = load_config(a.cfg_file, a.overrides)
    from vidnl.models.weights import load_weights
    from vidnl.models import build_model
    from vidnl.engine.attention import nonlocal_block_names

    model = build_model(cfg).eval()
    if a.checkpoint:
        load_weights(model, a.checkpoint, fmt=cfg.MODEL.WEIGHTS_FORMAT, inflate=cfg.MODEL.INFLATE)
    blocks = nonlocal_block_names(model)
    if a.block:
        if a.block not in blocks:
            raise VidnlUserError(f"--block {a.block!r} is not a nonlocal block of this model; it has {blocks}")
        blocks = [a.block]
    if not blocks:
        raise VidnlUserError("the model has no nonlocal block (set NONLOCAL.LOCATION)")
    modules = dict(model.named_modules())
    clip = load_clip(cfg, a.video)
    for q in a.queries:
        if not 0 <= q[0] < clip.shape[2]:
            raise VidnlUserError(f"query frame {q[0]} is outside the clip's {clip.shape[2]} frames")
    os.makedirs(a.out, exist_ok=True)
    for name in blocks:
        maps = attention_maps(model, name, clip, a.queries)
        path = os.path.join(a.out, f"attention_{name.replace('.', '_')}.png")
        render(clip, maps, list(cfg.DATA.MEAN), list(cfg.DATA.STD), path,
               f"{type(modules[name]).__name__} {name}: affinity rows of {len(maps)} queries",
               row_labels=[f"query {t}:{y:g},{x:g}" for t, y, x in a.queries])
        np.savez_compressed(path[:-4] + ".npz", **{f"query_{i}": m["map"] for i, m in enumerate(maps)})
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
