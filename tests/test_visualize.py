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
                                                  ("cc", "[]", "spacetime"), ("cgnl", "[1, 2, 2]", "spacetime")])
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

    # 4 frames x 2 queries: (1.6 x 4 + 0.8 for the colorbars) x (1.7 x 2 + 0.2) inches at 80 dpi
    assert Image.open(png).size == (576, 288)
    maps = np.load(str(png)[:-4] + ".npz")
    m0 = maps["query_0"]
    assert m0.shape[0] == 4 and np.isfinite(m0).all()  # T = 4 frames at res3 (no temporal pool)
    if block_type == "cgnl":  # dot kernel: signed; with POOL the key grid is halved in space
        assert m0.shape[1:] == tuple(maps["query_1"].shape[1:]) and np.abs(m0).sum() > 0
    else:
        assert (m0 >= 0).all() and m0.sum() > 0
    if block_type in ("nl", "a2", "cc"):  # rows of these affinities sum to 1
        assert m0.sum() == pytest.approx(1.0, abs=1e-5)
    if mode == "space":  # one graph per frame: only the query's frame has weight
        assert (m0.sum((1, 2)) > 0).tolist() == [False, True, False, False]


def test_every_row_has_a_colorbar_on_its_own_scale():
    from vidnl.engine.attention import attention_figure

    clip = torch.zeros(1, 3, 4, 16, 16)
    positive = {"query": (1, 0.5, 0.5), "map": np.linspace(0, 2, 4 * 2 * 2, dtype=np.float32).reshape(4, 2, 2)}
    signed = {"query": (2, 0.2, 0.8), "map": np.linspace(-3, 1, 4 * 4 * 4, dtype=np.float32).reshape(4, 4, 4)}
    fig = attention_figure(clip, [positive, signed], [0.5] * 3, [0.25] * 3, "t", row_labels=["a", "b"])
    overlays = [ax.images[1] for ax in fig.axes if len(ax.images) == 2]
    assert len(overlays) == 2 and all(im.colorbar is not None for im in overlays)
    assert overlays[0].colorbar.vmin == 0 and overlays[0].colorbar.vmax == pytest.approx(2)
    assert (overlays[1].colorbar.vmin, overlays[1].colorbar.vmax) == pytest.approx((-3, 3))  # centred at 0
    assert {overlays[0].colorbar.ax, overlays[1].colorbar.ax} <= set(fig.axes)
    import matplotlib.pyplot as plt

    plt.close(fig)


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


@pytest.mark.parametrize("opts", [{}, {"kernel": "embedded_gaussian", "order": 3, "groups": 2},
                                  {"kernel": "gaussian", "order": 2, "groups": 4}], ids=["dot", "eg-g2", "gauss-g4"])
@pytest.mark.parametrize("pool", [None, (1, 2, 2)])
def test_cgnl_position_map_is_the_block_sum_of_its_channel_affinity(opts, pool):
    """CGNL's map over key positions = its explicit (position, channel) affinity with each
    Cg×Cg block (query position, key position) summed, per group, in float64."""
    from vidnl.nonlocal_blocks import CGNL
    from vidnl.nonlocal_blocks import functional as NF
    from vidnl.nonlocal_blocks.blocks import to_nodes

    torch.manual_seed(0)
    block = CGNL(8, 4, pool_size=pool, **opts).double().eval()
    x = torch.randn(2, 8, 2, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        theta = to_nodes(block.theta(x), "spacetime")  # G×N×Cs
        phi = to_nodes(block.pooled(block.phi(x)), "spacetime")  # G×M×Cs
        coef = NF.cgnl_taylor_coefficients(block.kernel, block.order, block.gamma)
        cg = 4 // block.groups
        for q in (0, 13, 31):
            expected = torch.zeros(2, phi.shape[1], dtype=torch.float64)
            for k in range(block.groups):
                a, b = theta[:, q, k * cg:(k + 1) * cg], phi[:, :, k * cg:(k + 1) * cg]
                prod = a[:, None, :, None] * b[:, :, None, :]  # G×M×cg×cg: every channel pair
                m = sum(c * prod ** p for p, c in enumerate(coef) if c)
                if block.kernel == "gaussian":
                    m = m * torch.exp(-block.gamma * a * a)[:, None, :, None] * torch.exp(-block.gamma * b * b)[:, :, None]
                expected += m.sum((-1, -2))
            row = block.affinity_row(x, q)
            assert row.shape == expected.shape and not torch.allclose(row[0], row[1])
            torch.testing.assert_close(row, expected, rtol=0, atol=1e-10)


def test_cc_row_equals_the_dense_masked_row():
    from vidnl.nonlocal_blocks import CC
    from vidnl.nonlocal_blocks import functional as NF
    from vidnl.nonlocal_blocks.blocks import to_nodes

    torch.manual_seed(0)
    block = CC(8, 4).double().eval()
    x = torch.randn(2, 8, 3, 4, 5, dtype=torch.float64)
    with torch.no_grad():
        th, ph = to_nodes(block.theta(x), "spacetime"), to_nodes(block.phi(x), "spacetime")
        logits = (th @ ph.transpose(-1, -2)).masked_fill(~NF.criss_cross_mask(3, 4, 5), float("-inf"))
        dense = torch.softmax(logits, -1)
        for q in (0, 17, 59):
            torch.testing.assert_close(block.affinity_row(x, q), dense[:, q], rtol=0, atol=1e-12)
