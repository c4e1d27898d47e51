#!/usr/bin/env python
"""Make docs/images/timeline_demo.png and docs/images/render_demo_frame.png (docs/predict.md,
"Rendering") with the demo model of ``make demo``.

The video: 3 s of the synthetic motion class "right" followed by 3 s of "up" (two clips of
data_prep/make_synthetic_motion.py, 320×240 at 25 fps, concatenated: the true boundary is at
frame 75, 3.0 s). Every window of the model's clip (8 frames, 2 apart: 15 frames) every 5 frames
is scored (``vidnl.long_video.iter_windows``, the test path's single view), the attention of
the SNL block of each window is computed (``window_heatmaps``: of the query point ``--query``,
else the block's mean attention) and both are drawn (``render_video``, ``plot_timeline``); the
saved frame is frame 110, inside "up". The pictures in docs/images were made with:

    make demo   # trains output/synthetic_i3d_r18_snl (about a minute on 2 CPU cores)
    python docs/images/make_render_demo.py --query 0.5 0.5 0.5 [--weights W.pyth] [--out docs/images]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from data_prep import make_synthetic_motion as synth  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=os.path.join(ROOT, "output/synthetic_i3d_r18_snl/checkpoints/"
                                                           "checkpoint_epoch_00006.pyth"))
    p.add_argument("--cfg", default=os.path.join(ROOT, "configs/Synthetic/I3D_R18_SNL.yaml"))
    p.add_argument("--out", default=os.path.join(ROOT, "docs/images"))
    p.add_argument("--frame", type=int, default=110, help="the rendered frame saved as the picture")
    p.add_argument("--query", type=float, nargs=3, default=None, metavar=("T", "Y", "X"),
                   help="attention of this query point (fractions of the clip); default: the mean attention")
    a = p.parse_args()

    from vidnl.config import load_config
    from vidnl.models import build_model
    from vidnl.models.weights import load_weights

    cfg = load_config(a.cfg, [])
    names = [synth.DIRECTIONS[i][0] for i in range(cfg.MODEL.NUM_CLASSES)]
    model = build_model(cfg).eval()
    load_weights(model, a.weights, fmt=cfg.MODEL.WEIGHTS_FORMAT, inflate=cfg.MODEL.INFLATE)
    with tempfile.TemporaryDirectory(prefix="vidnl_render_demo_") as work:
        return _run(a, cfg, model, names, work)


def _run(a, cfg, model, names, work) -> int:
    from vidnl.data.model_input import normalize_pixels
    from vidnl.long_video import iter_windows
    from vidnl.render import plot_timeline, render_video, window_heatmaps

    fps, stride, d = 25, 5, cfg.DATA
    rng = np.random.default_rng(7)
    frames = np.concatenate([synth.render_video(rng, label, 3 * fps, 240, 320) for label in (0, 3)])
    video = os.path.join(work, "right_then_up.mp4")
    synth.write_mp4(video, frames, fps)

    timeline, heatmaps = [], []
    span = (d.NUM_FRAMES - 1) * d.SAMPLING_RATE + 1
    for batch in iter_windows(video, num_frames=d.NUM_FRAMES, sampling_rate=d.SAMPLING_RATE, stride_frames=stride,
                              short_side=d.TEST_CROP_SIZE, crop_size=d.TEST_CROP_SIZE, backend="pyav"):
        with torch.no_grad():
            probs = torch.softmax(model(normalize_pixels(batch.clips, d.MEAN, d.STD)), -1).numpy()
        heatmaps += window_heatmaps(model, batch.clips, mean=d.MEAN, std=d.STD, query=a.query)
        for s, pr in zip(batch.starts.tolist(), probs):
            order = np.argsort(-pr)
            timeline.append({"window": len(timeline), "start_frame": s, "end_frame": s + span - 1,
                             "start": s / fps, "end": (s + span) / fps,
                             "topk": [{"index": int(c), "name": names[c], "prob": float(pr[c])} for c in order[:3]],
                             "probs": pr.tolist()})
    top = [r["topk"][0]["index"] for r in timeline]
    switch = next(i for i in range(1, len(top)) if top[i] != top[i - 1])
    print(f"{len(timeline)} windows; the top class changes at window {switch} (frames {timeline[switch]['start_frame']}"
          f"-{timeline[switch]['end_frame']}; the true boundary is frame {3 * fps})")
    segments = []  # the demo's own merge, for the picture: runs of the same top class, cut between window centres
    centres = [(r["start"] + r["end"]) / 2 for r in timeline]
    for i, r in enumerate(timeline):
        c = r["topk"][0]
        if segments and segments[-1]["index"] == c["index"]:
            segments[-1]["end"] = r["end"]
        else:
            if segments:
                segments[-1]["end"] = (centres[i - 1] + centres[i]) / 2
            segments.append({"index": c["index"], "name": c["name"], "end": r["end"],
                             "start": (centres[i - 1] + centres[i]) / 2 if segments else r["start"]})
    os.makedirs(a.out, exist_ok=True)
    plot_timeline(timeline, os.path.join(a.out, "timeline_demo.png"), top_classes=4, segments=segments,
                  title="demo model on 3 s 'right' then 3 s 'up' (windows of 15 frames every 5)",
                  width_px=800, height_px=260)
    rendered = os.path.join(work, "rendered.mp4")
    info = render_video(video, timeline, rendered, topk=3, heatmaps=heatmaps,
                        crop=(d.TEST_CROP_SIZE, d.TEST_CROP_SIZE))
    print(f"rendered {info}")
    import av

    with av.open(rendered) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i == a.frame:
                f.to_image().save(os.path.join(a.out, "render_demo_frame.png"), optimize=True)
                break
    print(f"wrote {a.out}/timeline_demo.png and {a.out}/render_demo_frame.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
