"""Backbones of the papers: build, run, parameter counts, inflation and weight loading."""

import glob
import os

import pytest
import torch
import torchvision

from vidnl.config import ConfigError, load_config
from vidnl.models.weights import load_model_weights
from vidnl.models import build_model
from vidnl.models.inflate import convert_state_dict, inflate_weight
from vidnl.models.weight_formats import caffe2_key, pyslowfast_key
from vidnl.models.mars import MARS
from vidnl.models.p3d import P3DBottleneck, P3DResNet
from vidnl.models.preresnet import PreResNetCifar
from vidnl.models.resnet import VideoResNet
from vidnl.models.resnet3d import ResNet3D
from vidnl.models.vtn_vit import VTNViT
from vidnl.nonlocal_blocks import SNL

from conftest import ROOT

TINY = {  # arch: (depth, extra overrides, input T)
    "c2d": (18, [], 4), "i3d": (50, [], 4), "resnet2d": (18, [], 1), "preresnet": (20, [], 1),
    "preresnet_snl_code": (56, [], 1),
    "resnet3d": (18, [], 4), "p3d": (63, [], 4), "mars": (50, ["RESNET.CARDINALITY", "4"], 4),
    "vtn_vit": (18, ["VTN.DIM", "16", "VTN.NUM_HEADS", "2", "VTN.NUM_LAYERS", "1"], 4),
}


def params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("arch", sorted(TINY))
@pytest.mark.parametrize("with_nl", [False, True])
def test_every_architecture_from_config_forward_backward(arch, with_nl):
    depth, extra, t = TINY[arch]
    loc = "[[1], [], []]" if arch.startswith("preresnet") else "[[], [1], [], []]"
    opts = ["MODEL.ARCH", arch, "RESNET.DEPTH", str(depth), "RESNET.BASE_WIDTH", "32" if arch == "mars" else "4",
            "MODEL.NUM_CLASSES", "3", "NONLOCAL.TYPE", "snl"] + extra + (["NONLOCAL.LOCATION", loc] if with_nl else [])
    model = build_model(load_config(None, opts))
    n_blocks = sum(isinstance(m, SNL) for m in model.modules())
    assert n_blocks == (1 if with_nl else 0)
    x = torch.randn(2, 3, t, 32, 32)
    out = model(x)
    assert out.shape == (2, 3)
    out.sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad and "flow." not in n)


def test_plain_argument_construction():
    x3, x1 = torch.randn(1, 3, 4, 32, 32), torch.randn(1, 3, 32, 32)
    assert VideoResNet(depth=18, arch="c2d", num_classes=2, base_width=4).eval()(x3).shape == (1, 2)
    assert ResNet3D(depth=10, num_classes=2, base_width=4).eval()(x3).shape == (1, 2)
    assert P3DResNet(depth=63, num_classes=2, base_width=4).eval()(x3).shape == (1, 2)
    assert PreResNetCifar(depth=20, num_classes=2).eval()(x1).shape == (1, 2)
    assert VTNViT(num_classes=2, depth=18, base_width=4, dim=8, heads=2, layers=1).eval()(x3).shape == (1, 2)


def test_parameter_counts_of_the_papers():
    # Hara et al. (CVPR 2018) Table 2: 3D-ResNet-18 has 33.2 M parameters (feature layers; the
    # 400-way classifier adds 512·400 + 400 = 205,200).
    r3d18 = ResNet3D(depth=18, num_classes=400)
    assert abs(params(r3d18) - 205_200 - 33.2e6) < 0.01e6
    # Zhu et al. 2021 (SNL) Table 6: ResNet-50 has 25.56 M parameters (ImageNet, 1000 classes).
    r50 = build_model(load_config(None, ["MODEL.ARCH", "resnet2d", "RESNET.DEPTH", "50", "MODEL.NUM_CLASSES", "1000"]))
    assert params(r50) == params(torchvision.models.resnet50(weights=None)) == 25_557_032
    # PreResNet-56 for CIFAR-100 (He et al. 2016): 0.86 M.
    assert round(params(PreResNetCifar(depth=56, num_classes=100)) / 1e6, 2) == 0.86
    # P3D-199 (Qiu et al.): ResNet-152's 2D bottlenecks plus, in each of the 47 res2-res4 units, a
    # 3x1x1 conv (w·w·3) with its BN (2·w); res5 stays 2D.
    p3d = P3DResNet(depth=199, num_classes=400)
    r152 = torchvision.models.resnet152(weights=None)
    r152.fc = torch.nn.Linear(2048, 400)
    extra = sum(3 * b.temporal[0].in_channels ** 2 + 2 * b.temporal[0].in_channels
                for s in p3d.stages[:3] for b in s.blocks)
    assert sum(isinstance(m, P3DBottleneck) and m.kind is not None for m in p3d.modules()) == 47
    assert params(p3d) == params(r152) + extra


def test_c2d_from_an_inflated_2d_checkpoint_matches_the_2d_network(tmp_path):
    torch.manual_seed(0)
    ref = torchvision.models.resnet50(weights=None, num_classes=10)
    with torch.no_grad():  # non-trivial BN statistics
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.normal_(1, 0.1)
    path = tmp_path / "resnet50_tv.pth"
    torch.save(ref.state_dict(), path)
    model = VideoResNet(depth=50, arch="c2d", num_classes=10).eval()
    state = convert_state_dict(torch.load(path, weights_only=True), model, "auto", "mean")
    report = load_model_weights(model, state)
    assert report["missing"] == [] and report["unexpected"] == []
    img = torch.randn(2, 3, 64, 64, dtype=torch.float64)  # float64: conv2d and conv3d sum in other orders
    clip = img.unsqueeze(2).repeat(1, 1, 4, 1, 1)  # 4 identical frames
    with torch.no_grad():
        torch.testing.assert_close(model.double()(clip), ref.double().eval()(img), rtol=0, atol=1e-5)


