import pytest
import torch
import torch.nn as nn
import torchvision

from vidnl.config import load_config
from vidnl.models import VideoResNet, build_model, default_inflate_pattern


def temporal_kernels(model):
    return [m.kernel_size[0] for n, m in model.named_modules()
            if isinstance(m, nn.Conv3d) and ".blocks." in n and "downsample" not in n]


def test_c2d_r50_has_exactly_the_parameters_of_resnet50():
    model = VideoResNet(depth=50, arch="c2d", num_classes=1000)
    ref = torchvision.models.resnet50(weights=None)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in ref.parameters()) == 25_557_032
    assert set(temporal_kernels(model)) == {1}


def test_i3d_inflates_every_other_block_and_the_stem():
    model = VideoResNet(depth=50, arch="i3d", num_classes=10, base_width=8)
    assert model.stem[0].kernel_size == (5, 7, 7)
    assert default_inflate_pattern((3, 4, 6, 3)) == [[1, 1, 1], [1, 0, 1, 0], [1, 0, 1, 0, 1, 0], [0, 1, 0]]
    # 9 inflated blocks (3 + 2 + 3 + 1), each with one 3×1×1 conv (the first of the bottleneck)
    firsts = [b.conv1.kernel_size for s in model.stages for b in s.blocks]
    assert sum(k == (3, 1, 1) for k in firsts) == 9
    assert all(b.conv2.kernel_size == (1, 3, 3) for s in model.stages for b in s.blocks)


@pytest.mark.parametrize("arch", ["c2d", "i3d"])
@pytest.mark.parametrize("depth", [18, 50, 101])
def test_shapes(arch, depth):
    model = VideoResNet(depth=depth, arch=arch, num_classes=7, base_width=4).eval()
    x = torch.randn(2, 3, 8, 64, 64)
    feats = model.forward_features(x)
    expansion = 1 if depth == 18 else 4
    assert feats.shape == (2, 4 * 8 * expansion, 4, 2, 2)  # time halved by pool2, space /32
    assert model(x).shape == (2, 7)


def test_i3d_sees_frame_order_c2d_does_not():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 8, 32, 32)
    rev = x.flip(2)
    for arch, invariant in (("c2d", True), ("i3d", False)):
        model = VideoResNet(depth=18, arch=arch, num_classes=3, base_width=4, temporal_pool=False,
                            zero_init_final_bn=False, dropout=0).eval()
        same = torch.allclose(model(x), model(rev), atol=1e-5)
        assert same == invariant


def test_build_model_reads_config():
    cfg = load_config(None, ["MODEL.ARCH", "c2d", "RESNET.DEPTH", "18", "RESNET.BASE_WIDTH", "4",
                             "MODEL.NUM_CLASSES", "3", "NONLOCAL.LOCATION", "[[0], [], [], [1]]"])
    model = build_model(cfg)
    assert model.arch == "c2d" and model.head.fc.out_features == 3
    assert list(model.res2.nonlocal_blocks) == ["0"] and list(model.res5.nonlocal_blocks) == ["1"]
