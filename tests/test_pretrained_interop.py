"""The published networks exactly, and other codebases' checkpoints load into them.

- Stage output sizes of the ResNet presets against Wang et al. 2018 (NL) Table 1 and the released
  8×8 layout.
- pytorchvideo 0.1.5 (an installed peer): its hub ResNets (random weights) saved in their hub
  layout load through vidnl's loading path and give the same logits; its NonLocal equals vidnl's
  NL with the official style.
- Files written by these tests in the PySlowFast, Caffe2 .pkl, mmaction2, official SNL and
  official CGNL layouts (key names written out here, independently of vidnl's key maps) load
  and give the logits of the model they were written from; the official SNL and CGNL blocks are
  re-implemented here from their code's formulas and compared with vidnl's official style.
- Strict loading: foreign or missing keys are an error naming the file; unsafe pickles refused.
"""

from __future__ import annotations

import math
import os
import pickle
import re
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

from vidnl.models.weights import CheckpointError, load_checkpoint_file, load_weights
from vidnl.models.resnet import VideoResNet, video_resnet
from vidnl.nonlocal_blocks import build_nonlocal_block, insert_nonlocal

from conftest import ROOT as ROOT_DIR  # noqa: E402

sys.path.insert(0, os.path.join(ROOT_DIR, "benchmarks"))
from peers import randomise_norms  # noqa: E402  (the benchmark's: non-trivial norms, same for both sides)

pytorchvideo = pytest.importorskip("pytorchvideo.models.hub")


def _stage_sizes(model: VideoResNet, x: torch.Tensor) -> dict[str, tuple[int, int, int]]:
    sizes = {}
    hooks = [mod.register_forward_hook(lambda m, i, o, n=name: sizes.__setitem__(n, tuple(o.shape[2:])))
             for name, mod in [("conv1", model.stem[0]), ("pool1", model.stem), ("res2", model.res2),
                               ("pool2", model.pool2), ("res3", model.res3), ("res4", model.res4),
                               ("res5", model.res5)]]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return sizes


# Wang et al. 2018 (NL) Table 1 (output sizes T×H×W for a 32×224² input)
TABLE1 = {"conv1": (16, 112, 112), "pool1": (8, 56, 56), "res2": (8, 56, 56), "pool2": (4, 56, 56),
          "res3": (4, 28, 28), "res4": (4, 14, 14), "res5": (4, 7, 7)}
# the released 8×8 models (PySlowFast / pytorchvideo) for an 8×224² input
RELEASED_8X8 = {"conv1": (8, 112, 112), "pool1": (8, 56, 56), "res2": (8, 56, 56), "pool2": (4, 56, 56),
                "res3": (4, 28, 28), "res4": (4, 14, 14), "res5": (4, 7, 7)}
SLOW_8X8 = {"conv1": (8, 112, 112), "pool1": (8, 56, 56), "res2": (8, 56, 56), "pool2": (8, 56, 56),
            "res3": (8, 28, 28), "res4": (8, 14, 14), "res5": (8, 7, 7)}


@pytest.mark.parametrize("preset,frames,expected", [
    ("c2d_table1", 32, TABLE1), ("i3d_table1", 32, TABLE1), ("i3d3x3x3_table1", 32, TABLE1),
    ("c2d_8x8", 8, RELEASED_8X8), ("i3d_8x8", 8, RELEASED_8X8), ("slow_8x8", 8, SLOW_8X8)])
def test_preset_stage_sizes_match_the_sources(preset, frames, expected):
    model = video_resnet(preset, depth=50, base_width=2, num_classes=3)
    assert _stage_sizes(model, torch.zeros(1, 3, frames, 224, 224)) == expected


def test_i3d_3x3x3_inflates_the_3x3_and_table1_i3d_the_1x1():
    a, b = video_resnet("i3d_table1", base_width=4), video_resnet("i3d3x3x3_table1", base_width=4)
    assert a.res3.blocks[0].conv1.kernel_size == (3, 1, 1) and a.res3.blocks[0].conv2.kernel_size == (1, 3, 3)
    assert b.res3.blocks[0].conv1.kernel_size == (1, 1, 1) and b.res3.blocks[0].conv2.kernel_size == (3, 3, 3)
    assert b.res3.blocks[1].conv2.kernel_size == (1, 3, 3)
    assert a.stem[0].kernel_size == (5, 7, 7) and a.stem[0].stride == (2, 2, 2)


