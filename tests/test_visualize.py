import os
import sys

import numpy as np
import pytest
import torch

from vidnl.config import load_config
from vidnl.models import build_model

from conftest import ROOT, synth, write_video

sys.path.insert(0, os.path.join(ROOT, "tools"))
import visualize_attention  # noqa: E402

OPTS = ["MODEL.ARCH", "i3d", "RESNET.DEPTH", "18", "RESNET.BASE_WIDTH", "4", "MODEL.NUM_CLASSES", "2",
        "DATA.NUM_FRAMES", "4", "DATA.SAMPLING_RATE", "2", "DATA.TEST_CROP_SIZE", "64",
        "DATA.TRAIN_JITTER_SCALES", "[64, 64]", "DATA.TRAIN_CROP_SIZE", "64", "RESNET.TEMPORAL_POOL", "False"]


@pytest.mark.parametrize("block_type,pool,mode", [("nl", "[1, 2, 2]", "spacetime"), ("snl", "[]", "spacetime"),
                                                  ("snl", "[]", "space"), ("a2", "[]", "spacetime"),
                                                  ("cc", "[]", "spacetime")])
def test_attention_png_for_a_query(tmp_path, block_type, pool, mode):
    torch.manual_seed(0)  # an SNL query with zero degree has an all-zero row (by definition): fix the weights
    video = write_video(str(tmp_path / "v.mp4"), synth.render_video(np.random.default_rng(0), 0, 12, 64, 80))
    opts = OPTS + ["NONLOCAL.TYPE", block_type, "NONLOCAL.LOCATION", "[[], [1], [], []]", "NONLOCAL.POOL", pool,
                   "NONLOCAL.MODE", mode]
    model = build_model(load_config(None, opts))
    ckpt = tmp_path / "model.pyth"
    torch.save({"model_state": model.state_dict()}, ckpt)
    out = tmp_path / "att"
    rc = visualize_attention.main(["--cfg", os.path.join(ROOT, "configs", "Synthetic", "I3D_R18_SNL.yaml"),
                                   "--checkpoint", str(ckpt), "--video", video, "--queries", "1:0.5,0.5", "3:0.2,0.8",
                                   "--out", str(out)] + opts)
    assert rc == 0
    png = out / "attention_res3_nonlocal_blocks_1.png"
    assert png.exists() and png.stat().st_size > 5000
    from PIL import Image

    assert Image.open(png).size == (512, 272)  # 4 frames x 2 queries, 1.6 x 1.7 inches each at 80 dpi
    maps = np.load(str(png)[:-4] + ".npz")
    m0 = maps["query_0"]
    assert m0.shape[0] == 4 and (m0 >= 0).all() and m0.sum() > 0  # T = 4 frames at res3 (no temporal pool)
    if block_type in ("nl", "a2", "cc"):  # rows of these affinities sum to 1
        assert m0.sum() == pytest.approx(1.0, abs=1e-5)
    if mode == "space":  # one graph per frame: only the query's frame has weight
        assert (m0.sum((1, 2)) > 0).tolist() == [False, True, False, False]


def test_map_equals_the_dense_affinity_row(tmp_path):
    torch.manual_seed(0)
    video = write_video(str(tmp_path / "v.mp4"), synth.render_video(np.random.default_rng(1), 2, 12, 64, 80))
    cfg = load_config(None, OPTS + ["NONLOCAL.TYPE", "snl", "NONLOCAL.LOCATION", "[[], [1], [], []]"])
    model = build_model(cfg).eval()
    clip = visualize_attention.load_clip(cfg, video)
    maps = visualize_attention.attention_maps(model, "res3.nonlocal_blocks.1", clip, [(2, 0.5, 0.25)])
    x = {}
    block = model.res3.nonlocal_blocks["1"]
    block.register_forward_pre_hook(lambda m, a: x.setdefault("x", a[0]))
    with torch.no_grad():
        model(clip)
        dense = block.affinity(x["x"])[0]  # N×N, built explicitly
    t, h, w = x["x"].shape[2:]
    node = (2 * h + h // 2) * w + w // 4
    np.testing.assert_allclose(maps[0]["map"].reshape(-1), dense[node].numpy(), rtol=1e-5, atol=1e-7)


def test_bad_block_name_is_a_clear_error(tmp_path, capsys):
    video = write_video(str(tmp_path / "v.mp4"), synth.render_video(np.random.default_rng(0), 0, 8, 64, 64))
    rc = visualize_attention.main(["--cfg", os.path.join(ROOT, "configs", "Synthetic", "I3D_R18_SNL.yaml"),
                                   "--video", video, "--block", "res9.nope"] + OPTS +
                                  ["NONLOCAL.LOCATION", "[[], [1], [], []]"])
    assert rc == 2 and "res3.nonlocal_blocks.1" in capsys.readouterr().err