def test_i3d_inflation_mean_and_center():
    w = torch.randn(4, 3, 7, 7)
    mean, center = inflate_weight(w, 5, "mean"), inflate_weight(w, 5, "center")
    torch.testing.assert_close(mean.sum(2), w)
    assert torch.equal(center[:, :, 2], w) and torch.count_nonzero(center[:, :, [0, 1, 3, 4]]) == 0
    model = VideoResNet(depth=18, arch="i3d", num_classes=10)
    state = convert_state_dict(torchvision.models.resnet18(weights=None, num_classes=10).state_dict(), model)
    assert state["stem.0.weight"].shape == (64, 3, 5, 7, 7)
    assert load_model_weights(model, state)["missing"] == []


def test_pyslowfast_and_caffe2_key_maps(tmp_path):
    model = VideoResNet(depth=50, arch="i3d", num_classes=5, base_width=8)
    own = model.state_dict()

    def to_pyslowfast(k):  # written independently of the loader's rules
        k = k.replace("stem.0.", "s1.pathway0_stem.conv.").replace("stem.1.", "s1.pathway0_stem.bn.")
        k = k.replace("head.fc.", "head.projection.")
        parts = k.split(".")
        if parts[0].startswith("res"):
            s, i, layer = parts[0][3:], parts[2], parts[3]
            rest = ".".join(parts[4:])
            if layer == "downsample":
                name = "branch1" if parts[4] == "0" else "branch1_bn"
                rest = ".".join(parts[5:])
            else:
                name = {"conv1": "branch2.a", "bn1": "branch2.a_bn", "conv2": "branch2.b", "bn2": "branch2.b_bn",
                        "conv3": "branch2.c", "bn3": "branch2.c_bn"}[layer]
            k = f"s{s}.pathway0_res{i}.{name}.{rest}"
        return k

    foreign = {to_pyslowfast(k): v.clone() + 1 for k, v in own.items() if "num_batches_tracked" not in k}
    assert all(pyslowfast_key(k) is not None for k in foreign)
    fresh = VideoResNet(depth=50, arch="i3d", num_classes=5, base_width=8)
    report = load_model_weights(fresh, convert_state_dict(foreign, fresh, "auto"))
    assert report["unexpected"] == [] and all("num_batches_tracked" in k for k in report["missing"])
    assert torch.equal(fresh.res3.blocks[1].conv2.weight, own["res3.blocks.1.conv2.weight"] + 1)
    assert caffe2_key("res4_5_branch2b_bn_riv") == "res4.blocks.5.bn2.running_var"
    assert caffe2_key("res3_0_branch1_w") == "res3.blocks.0.downsample.0.weight"
    assert caffe2_key("pred_w") == "head.fc.weight" and caffe2_key("conv1_w") == "stem.0.weight"
    assert pyslowfast_key("s3.pathway0_nonlocal1.conv_out.weight") == "res3.nonlocal_blocks.1.out_proj.0.weight"


def test_mars_distillation_decreases_and_the_teacher_stays_frozen():
    torch.manual_seed(0)
    model = MARS(num_classes=3, depth=50, base_width=32, cardinality=4, alpha=1.0)
    teacher = {k: v.clone() for k, v in model.flow.state_dict().items()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    rgb, flow = torch.randn(4, 3, 4, 32, 32), torch.randn(4, 2, 4, 32, 32)
    model.train()
    losses = []
    for _ in range(15):
        logits, distill = model(rgb, flow)
        losses.append(distill.item())
        opt.zero_grad()
        distill.backward()
        opt.step()
    assert losses[-1] < 0.5 * losses[0]  # measured: 2.38 -> 0.46
    assert not model.flow.training and all(not p.requires_grad for p in model.flow.parameters())
    for k, v in model.flow.state_dict().items():
        assert torch.equal(v, teacher[k]), k
    assert model.eval()(rgb).shape == (4, 3)  # inference: RGB only


def test_bad_arch_or_location_lists_what_exists():
    # what the models know is checked when the model is built (the config package only loads it)
    with pytest.raises(ConfigError, match="'resnet3d'"):
        build_model(load_config(None, ["MODEL.ARCH", "x3d"]))
    with pytest.raises(ConfigError, match="res1 has 3 blocks"):
        build_model(load_config(None, ["MODEL.ARCH", "preresnet", "RESNET.DEPTH", "20", "NONLOCAL.LOCATION",
                                       "[[3], [], []]"]))
    with pytest.raises(ConfigError, match="RESNET.DEPTH: 50 is not available for p3d"):
        build_model(load_config(None, ["MODEL.ARCH", "p3d", "RESNET.DEPTH", "50"]))


def test_model_info_tool(capsys):
    import sys
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import model_info

    assert model_info.main(["--cfg", os.path.join(ROOT, "configs", "UCF101", "I3D_Hara_R50_SNL.yaml"),
                            "RESNET.BASE_WIDTH", "8", "DATA.TRAIN_CROP_SIZE", "64"]) == 0
    out = capsys.readouterr().out
    assert "res3.nonlocal_blocks.2" in out and "SNL" in out and "total" in out


FULL_SIZE_CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True))


@pytest.mark.parametrize("path", FULL_SIZE_CONFIGS, ids=[os.path.relpath(p, ROOT) for p in FULL_SIZE_CONFIGS])
def test_every_config_builds_at_its_configured_size(path):
    cfg = load_config(path)
    model = build_model(cfg)
    n = params(model)
    assert n > 0.5e6 if "CIFAR" in path or "Synthetic" in path else n > 10e6