def _save_pyth(path, state: dict, **extra) -> str:
    torch.save({"model_state": state, "epoch": 196, **extra}, path)
    return str(path)


@pytest.mark.parametrize("hub_name,preset", [("i3d_r50", "i3d_8x8"), ("c2d_r50", "c2d_8x8"),
                                             ("slow_r50", "slow_8x8")])
def test_pytorchvideo_hub_checkpoints_load_and_give_the_same_logits(tmp_path, hub_name, preset):
    frames, size = 8, 64
    t_out = 8 if preset == "slow_8x8" else 4
    kw = dict(model_num_class=5, stem_dim_out=8, head_pool_kernel_size=(t_out, size // 32, size // 32))
    if hub_name == "slow_r50":  # the hub function fixes the head pool for 224²: its other arguments here
        from pytorchvideo.models.resnet import create_resnet
        theirs = create_resnet(stem_conv_kernel_size=(1, 7, 7), model_depth=50, **kw)
    else:
        theirs = getattr(pytorchvideo, hub_name)(pretrained=False, **kw)
    randomise_norms(theirs, 1)
    path = _save_pyth(tmp_path / f"{hub_name}.pyth", theirs.state_dict())
    ours = video_resnet(preset, depth=50, base_width=8, num_classes=5, dropout=0.0)
    report = load_weights(ours, path, fmt="auto")
    assert not report["missing"] and not report["unexpected"]
    x = torch.randn(2, 3, frames, size, size, dtype=torch.float64)
    theirs, ours = theirs.double().eval(), ours.double().eval()
    with torch.no_grad():
        diff = (theirs(x) - ours(x)).abs().max().item()
    assert diff < 1e-10
    with torch.no_grad():
        ref = theirs.float()(x.float())
        diff32 = (ref - ours.float()(x.float())).abs().max().item()
    assert diff32 < 1e-5 * max(1.0, ref.abs().max().item())  # float32: relative to the logit scale


@pytest.mark.parametrize("instantiation,pool", [("softmax", (1, 1, 1)), ("softmax", (1, 2, 2)),
                                                ("dot_product", (1, 1, 1)), ("dot_product", (1, 2, 2))])
def test_pytorchvideo_nonlocal_equals_official_style_nl(instantiation, pool):
    from pytorchvideo.layers.nonlocal_net import create_nonlocal

    torch.manual_seed(0)
    theirs = create_nonlocal(dim_in=16, dim_inner=8, pool_size=pool, instantiation=instantiation)
    randomise_norms(theirs, 2)
    ours = build_nonlocal_block("nl", 16, dim_inner=8, style="official", pool_size=list(pool),
                                kernel="embedded_gaussian" if instantiation == "softmax" else "dot",
                                implementation="fast")
    names = {"conv_theta": "theta", "conv_phi": "phi", "conv_g": "g", "conv_out": "out_proj.0", "norm": "bn"}
    state = {}
    for k, v in theirs.state_dict().items():
        head, rest = k.split(".", 1)
        state[f"{names[head]}.{rest}"] = v
    ours.load_state_dict(state)
    x = torch.randn(2, 16, 4, 7, 6, dtype=torch.float64)  # odd sizes: floor pooling must match
    theirs, ours = theirs.double().eval(), ours.double().eval()
    with torch.no_grad():
        assert (theirs(x) - ours(x)).abs().max().item() < 1e-10
    ours.implementation = "dense"
    with torch.no_grad():
        assert (theirs(x) - ours(x)).abs().max().item() < 1e-10


# ---------------------------------------------------------------------------------------------
# Layouts written by this test (names from the peers' code, spelled out independently here)
# ---------------------------------------------------------------------------------------------
def _i3d_nl_model(**kw) -> VideoResNet:
    model = video_resnet("i3d_8x8", depth=50, base_width=4, num_classes=7, dropout=0.0, **kw)
    insert_nonlocal(model.stages, [[], [1, 3], [1, 3, 5], []],
                    lambda c: build_nonlocal_block("nl", c, style="official", pool_size=[1, 2, 2]))
    randomise_norms(model, 3)
    return model.double().eval()


def _slowfast_name(k: str) -> str:
    m = re.match(r"stem\.([01])\.(.+)", k)
    if m:
        return f"s1.pathway0_stem.{'conv' if m.group(1) == '0' else 'bn'}.{m.group(2)}"
    m = re.match(r"res(\d)\.blocks\.(\d+)\.(conv|bn)([123])\.(.+)", k)
    if m:
        letter = "abc"[int(m.group(4)) - 1]
        return f"s{m.group(1)}.pathway0_res{m.group(2)}.branch2.{letter}{'_bn' if m.group(3) == 'bn' else ''}.{m.group(5)}"
    m = re.match(r"res(\d)\.blocks\.(\d+)\.downsample\.([01])\.(.+)", k)
    if m:
        return f"s{m.group(1)}.pathway0_res{m.group(2)}.branch1{'_bn' if m.group(3) == '1' else ''}.{m.group(4)}"
    m = re.match(r"res(\d)\.nonlocal_blocks\.(\d+)\.(theta|phi|g|out_proj\.0|bn)\.(.+)", k)
    if m:
        part = {"theta": "conv_theta", "phi": "conv_phi", "g": "conv_g", "out_proj.0": "conv_out", "bn": "bn"}
        return f"s{m.group(1)}.pathway0_nonlocal{m.group(2)}.{part[m.group(3)]}.{m.group(4)}"
    return {"head.fc.weight": "head.projection.weight", "head.fc.bias": "head.projection.bias"}[k]


def _caffe2_name(k: str) -> str | None:
    bn = {"weight": "s", "bias": "b", "running_mean": "rm", "running_var": "riv"}
    m = re.match(r"stem\.0\.weight", k)
    if m:
        return "conv1_w"
    m = re.match(r"stem\.1\.(\w+)", k)
    if m:
        return f"res_conv1_bn_{bn[m.group(1)]}" if m.group(1) in bn else None
    m = re.match(r"res(\d)\.blocks\.(\d+)\.conv([123])\.weight", k)
    if m:
        return f"res{m.group(1)}_{m.group(2)}_branch2{'abc'[int(m.group(3)) - 1]}_w"
    m = re.match(r"res(\d)\.blocks\.(\d+)\.bn([123])\.(\w+)", k)
    if m:
        return (f"res{m.group(1)}_{m.group(2)}_branch2{'abc'[int(m.group(3)) - 1]}_bn_{bn[m.group(4)]}"
                if m.group(4) in bn else None)
    m = re.match(r"res(\d)\.blocks\.(\d+)\.downsample\.0\.weight", k)
    if m:
        return f"res{m.group(1)}_{m.group(2)}_branch1_w"
    m = re.match(r"res(\d)\.blocks\.(\d+)\.downsample\.1\.(\w+)", k)
    if m:
        return f"res{m.group(1)}_{m.group(2)}_branch1_bn_{bn[m.group(3)]}" if m.group(3) in bn else None
    m = re.match(r"res(\d)\.nonlocal_blocks\.(\d+)\.(theta|phi|g|out_proj\.0)\.(weight|bias)", k)
    if m:
        part = m.group(3).replace("out_proj.0", "out")
        return f"nonlocal_conv{m.group(1)}_{m.group(2)}_{part}_{'w' if m.group(4) == 'weight' else 'b'}"
    m = re.match(r"res(\d)\.nonlocal_blocks\.(\d+)\.bn\.(\w+)", k)
    if m:
        return f"nonlocal_conv{m.group(1)}_{m.group(2)}_bn_{bn[m.group(3)]}" if m.group(3) in bn else None
    return {"head.fc.weight": "pred_w", "head.fc.bias": "pred_b"}[k]


def _mmaction2_name(k: str) -> str | None:
    m = re.match(r"stem\.([01])\.(.+)", k)
    if m:
        return f"backbone.conv1.{'conv' if m.group(1) == '0' else 'bn'}.{m.group(2)}"
    m = re.match(r"res(\d)\.blocks\.(\d+)\.(conv|bn)([123])\.(.+)", k)
    if m:
        return f"backbone.layer{int(m.group(1)) - 1}.{m.group(2)}.conv{m.group(4)}.{m.group(3)}.{m.group(5)}"
    m = re.match(r"res(\d)\.blocks\.(\d+)\.downsample\.([01])\.(.+)", k)
    if m:
        return (f"backbone.layer{int(m.group(1)) - 1}.{m.group(2)}.downsample."
                f"{'conv' if m.group(3) == '0' else 'bn'}.{m.group(4)}")
    m = re.match(r"res(\d)\.nonlocal_blocks\.(\d+)\.(theta|phi|g|out_proj\.0|bn)\.(.+)", k)
    if m:
        if m.group(3) == "out_proj.0" and m.group(4) == "bias":
            return None  # mmcv's conv_out has no bias
        part = {"theta": "theta.conv", "phi": "phi.0.conv", "g": "g.0.conv", "out_proj.0": "conv_out.conv",
                "bn": "conv_out.bn"}[m.group(3)]
        return f"backbone.layer{int(m.group(1)) - 1}.{m.group(2)}.non_local_block.{part}.{m.group(4)}"
    return {"head.fc.weight": "cls_head.fc_cls.weight", "head.fc.bias": "cls_head.fc_cls.bias"}[k]


def _logits(model, seed=5):
    x = torch.randn(2, 3, 8, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(x)


def test_pyslowfast_layout_loads_every_tensor(tmp_path):
    src = _i3d_nl_model()
    path = _save_pyth(tmp_path / "I3D_NLN_8x8_R50.pyth", {_slowfast_name(k): v for k, v in src.state_dict().items()},
                      cfg="TRAIN: ...")
    dst = _i3d_nl_model()
    dst.apply(lambda m: m.reset_parameters() if isinstance(m, nn.Conv3d) else None)
    report = load_weights(dst, path, fmt="auto")
    assert report == {"missing": [], "unexpected": [], "shape_mismatch": [], "skipped": []}
    assert torch.equal(_logits(src), _logits(dst))


def test_caffe2_pickle_with_nonlocal_blobs_loads(tmp_path):
    src = _i3d_nl_model()
    blobs = {"lr": np.array([0.01], np.float32), "model_iter": 400000}
    for k, v in src.state_dict().items():
        name = _caffe2_name(k)
        if name is not None:
            blobs[name] = v.float().numpy()
            if not name.endswith(("_rm", "_riv")):
                blobs[name + "_momentum"] = np.zeros_like(blobs[name])
    path = tmp_path / "i3d_nonlocal_8x8.pkl"
    with open(path, "wb") as f:
        pickle.dump({"blobs": blobs}, f, protocol=2)
    dst = _i3d_nl_model()
    load_weights(dst.float(), str(path), fmt="auto")
    assert (_logits(src.float().double()) - _logits(dst.double())).abs().max() < 1e-4


def test_caffe2_pickle_with_an_object_is_refused(tmp_path):
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"blobs": {"conv1_w": np.zeros(3), "x": CheckpointError("boom")}}, f, protocol=2)
    with pytest.raises(CheckpointError, match="refused.*CheckpointError"):
        load_checkpoint_file(str(path))


def test_mmaction2_layout_loads_with_a_zero_output_bias(tmp_path):
    src = _i3d_nl_model()
    for stage in src.stages:
        for block in stage.nonlocal_blocks.values():
            nn.init.zeros_(block.out_proj[0].bias)
    state = {n: v for k, v in src.state_dict().items() if (n := _mmaction2_name(k)) is not None}
    path = tmp_path / "i3d_nl_mmaction2.pth"
    torch.save({"meta": {"epoch": 100}, "state_dict": state}, path)
    dst = _i3d_nl_model()
    load_weights(dst, str(path), fmt="auto")
    assert torch.equal(_logits(src), _logits(dst))


def test_pytorch_checkpoint_that_does_not_fit_is_an_error_naming_the_file(tmp_path):
    src = _i3d_nl_model()
    state = {_slowfast_name(k): v for k, v in src.state_dict().items() if "nonlocal" not in k}
    path = _save_pyth(tmp_path / "I3D_8x8_R50.pyth", state)
    with pytest.raises(CheckpointError, match=r"I3D_8x8_R50\.pyth.*60 model tensors are not in the file.*"
                                              r"res3\.nonlocal_blocks\.1\."):
        load_weights(_i3d_nl_model(), path, fmt="auto")
    # a backbone without blocks: allowed only when the blocks are named as new
    report = load_weights(_i3d_nl_model(), path, fmt="auto", skip=["*.nonlocal_blocks.*"])
    assert len(report["skipped"]) == 5 * 13  # 4 convs with bias, BN with its 3 buffers
    foreign = tmp_path / "foreign.pyth"
    torch.save({"model_state": {"encoder.weight": torch.zeros(3)}}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pyth.*not in the file"):
        load_weights(_i3d_nl_model(), str(foreign), fmt="auto")


def test_fine_tuning_to_other_classes_skips_only_the_head(tmp_path):
    src = _i3d_nl_model()
    path = _save_pyth(tmp_path / "k400.pyth", {_slowfast_name(k): v for k, v in src.state_dict().items()})
    dst = video_resnet("i3d_8x8", depth=50, base_width=4, num_classes=101)
    insert_nonlocal(dst.stages, [[], [1, 3], [1, 3, 5], []],
                    lambda c: build_nonlocal_block("nl", c, style="official", pool_size=[1, 2, 2]))
    with pytest.raises(CheckpointError, match="other shapes"):
        load_weights(dst, path, fmt="auto")
    report = load_weights(dst, path, fmt="auto", skip=["head.*"])
    assert report["skipped"] == ["head.fc.bias", "head.fc.weight"]
    assert torch.equal(dst.res4.nonlocal_blocks["5"].theta.weight, src.res4.nonlocal_blocks["5"].theta.weight.float())


# ---------------------------------------------------------------------------------------------
# Official SNL and CGNL blocks, written here from their code's formulas (read, not copied)
# ---------------------------------------------------------------------------------------------
class OfficialSNLUnit(nn.Module):
    """SNL_ICCV2021 classification code, one stage: out = x + relu(bn(w_1 G + w_2 Â G)) with
    Â = D^-½ ((M + Mᵀ)/2) D^-½, M = relu(t(x))ᵀ relu(p(x)), G = g(x); 2D, no biases."""

    def __init__(self, c, cs):
        super().__init__()
        self.t, self.p = nn.Conv2d(c, cs, 1, bias=False), nn.Conv2d(c, cs, 1, bias=False)
        self.stages = nn.ModuleList([nn.Module()])
        u = self.stages[0]
        u.g, u.w_1, u.w_2 = nn.Conv2d(c, cs, 1, bias=False), nn.Conv2d(cs, c, 1, bias=False), nn.Conv2d(cs, c, 1, bias=False)
        u.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        b, c, h, w = x.shape
        t = torch.relu(self.t(x)).flatten(2).transpose(1, 2)
        p = torch.relu(self.p(x)).flatten(2)
        a = t @ p
        a = (a + a.transpose(1, 2)) / 2
        d = a.sum(2)
        d = torch.where(d != 0, (1 / d.clamp_min(1e-300)).sqrt(), torch.zeros_like(d))
        a = a * d[:, None, :] * d[:, :, None]
        u = self.stages[0]
        g = u.g(x)
        ag = (a @ g.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(g.shape)
        return x + torch.relu(u.bn(u.w_1(g) + u.w_2(ag)))


class OfficialSpatialCGNL(nn.Module):
    """cgnl-network.pytorch SpatialCGNL (dot) / SpatialCGNLx (Gaussian RBF, Taylor order 3,
    γ = 1e-4, β = e^{-2γ}): per channel group, y = Σ_k α_k (Σ p^k g) t^k; out = x + gn(z(y))."""

    def __init__(self, c, cs, groups, kernel="dot", order=3, gamma=1e-4):
        super().__init__()
        self.t, self.p, self.g = (nn.Conv2d(c, cs, 1, bias=False) for _ in range(3))
        self.z = nn.Conv2d(cs, c, 1, groups=groups, bias=False)
        self.gn = nn.GroupNorm(groups, c)
        self.groups, self.kernel, self.order, self.gamma = groups, kernel, order, gamma

    def forward(self, x):
        t, p, g = self.t(x), self.p(x), self.g(x)
        outs = []
        for tc, pc, gc in zip(t.chunk(self.groups, 1), p.chunk(self.groups, 1), g.chunk(self.groups, 1)):
            if self.kernel == "dot":
                outs.append((pc * gc).sum((1, 2, 3), keepdim=True) * tc)
            else:
                beta = math.exp(-2 * self.gamma)
                alphas = [(2 * self.gamma) ** k / math.factorial(k) * beta for k in range(self.order + 1)]
                outs.append(sum(a * ((pc ** k) * gc).sum((1, 2, 3), keepdim=True) * tc ** k
                                for k, a in enumerate(alphas)))
        return x + self.gn(self.z(torch.cat(outs, 1)))


def _official_resnet(tmp_path, block: nn.Module, kind: str, **nl):
    """A small 2D ResNet-50 (torchvision names) with ``block`` inserted as layer3.3 (before residual
    block 3, as the official code inserts before block 5 of a full R50), saved in that layout;
    and the vidnl model it should load into."""
    ours = VideoResNet(depth=50, arch="c2d", base_width=4, num_classes=6, dropout=0.0, temporal_pool=False)
    insert_nonlocal(ours.stages, [[], [], [2], []], lambda c: build_nonlocal_block(kind, c, style="official", **nl))
    randomise_norms(block, 7)
    state = {}
    for k, v in ours.state_dict().items():
        if ".nonlocal_blocks." in k:
            continue
        m = re.match(r"res(\d)\.blocks\.(\d+)\.(.+)", k)
        if m:
            stage, i = int(m.group(1)) - 1, int(m.group(2))
            i += 1 if (stage == 3 and i >= 3) else 0
            state[f"layer{stage}.{i}.{m.group(3)}"] = v.squeeze(2) if v.dim() == 5 else v
        else:
            name = {"stem.0": "conv1", "stem.1": "bn1", "head.fc": "fc"}[k.rsplit(".", 1)[0]]
            state[f"{name}.{k.rsplit('.', 1)[1]}"] = v.squeeze(2) if v.dim() == 5 else v
    for k, v in block.state_dict().items():
        state[f"layer3.3.{k}"] = v
    path = tmp_path / f"{kind}_official.pth.tar"
    torch.save({"epoch": 90, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    return ours, str(path)


def test_official_snl_layout_and_block_equal_vidnl_official_style(tmp_path):
    torch.manual_seed(0)
    theirs = OfficialSNLUnit(64, 32)
    ours, path = _official_resnet(tmp_path, theirs, "snl")
    load_weights(ours, path, fmt="auto")
    block = ours.res4.nonlocal_blocks["2"].double().eval()
    x = torch.randn(2, 64, 5, 6, dtype=torch.float64)
    with torch.no_grad():
        assert (theirs.double().eval()(x) - block(x)).abs().max().item() < 1e-10
        ours.double().eval()(torch.randn(1, 3, 1, 64, 64, dtype=torch.float64))


@pytest.mark.parametrize("kernel", ["dot", "gaussian"])
def test_official_cgnl_layout_and_block_equal_vidnl_official_style(tmp_path, kernel):
    torch.manual_seed(0)
    theirs = OfficialSpatialCGNL(64, 32, groups=8, kernel=kernel)
    ours, path = _official_resnet(tmp_path, theirs, "cgnl", groups=8, kernel=kernel)
    load_weights(ours, path, fmt="auto")
    block = ours.res4.nonlocal_blocks["2"].double().eval()
    x = torch.randn(2, 64, 5, 6, dtype=torch.float64)
    with torch.no_grad():
        assert (theirs.double().eval()(x) - block(x)).abs().max().item() < 1e-10


# ---------------------------------------------------------------------------------------------
# The command line: a checkpoint that does not fit, or missing pretrained weights, exit 2
# ---------------------------------------------------------------------------------------------
def _run(args, cwd):
    import os
    import subprocess
    import sys

    from conftest import ROOT
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", args[0])] + args[1:], capture_output=True,
                          text=True, cwd=cwd)


def test_cli_refuses_a_checkpoint_that_does_not_fit(tiny_dataset, tmp_path):
    from conftest import tiny_opts

    foreign = tmp_path / "foreign.pyth"
    torch.save({"model_state": {"encoder.weight": torch.zeros(3)}}, foreign)
    proc = _run(["run_net.py"] + tiny_opts(tiny_dataset, str(tmp_path / "out"), **{
        "TRAIN.ENABLE": False, "TEST.CHECKPOINT_FILE_PATH": str(foreign)}), tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "foreign.pyth" in proc.stderr and "not in the file" in proc.stderr and "Traceback" not in proc.stderr

    proc = _run(["convert_checkpoint.py", str(foreign), str(tmp_path / "x.pyth"), "--cfg",
                 "configs/Kinetics/I3D_8x8_R50.yaml"], ROOT_DIR)
    assert proc.returncode == 2 and "foreign.pyth" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.pyth").exists()


def test_fine_tuning_config_without_weights_stops_at_start(tiny_dataset, tmp_path):
    from conftest import tiny_opts

    proc = _run(["run_net.py"] + tiny_opts(tiny_dataset, str(tmp_path / "out"),
                                           **{"TRAIN.REQUIRE_CHECKPOINT_FILE": True}), tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "TRAIN.CHECKPOINT_FILE_PATH is empty" in proc.stderr
    assert not any((tmp_path / "out").glob("checkpoints/*.pyth"))


def test_convert_checkpoint_writes_a_vidnl_checkpoint(tmp_path):
    from pytorchvideo.models.hub import c2d_r50

    src = tmp_path / "C2D_8x8_R50.pyth"
    torch.save({"model_state": c2d_r50(pretrained=False, model_num_class=4, stem_dim_out=4).state_dict()}, src)
    out = tmp_path / "c2d_vidnl.pyth"
    proc = _run(["convert_checkpoint.py", str(src), str(out), "--cfg", "configs/Kinetics/C2D_8x8_R50.yaml",
                 "RESNET.BASE_WIDTH", "4", "MODEL.NUM_CLASSES", "4"], ROOT_DIR)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "pytorchvideo layout (detected)" in proc.stdout and "missing: 0, unexpected: 0" in proc.stdout
    state = load_checkpoint_file(str(out))["model_state"]
    assert torch.equal(state["res3.blocks.0.conv1.weight"], torch.load(src)["model_state"][
        "blocks.3.res_blocks.0.branch2.conv_a.weight"])


@pytest.mark.parametrize("keys,fmt", [
    (["stem.0.weight", "res2.blocks.0.conv1.weight"], "vidnl"),
    (["backbone.conv1.weight", "backbone.layer1.0.conv1.weight", "classifier.weight"], "vidnl"),  # vidnl re-ID
    (["backbone.conv1.conv.weight", "backbone.layer1.0.conv1.conv.weight", "cls_head.fc_cls.weight"], "mmaction2"),
    (["s1.pathway0_stem.conv.weight", "head.projection.weight"], "pyslowfast"),
    (["blocks.0.conv.weight", "blocks.1.res_blocks.0.branch2.conv_a.weight"], "pytorchvideo"),
    (["conv1_w", "res2_0_branch2a_w", "nonlocal_conv3_1_theta_w"], "caffe2"),
    (["conv1.weight", "layer1.0.conv1.weight", "fc.weight"], "torchvision"),
    (["conv1.weight", "layer1.0.conv1.weight", "layer3.5.stages.0.w_1.weight"], "snl_official"),
    (["conv1.weight", "layer1.0.conv1.weight", "layer3.5.z.weight"], "cgnl_official"),
    (["encoder.weight"], "unknown")])
def test_layout_detection(keys, fmt):
    from vidnl.models.weight_formats import detect_format

    assert detect_format(dict.fromkeys(keys)) == fmt
