"""The shared backbone layers (vidnl/models/layers.py): every residual backbone is built from the
one block family and the one stage class, and those behave as documented."""

import pytest
import torch
import torch.nn as nn

from vidnl.models.layers import (BasicBlock, Bottleneck, ResidualBlock, ResStage, projection_shortcut,
                                 zero_init_final_bns)
from vidnl.models.p3d import P3DResNet
from vidnl.models.preresnet import PreResNetBottleneckCifar, PreResNetCifar
from vidnl.models.resnet import VideoResNet
from vidnl.models.resnet3d import ResNet3D
from vidnl.nonlocal_blocks import build_nonlocal_block

BACKBONES = {
    "i3d_r18": lambda: VideoResNet(depth=18, base_width=8, num_classes=3),
    "i3d_r50": lambda: VideoResNet(depth=50, base_width=8, num_classes=3),
    "resnet3d_18_shortcut_a": lambda: ResNet3D(depth=18, base_width=8, num_classes=3, shortcut="A"),
    "resnext3d_50": lambda: ResNet3D(depth=50, base_width=32, cardinality=32, num_classes=3),
    "p3d_63": lambda: P3DResNet(depth=63, base_width=8, num_classes=3),
    "preresnet_20": lambda: PreResNetCifar(depth=20, num_classes=3),
    "preresnet_snl_code": lambda: PreResNetBottleneckCifar(blocks=2, num_classes=3),
}


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_uses_the_shared_stage_and_block_family(name):
    model = BACKBONES[name]()
    assert model.stages and all(type(s) is ResStage for s in model.stages)
    for stage in model.stages:
        assert all(isinstance(stage.block(i), ResidualBlock) for i in range(stage.num_blocks))
    # no residual block outside the family
    own = [m for m in model.modules() if type(m).__name__.lower().endswith(("block", "bottleneck", "block3d"))]
    assert all(isinstance(m, ResidualBlock) for m in own), [type(m).__name__ for m in own]


def _randn_bn(block):
    for m in block.modules():
        if isinstance(m, nn.BatchNorm3d):
            nn.init.normal_(m.weight)
            nn.init.normal_(m.bias)
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2)
    return block.eval()


def test_bottleneck_is_the_documented_composition():
    torch.manual_seed(0)
    short = projection_shortcut(8, 16, (1, 2, 2))
    block = _randn_bn(Bottleneck(8, 4, 16, kernel1=(3, 1, 1), kernel2=(1, 3, 3), stride=(1, 2, 2), shortcut=short))
    x = torch.randn(2, 8, 4, 6, 6)
    f = nn.functional
    with torch.no_grad():
        h = f.relu(block.bn1(f.conv3d(x, block.conv1.weight, padding=(1, 0, 0))))
        h = f.relu(block.bn2(f.conv3d(h, block.conv2.weight, stride=(1, 2, 2), padding=(0, 1, 1))))
        h = block.bn3(f.conv3d(h, block.conv3.weight))
        s = short[1](f.conv3d(x, short[0].weight, stride=(1, 2, 2)))
        assert torch.allclose(block(x), f.relu(h + s), atol=1e-5)
    assert block(x).shape == (2, 16, 4, 3, 3)


def test_basic_block_identity_shortcut_and_zero_init_start_as_identity():
    torch.manual_seed(1)
    block = BasicBlock(8, 8, kernel1=(3, 3, 3), kernel2=(3, 3, 3))
    assert block.downsample is None
    zero_init_final_bns(block)
    x = torch.randn(1, 8, 3, 5, 5)
    with torch.no_grad():
        assert torch.allclose(block.eval()(x), torch.relu(x))


def test_frame_stage_gives_the_nonlocal_block_the_clip_view():
    torch.manual_seed(2)
    b, t, c = 2, 3, 8
    blocks = [nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)]
    flat = ResStage(blocks, c, flat_names=True)
    nl = build_nonlocal_block("nl", c, dim_inner=4)
    nn.init.normal_(nl.bn.weight)
    flat.nonlocal_blocks["0"] = nl
    assert [k for k, _ in flat.named_children()][:2] == ["0", "1"]
    frames = torch.randn(b * t, c, 5, 5)
    with torch.no_grad():
        out = flat.eval()(frames, t)
        h = blocks[0](frames)
        clip = h.view(b, t, c, 5, 5).transpose(1, 2)
        h = nl(clip).transpose(1, 2).reshape(b * t, c, 5, 5)
        assert torch.allclose(out, blocks[1](h), atol=1e-6)
        # a clip-level nonlocal block is not a per-frame one: mixing frames changes the output
        per_frame = blocks[1](nl(blocks[0](frames).unsqueeze(2)).squeeze(2))
        assert not torch.allclose(out, per_frame, atol=1e-3)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_satisfies_the_nonlocal_protocols(name):
    from vidnl.nonlocal_blocks.insert import NonlocalBackbone, NonlocalStage

    model = BACKBONES[name]()
    assert isinstance(model, NonlocalBackbone)
    assert len(model.stage_names) == len(model.stages)
    assert all(isinstance(s, NonlocalStage) for s in model.stages)
    assert not isinstance(nn.Linear(2, 2), NonlocalStage)
