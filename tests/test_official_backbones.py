"""P3D, PreResNet, MARS, Hara 3D-ResNets and ResNet50tp as their official code builds them, and
their checkpoints (files written here in those layouts, key names spelled out independently of
vidnl's key maps) load through the public loading path with nothing missing or left over."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from vidnl.config import load_config
from vidnl.models.weights import load_weights
from vidnl.models import build_model
from vidnl.models.p3d import P3DResNet
from vidnl.models.preresnet import PreActBlock, PreActBottleneck, PreResNetBottleneckCifar, PreResNetCifar
from vidnl.nonlocal_blocks import build_nonlocal_block, insert_nonlocal


def _randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return model.double().eval()


def _params(m):
    return sum(p.numel() for p in m.parameters())


# ---------------------------------------------------------------------------------------------
# P3D (Qiu et al.; qijiezhao/pseudo-3d-pytorch)
# ---------------------------------------------------------------------------------------------
def test_p3d199_stage_sizes_for_a_16_frame_clip_are_the_released_models():
    model = P3DResNet(depth=199, num_classes=5, base_width=2).eval()
    sizes = {}
    for name, mod in [("stem", model.stem), ("res2", model.temporal_pools[0]), ("res3", model.temporal_pools[1]),
                      ("res4", model.temporal_pools[2]), ("res5", model.res5)]:
        mod.register_forward_hook(lambda m, i, o, n=name: sizes.__setitem__(n, tuple(o.shape[2:])))
    with torch.no_grad():
        model(torch.zeros(1, 3, 16, 160, 160))
    # official: stem pool 2x3x3/2 -> 8x40², pools 2x1x1/2 after res2-res4, res5 2D on T = 1
    assert sizes == {"stem": (8, 40, 40), "res2": (4, 40, 40), "res3": (2, 20, 20), "res4": (1, 10, 10),
                     "res5": (1, 5, 5)}
    assert model.res3.blocks[0].reduce[0].stride == (1, 2, 2) and model.res3.blocks[0].spatial[0].stride == (1, 1, 1)
    assert model.res5.blocks[0].reduce[0].stride == (1, 2, 2)


def test_p3d_parameter_counts_are_the_official_ones():
    assert _params(P3DResNet(depth=63, num_classes=400, dropout=0.0)) == 25_745_232
    assert _params(P3DResNet(depth=199, num_classes=400, dropout=0.0)) == 66_492_240


def _p3d_official_name(k: str, v: torch.Tensor):
    m = re.fullmatch(r"stem\.([01])\.(\w+)", k)
    if m:
        return ("conv1_custom." if m.group(1) == "0" else "bn1.") + m.group(2), v
    m = re.fullmatch(r"res(\d)\.blocks\.(\d+)\.(reduce\.[01]|spatial\.[01]|temporal\.[01]|expand|bn|downsample\.[01])"
                     r"\.(\w+)", k)
    if m:
        stage = int(m.group(1))
        two_d = stage == 5
        part = {"reduce.0": "conv1", "reduce.1": "bn1", "spatial.0": "conv_normal" if two_d else "conv2",
                "spatial.1": "bn_normal" if two_d else "bn2", "temporal.0": "conv3", "temporal.1": "bn3",
                "expand": "conv4", "bn": "bn4", "downsample.0": "downsample.0", "downsample.1": "downsample.1"}[m.group(3)]
        if two_d and v.dim() == 5:
            v = v[:, :, 0]  # their res5 is Conv2d
        return f"layer{stage - 1}.{m.group(2)}.{part}.{m.group(4)}", v
    return {"head.fc.weight": "fc.weight", "head.fc.bias": "fc.bias"}[k], v


def test_p3d_official_checkpoint_loads(tmp_path):
    src = _randomise(P3DResNet(depth=63, num_classes=7, base_width=4, dropout=0.0))
    state = dict(_p3d_official_name(k, v) for k, v in src.state_dict().items())
    assert state["layer4.0.conv1.weight"].dim() == 4 and "conv1_custom.weight" in state
    torch.save({"state_dict": state}, tmp_path / "p3d_rgb_63.checkpoint.pth.tar")
    dst = P3DResNet(depth=63, num_classes=7, base_width=4, dropout=0.0)
    report = load_weights(dst, str(tmp_path / "p3d_rgb_63.checkpoint.pth.tar"), fmt="auto")
    assert report["missing"] == report["unexpected"] == []
    x = torch.randn(2, 3, 16, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        assert (src(x) - dst.double().eval()(x)).abs().max().item() < 1e-12


# ---------------------------------------------------------------------------------------------
# PreResNet for CIFAR: standard (bearpaw) and the SNL code's bottleneck network
# ---------------------------------------------------------------------------------------------
def _bn(x, bn):
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def test_preact_blocks_against_the_formulas_of_he_et_al():
    """Identity mappings (He et al. 2016, Fig. 4e): x_{l+1} = h(x_l) + F(x_l), F = conv(relu(bn(conv(relu(bn(x)))))),
    h the identity or a projection of x_l (bearpaw; SNL code with a BN)."""
    torch.manual_seed(0)
    x = torch.randn(2, 8, 6, 6, dtype=torch.float64)
    block = _randomise(PreActBlock(8, 16, 2))
    f = F.conv2d(F.relu(_bn(x, block.bn1)), block.conv1.weight, stride=2, padding=1)
    f = F.conv2d(F.relu(_bn(f, block.bn2)), block.conv2.weight, padding=1)
    with torch.no_grad():
        assert torch.allclose(block(x), f + F.conv2d(x, block.shortcut.weight, stride=2), atol=1e-12)
    block = _randomise(PreActBottleneck(8, 4, 2, project=True))
    f = F.conv2d(F.relu(_bn(x, block.bn1)), block.conv1.weight)
    f = F.conv2d(F.relu(_bn(f, block.bn2)), block.conv2.weight, stride=2, padding=1)
    f = F.conv2d(F.relu(_bn(f, block.bn3)), block.conv3.weight)
    h = _bn(F.conv2d(x, block.shortcut[0].weight, stride=2), block.shortcut[1])
    with torch.no_grad():
        assert torch.allclose(block(x), f + h, atol=1e-12)


def test_preresnet_parameter_counts():
    assert _params(PreResNetCifar(depth=56, num_classes=100)) == 861_428  # bearpaw preresnet-56, 100 classes
    # the SNL code's "preresnet56" (its classifier has 1000 outputs: num_classes is never passed there)
    snl_code = PreResNetBottleneckCifar(blocks=9, num_classes=1000)
    assert _params(snl_code) == 1_190_008
    insert_nonlocal(snl_code.stages, [[1], [], []], lambda c: build_nonlocal_block("snl", c, style="official"))
    assert _params(snl_code) == 1_200_376


def test_bearpaw_preresnet_checkpoint_loads(tmp_path):
    src = _randomise(PreResNetCifar(depth=20, num_classes=10))
    state = {}
    for k, v in src.state_dict().items():
        m = re.fullmatch(r"res(\d)\.blocks\.(\d+)\.(.+)", k)
        if m:
            rest = m.group(3).replace("shortcut.", "downsample.0.")
            k = f"layer{m.group(1)}.{m.group(2)}.{rest}"
        state["module." + k] = v
    torch.save({"epoch": 164, "state_dict": state, "best_acc": 0.0}, tmp_path / "model_best.pth.tar")
    dst = PreResNetCifar(depth=20, num_classes=10)
    assert load_weights(dst, str(tmp_path / "model_best.pth.tar"), fmt="auto")["missing"] == []
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        assert (src(x) - dst.double().eval()(x)).abs().max().item() < 1e-12


def test_snl_code_preresnet_checkpoint_with_its_snl_block_loads(tmp_path):
    src = PreResNetBottleneckCifar(blocks=3, num_classes=1000, dropout=0.0)
    insert_nonlocal(src.stages, [[1], [], []], lambda c: build_nonlocal_block("snl", c, style="official"))
    src = _randomise(src)
    nl = {"theta": "t", "phi": "p", "g": "stages.0.g", "out_proj.0": "stages.0.w_1", "out_proj.1": "stages.0.w_2",
          "bn": "stages.0.bn"}
    state = {"conv1.weight": torch.zeros(64, 3, 3, 3), "fc.weight": torch.zeros(100, 2048), "fc.bias": torch.zeros(100)}
    for k, v in src.state_dict().items():
        v = v[:, :, 0] if v.dim() == 5 else v  # their block is 2D
        m = re.fullmatch(r"res(\d)\.blocks\.(\d+)\.(.+)", k)
        if m:
            i = int(m.group(2)) + (1 if m.group(1) == "1" and int(m.group(2)) >= 2 else 0)
            state[f"layer{m.group(1)}.{i}.{m.group(3).replace('shortcut.', 'downsample.')}"] = v
            continue
        m = re.fullmatch(r"res1\.nonlocal_blocks\.1\.(theta|phi|g|out_proj\.[01]|bn)\.(\w+)", k)
        if m:
            state[f"layer1.2.{nl[m.group(1)]}.{m.group(2)}"] = v
            continue
        head = {"conv1": "conv", "head_bn1": "bn1", "head_conv": "fc1", "head_bn2": "bn2", "fc": "fc2"}
        name, attr = k.rsplit(".", 1)
        state[f"{head[name]}.{attr}"] = v
    torch.save({"epoch": 300, "state_dict": state, "best_prec1": 0.0}, tmp_path / "300-cifar100-r-56-w-1snl-block.pth.tar")
    dst = PreResNetBottleneckCifar(blocks=3, num_classes=1000, dropout=0.0)
    insert_nonlocal(dst.stages, [[1], [], []], lambda c: build_nonlocal_block("snl", c, style="official"))
    report = load_weights(dst, str(tmp_path / "300-cifar100-r-56-w-1snl-block.pth.tar"), fmt="auto")
    assert report["missing"] == report["unexpected"] == []
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        assert (src(x) - dst.double().eval()(x)).abs().max().item() < 1e-12


# ---------------------------------------------------------------------------------------------
# Hara 3D-ResNets, the MARS teacher, ResNet50tp
# ---------------------------------------------------------------------------------------------
def _hara_state(model: nn.Module) -> dict:
    """vidnl ResNet3D state in Hara et al.'s (and MARS's) names, DataParallel prefix included."""
    out = {}
    for k, v in model.state_dict().items():
        k = re.sub(r"^stem\.0\.", "conv1.", k)
        k = re.sub(r"^stem\.1\.", "bn1.", k)
        k = re.sub(r"^res(\d)\.blocks\.", lambda m: f"layer{int(m.group(1)) - 1}.", k)
        k = re.sub(r"^head\.fc\.", "fc.", k)
        out["module." + k] = v
    return out


def _mars_cfg(*opts):
    return load_config(None, ["MODEL.ARCH", "mars", "RESNET.DEPTH", "50", "RESNET.BASE_WIDTH", "32",
                              "RESNET.CARDINALITY", "4", "MODEL.NUM_CLASSES", "5", *opts])


def test_hara_checkpoint_loads_into_resnet3d_and_mars_teacher_loads_its_flow_file(tmp_path):
    from vidnl.models.resnet3d import ResNet3D

    flow = _randomise(ResNet3D(depth=50, num_classes=400, base_width=32, in_channels=2, cardinality=4))
    path = tmp_path / "Flow_Kinetics_16f.pth"
    torch.save({"epoch": 100, "arch": "resnext-50", "state_dict": _hara_state(flow)}, path)
    mars = build_model(_mars_cfg("MODEL.MARS_FLOW_CHECKPOINT", str(path))).double()
    for k, v in flow.state_dict().items():
        if not k.startswith("head."):  # the teacher's classifier is not used
            assert torch.equal(mars.flow.state_dict()[k], v), k
    x = torch.randn(1, 2, 8, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(mars.flow.forward_features(x), flow.forward_features(x))
        random_teacher = build_model(_mars_cfg()).double().flow.eval()
        assert not torch.allclose(random_teacher.forward_features(x), flow.forward_features(x))
    # an RGB Hara/MARS checkpoint loads into a resnet3d model through MODEL.WEIGHTS_FORMAT auto
    rgb = _randomise(ResNet3D(depth=18, num_classes=7, base_width=8))
    torch.save({"state_dict": _hara_state(rgb), "arch": "resnet-18"}, tmp_path / "r3d18.pth")
    dst = ResNet3D(depth=18, num_classes=7, base_width=8)
    assert load_weights(dst, str(tmp_path / "r3d18.pth"), fmt="auto")["missing"] == []


def test_mars_teacher_that_does_not_fit_is_an_error(tmp_path):
    from vidnl.models.weights import CheckpointError

    torch.save({"state_dict": {"module.encoder.weight": torch.zeros(1)}}, tmp_path / "flow.pth")
    with pytest.raises(CheckpointError, match="flow.pth.*not in the file"):
        build_model(_mars_cfg("MODEL.MARS_FLOW_CHECKPOINT", str(tmp_path / "flow.pth")))


def test_video_person_reid_resnet50tp_checkpoint_loads(tmp_path):
    from vidnl.models.reid import ResNet50TP

    src = _randomise(ResNet50TP(num_classes=6, bnneck=False, embed_dim=0))
    state = {}
    for k, v in src.state_dict().items():
        k = re.sub(r"^backbone\.conv1\.", "base.0.", k)
        k = re.sub(r"^backbone\.bn1\.", "base.1.", k)
        k = re.sub(r"^backbone\.layer(\d)\.", lambda m: f"base.{int(m.group(1)) + 3}.", k)
        state[k] = v
    assert "base.7.2.conv3.weight" in state and "classifier.weight" in state
    torch.save({"state_dict": state, "rank1": 0.8, "epoch": 400}, tmp_path / "best_model.pth.tar")
    dst = ResNet50TP(num_classes=6, bnneck=False, embed_dim=0)
    assert load_weights(dst, str(tmp_path / "best_model.pth.tar"), fmt="auto")["missing"] == []
    x = torch.randn(2, 3, 2, 64, 32, dtype=torch.float64)
    with torch.no_grad():
        assert (src(x) - dst.double().eval()(x)).abs().max().item() < 1e-12


def test_hara_shortcut_a_checkpoint_loads_and_matches_a_reference(tmp_path):
    """Shortcut A (Hara et al. v1 ResNet-18/34): avg_pool3d(x, 1, stride) with zero channels appended."""
    from vidnl.models.resnet3d import ResNet3D

    src = _randomise(ResNet3D(depth=18, num_classes=5, base_width=8, shortcut="A"))
    state = _hara_state(src)
    assert not any("downsample" in k for k in state)
    torch.save({"state_dict": state, "arch": "resnet-18"}, tmp_path / "resnet-18-kinetics.pth")
    from vidnl.models.weights import CheckpointError

    with pytest.raises(CheckpointError, match="downsample"):
        load_weights(ResNet3D(depth=18, num_classes=5, base_width=8), str(tmp_path / "resnet-18-kinetics.pth"),
                     fmt="auto")
    dst = ResNet3D(depth=18, num_classes=5, base_width=8, shortcut="A")
    load_weights(dst, str(tmp_path / "resnet-18-kinetics.pth"), fmt="auto")
    x = torch.randn(1, 8, 4, 6, 6, dtype=torch.float64)
    block = src.res3.blocks[0]
    ref = F.avg_pool3d(x, 1, 2)
    ref = torch.cat([ref, torch.zeros(1, 8, *ref.shape[2:], dtype=ref.dtype)], 1)
    with torch.no_grad():
        assert torch.equal(block.downsample(x), ref)
        clip = torch.randn(1, 3, 8, 32, 32, dtype=torch.float64)
        assert (src(clip) - dst.double().eval()(clip)).abs().max().item() < 1e-12


def test_official_mars_rgb_checkpoint_loads_into_the_rgb_stream(tmp_path):
    from vidnl.models.resnet3d import ResNet3D

    rgb = _randomise(ResNet3D(depth=50, num_classes=5, base_width=32, cardinality=4))
    torch.save({"epoch": 40, "arch": "resnext-50", "state_dict": _hara_state(rgb)}, tmp_path / "MARS_UCF101_16f.pth")
    mars = build_model(_mars_cfg())
    teacher = {k: v.clone() for k, v in mars.flow.state_dict().items()}
    report = load_weights(mars, str(tmp_path / "MARS_UCF101_16f.pth"), fmt="auto")
    assert report["missing"] == report["unexpected"] == []
    for k, v in rgb.state_dict().items():
        assert torch.equal(mars.rgb.state_dict()[k], v.float()), k
    assert all(torch.equal(mars.flow.state_dict()[k], v) for k, v in teacher.items())  # the teacher is untouched
