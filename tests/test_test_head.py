"""MODEL.TEST_HEAD fully_conv (vidnl.models.heads.ClassificationHead with a test pool kernel):
PySlowFast's fully convolutional eval head, against a hand-built reference (loops over the pool
windows, the linear layer and a softmax at each position, the mean; float64), against
pytorchvideo's ResNetBasicHead with a softmax, the kernel the builders compute from the
networks' strides, the multi-view aggregation, export, torch.compile and the config errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from vidnl.config import load_config
from vidnl.config.validate import ALLOWED_VALUES
from vidnl.engine.inference import CompiledInference
from vidnl.engine.meters import MultiViewMeter
from vidnl.errors import ConfigError
from vidnl.models import build_model
from vidnl.models.heads import TEST_HEADS, ClassificationHead
from vidnl.predict import aggregate_views


def reference_fully_conv(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, kernel) -> np.ndarray:
    """PySlowFast's eval head written out: for every placement of a kT×kH×kW window (stride 1,
    no padding; a kernel larger than the map covers the whole map in that dimension), the mean
    of the features in it, logits W·v + b, their softmax; then the mean of the probabilities
    over the placements. x B×F×T×H×W (float64) -> B×K probabilities."""
    b, _, t, h, w = x.shape
    kt, kh, kw = (min(k, s) for k, s in zip(kernel, (t, h, w)))
    out = np.zeros((b, weight.shape[0]))
    for n in range(b):
        probs = []
        for i in range(t - kt + 1):
            for j in range(h - kh + 1):
                for k in range(w - kw + 1):
                    v = x[n, :, i:i + kt, j:j + kh, k:k + kw].reshape(x.shape[1], -1).mean(1)
                    z = weight @ v + bias
                    e = np.exp(z - z.max())
                    probs.append(e / e.sum())
        out[n] = np.mean(probs, axis=0)
    return out


def make_head(features=6, classes=5, kernel=(4, 7, 7), seed=0, dropout=0.0) -> ClassificationHead:
    torch.manual_seed(seed)
    head = ClassificationHead(features, classes, dropout, test_pool_kernel=kernel).double()
    with torch.no_grad():  # logits of a few units, so that the positions' softmaxes differ
        head.fc.weight.normal_(0, 1.0)
        head.fc.bias.normal_(0, 0.5)
    return head


def features(shape, seed=1) -> torch.Tensor:
    """Random features plus a per-channel ramp over space and time, so that overlapping windows
    still differ in their means (B×F×T×H×W, float64)."""
    g = torch.Generator().manual_seed(seed)
    b, f, t, h, w = shape
    slope = torch.randn(f, 3, generator=g, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in (t, h, w)), indexing="ij"))
    ramp = torch.einsum("fd,dthw->fthw", slope, grid)
    return torch.rand(shape, generator=g, dtype=torch.float64) + ramp


def ref(head, x, kernel):
    return reference_fully_conv(x.numpy(), head.fc.weight.detach().numpy(), head.fc.bias.detach().numpy(), kernel)


@pytest.mark.parametrize("kernel,shape", [
    ((4, 7, 7), (2, 6, 4, 8, 8)),   # 8×224²-trained I3D-R50 tested at 256: 1×2×2 positions
    ((2, 3, 3), (2, 6, 4, 6, 5)),   # 3×4×3 positions, uneven map
    ((4, 7, 7), (2, 6, 4, 5, 5)),   # test map smaller than the kernel: one window, the whole map
])
def test_eval_output_is_the_log_of_the_mean_of_the_positions_softmax(kernel, shape):
    head = make_head(shape[1], 5, kernel).eval()
    x = features(shape)
    p = ref(head, x, kernel)
    with torch.no_grad():
        out = head(x)
    np.testing.assert_allclose(out.exp().numpy(), p, rtol=1e-10, atol=1e-13)
    # a softmax of the output gives the probabilities back (what sum_softmax takes)
    np.testing.assert_allclose(torch.softmax(out, 1).numpy(), p, rtol=1e-10, atol=1e-13)
    # the positions disagree: the mean of the softmaxes is not the softmax of the mean logits
    n = math.prod(s - min(k, s) + 1 for k, s in zip(kernel, shape[2:]))
    if n > 1:
        glob = torch.softmax(ClassificationHead.forward(head.train(), x), 1).detach().numpy()
        assert np.abs(glob - p).max() > 1e-3


def test_at_the_training_size_it_is_the_global_head():
    head = make_head(6, 5, (4, 7, 7)).eval()
    x = features((3, 6, 4, 7, 7))
    glob = make_head(6, 5, None).eval()
    glob.load_state_dict(head.state_dict())
    with torch.no_grad():
        np.testing.assert_allclose(torch.softmax(head(x), 1).numpy(), torch.softmax(glob(x), 1).numpy(), rtol=1e-12)
        np.testing.assert_allclose(head(x).exp().numpy(), ref(head, x, (4, 7, 7)), rtol=1e-10)


@pytest.mark.parametrize("shape", [(2, 6, 4, 7, 7), (2, 6, 4, 8, 8)])
def test_training_mode_is_the_global_head(shape):
    head = make_head(6, 5, (4, 7, 7), dropout=0.5).train()
    glob = make_head(6, 5, None, dropout=0.5).train()
    glob.load_state_dict(head.state_dict())
    x = features(shape)
    torch.manual_seed(3)
    a = head(x)
    torch.manual_seed(3)
    b = glob(x)
    manual = head.fc(head.dropout.eval()(x.mean((2, 3, 4))))  # no dropout: the pooled logits
    assert torch.allclose(a, b, rtol=1e-12) and a.shape == (2, 5)
    assert torch.allclose(head.eval()(x).exp(), torch.softmax(manual, 1), atol=1e-12) == (shape[2:] == (4, 7, 7))


def test_pytorchvideo_resnet_basic_head_with_softmax_equals_it():
    """pytorchvideo 0.1.5 ResNetBasicHead (AvgPool3d 4×7×7 stride 1, projection per position,
    nn.Softmax over the classes, output_with_global_average): the probabilities vidnl's head
    outputs the log of. Without the activation (pytorchvideo's default, its hub models) it
    averages the positions' logits instead."""
    head_mod = pytest.importorskip("pytorchvideo.models.head")
    ours = make_head(6, 5, (4, 7, 7)).eval()
    theirs = head_mod.create_res_basic_head(
        in_features=6, out_features=5, pool=nn.AvgPool3d, pool_kernel_size=(4, 7, 7), pool_stride=(1, 1, 1),
        dropout_rate=0.0, activation=nn.Softmax, output_with_global_average=True).double().eval()
    theirs.proj.load_state_dict(ours.fc.state_dict())
    no_act = head_mod.create_res_basic_head(
        in_features=6, out_features=5, pool=nn.AvgPool3d, pool_kernel_size=(4, 7, 7), pool_stride=(1, 1, 1),
        dropout_rate=0.0, activation=None, output_with_global_average=True).double().eval()
    no_act.proj.load_state_dict(ours.fc.state_dict())
    x = features((2, 6, 4, 8, 8))
    with torch.no_grad():
        np.testing.assert_allclose(ours(x).exp().numpy(), theirs(x).numpy(), rtol=1e-10, atol=1e-13)
        assert (ours(x).exp() - torch.softmax(no_act(x), 1)).abs().max() > 1e-3


def test_sum_softmax_over_views_is_the_sum_of_the_heads_probabilities():
    """vidnl's test (MultiViewMeter) and vidnl.predict aggregate the head's outputs over a
    video's views into exactly PySlowFast's TestMeter sum of the views' probabilities;
    mean_logits is the mean of the views' log-probabilities."""
    head = make_head(6, 5, (4, 7, 7)).eval()
    views = [3, 2]
    x = features((sum(views), 6, 4, 8, 8), seed=4)
    with torch.no_grad():
        out = head(x)
    p = ref(head, x, (4, 7, 7))
    meter = MultiViewMeter()
    meter.add(out, torch.tensor([0, 4]), views, [0, 1])
    sums = np.stack([p[:3].sum(0), p[3:].sum(0)])
    np.testing.assert_allclose(meter.scores("sum_softmax").numpy(), sums, rtol=1e-10)
    np.testing.assert_allclose(meter.scores("mean_logits").numpy(),
                               np.stack([np.log(p[:3]).mean(0), np.log(p[3:]).mean(0)]), rtol=1e-10)
    np.testing.assert_allclose(aggregate_views(out[:3], "sum_softmax").numpy(), sums[0], rtol=1e-10)


def test_unlikely_classes_keep_a_finite_log_probability():
    """log p̄ is computed as logsumexp − log P: a class whose probability underflows float32 at
    every position (e^-200, e^-300) keeps its log-probability (log((e^-200 + e^-300) / 2)), where
    the log of the mean of the softmaxes would give −inf (and mean_logits −inf)."""
    head = ClassificationHead(1, 2, 0.0, test_pool_kernel=(1, 1, 1)).eval()
    with torch.no_grad():
        head.fc.weight.copy_(torch.tensor([[0.0], [100.0]]))
        head.fc.bias.zero_()
    x = torch.tensor([2.0, 3.0]).view(1, 1, 1, 1, 2)  # logits [0, 200] and [0, 300]
    with torch.no_grad():
        out = head(x)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert out[0, 0].item() == pytest.approx(-200.0 - math.log(2.0), abs=1e-3)
    assert out[0, 1].item() == pytest.approx(0.0, abs=1e-6)


def test_kernel_argument_is_checked():
    with pytest.raises(ValueError, match="three ints"):
        ClassificationHead(4, 2, test_pool_kernel=(4, 7))
    with pytest.raises(ValueError, match="three ints"):
        ClassificationHead(4, 2, test_pool_kernel=(0, 7, 7))


# ------------------------------------------------------------------------------------------------
# The builders: the kernel of the training clip's feature size, from the network's own strides
# ------------------------------------------------------------------------------------------------
def cfg_of(*opts):
    base = ["RESNET.BASE_WIDTH", "4", "MODEL.NUM_CLASSES", "3", "NONLOCAL.LOCATION", "[[], [], [], []]",
            "MODEL.TEST_HEAD", "fully_conv"]
    return load_config(None, base + list(opts))


def pyslowfast_kernel(frames, crop, pool_t):
    """video_model_builder.ResNet: [NUM_FRAMES // pool1_t, TRAIN_CROP_SIZE // 32, TRAIN_CROP_SIZE // 32]."""
    return (frames // pool_t, crop // 32, crop // 32)


@pytest.mark.parametrize("opts,expected", [
    (["MODEL.ARCH", "i3d", "RESNET.DEPTH", "50"], pyslowfast_kernel(8, 224, 2)),  # I3D_8x8_R50
    (["MODEL.ARCH", "c2d", "RESNET.DEPTH", "50", "DATA.NUM_FRAMES", "16"], pyslowfast_kernel(16, 224, 2)),
    (["MODEL.ARCH", "i3d", "RESNET.DEPTH", "18", "DATA.TRAIN_CROP_SIZE", "160", "DATA.TRAIN_JITTER_SCALES",
      "[160, 200]"], pyslowfast_kernel(8, 160, 2)),
    # SLOW_8x8_R50: no temporal pool
    (["MODEL.ARCH", "i3d", "RESNET.DEPTH", "50", "RESNET.STEM_TEMPORAL_KERNEL", "1", "RESNET.POOL2_TEMPORAL", "[]",
      "RESNET.INFLATE", "[[0,0,0],[0,0,0,0],[1,1,1,1,1,1],[1,1,1]]"], pyslowfast_kernel(8, 224, 1)),
    # Wang et al. 2018 Table 1 layout: 32 frames -> res5 at T = 4
    (["MODEL.ARCH", "i3d", "RESNET.DEPTH", "50", "DATA.NUM_FRAMES", "32", "RESNET.STEM_TEMPORAL_STRIDE", "2",
      "RESNET.POOL1_TEMPORAL", "[3, 2]", "RESNET.POOL2_TEMPORAL", "[3, 2, 1]"], (4, 7, 7)),
    # Hara et al. 3D-ResNet, 16×112²: stride 2 in time from the stem pool on (16 -> 1), 112 -> 4
    (["MODEL.ARCH", "resnet3d", "RESNET.DEPTH", "18", "DATA.NUM_FRAMES", "16", "DATA.TRAIN_CROP_SIZE", "112",
      "DATA.TRAIN_JITTER_SCALES", "[128, 160]"], (1, 4, 4)),
    (["MODEL.ARCH", "p3d", "RESNET.DEPTH", "63", "DATA.NUM_FRAMES", "16", "DATA.TRAIN_CROP_SIZE", "160",
      "DATA.TRAIN_JITTER_SCALES", "[160, 200]"], (1, 5, 5)),
    (["MODEL.ARCH", "resnet2d", "RESNET.DEPTH", "18", "DATA.NUM_FRAMES", "1"], (1, 7, 7)),
])
def test_builder_sizes_the_kernel_from_the_training_clip(opts, expected):
    model = build_model(cfg_of(*opts))
    assert model.head.test_pool_kernel == expected
    glob = build_model(load_config(None, ["RESNET.BASE_WIDTH", "4", "MODEL.NUM_CLASSES", "3", *opts]))
    assert glob.head.test_pool_kernel is None
    assert list(glob.state_dict()) == list(model.state_dict())  # same checkpoints either way


def test_mars_uses_its_rgb_stream_head():
    model = build_model(cfg_of("MODEL.ARCH", "mars", "RESNET.DEPTH", "50", "RESNET.CARDINALITY", "1",
                               "DATA.NUM_FRAMES", "16", "DATA.TRAIN_CROP_SIZE", "112",
                               "DATA.TRAIN_JITTER_SCALES", "[128, 160]"))
    assert model.rgb.head.test_pool_kernel == (1, 4, 4)


def test_a_built_model_at_the_test_size_equals_the_reference():
    """A tiny I3D trained at 4×32² (res5 2×1×1) tested at 4×64² (res5 2×2×2): 1×2×2 positions."""
    cfg = cfg_of("MODEL.ARCH", "i3d", "RESNET.DEPTH", "18", "DATA.NUM_FRAMES", "4", "DATA.TRAIN_CROP_SIZE", "32",
                 "DATA.TRAIN_JITTER_SCALES", "[32, 40]", "DATA.TEST_CROP_SIZE", "64")
    torch.manual_seed(0)
    model = build_model(cfg).double().eval()
    assert model.head.test_pool_kernel == (2, 1, 1)
    with torch.no_grad():
        model.head.fc.weight.normal_(0, 3.0)
        x = torch.randn(2, 3, 4, 64, 64, dtype=torch.float64)
        feats = model.forward_features(x)
        assert feats.shape[2:] == (2, 2, 2)
        np.testing.assert_allclose(model(x).exp().numpy(), ref(model.head, feats, (2, 1, 1)), rtol=1e-9)


@pytest.mark.parametrize("opts,match", [
    (["MODEL.ARCH", "vtn", "RESNET.DEPTH", "18"], "not available for MODEL.ARCH 'vtn'"),
    (["MODEL.ARCH", "vtn_vit", "RESNET.DEPTH", "18"], "not available for MODEL.ARCH 'vtn_vit'"),
    (["MODEL.ARCH", "preresnet", "RESNET.DEPTH", "20", "DATA.NUM_FRAMES", "1"], "'preresnet'"),
])
def test_archs_without_the_head_are_config_errors(opts, match):
    with pytest.raises(ConfigError, match=match):
        build_model(cfg_of(*opts))


def test_config_values_are_checked():
    assert ALLOWED_VALUES["MODEL.TEST_HEAD"] == TEST_HEADS
    with pytest.raises(ConfigError, match="MODEL.TEST_HEAD: 'fully' is not allowed"):
        load_config(None, ["MODEL.TEST_HEAD", "fully"])
    with pytest.raises(ConfigError, match="MODEL.TEST_HEAD: 'fully_conv' is a classification head"):
        load_config(None, ["MODEL.TASK", "reid", "MODEL.TEST_HEAD", "fully_conv"])


# ------------------------------------------------------------------------------------------------
# Export and torch.compile
# ------------------------------------------------------------------------------------------------
def small_model() -> nn.Module:
    """conv 1×1×1 -> fully convolutional head (kernel 2×3×3): B×3×2×4×4 -> B×4, 1×2×2 positions."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(3, 8, 1), make_head(8, 4, (2, 3, 3)).float()).eval()
    with torch.no_grad():
        model[1].fc.weight.mul_(3)
    return model


def test_export_with_dynamic_batch(tmp_path):
    from vidnl.export import export_model, max_abs_diff

    model = small_model()
    x2, x3 = torch.randn(2, 3, 2, 4, 4), torch.randn(3, 3, 2, 4, 4)
    path = str(tmp_path / "m.pt2")
    export_model(model, x2, path, "torch_export")
    assert max_abs_diff(model, path, "torch_export", x3) <= 1e-5


def test_compiled_inference_gives_the_eager_outputs():
    model = small_model()
    x = torch.randn(3, 3, 2, 4, 4)
    with torch.no_grad():
        eager = model(x)
        wrapped = CompiledInference(model, batch_size=4, backend="eager")
        compiled = wrapped(x)
    assert wrapped.compiled_ok and compiled.shape == (3, 4) and torch.allclose(compiled, eager, atol=1e-6)


def test_features_with_the_classifier_stripped_are_globally_pooled():
    """Feature extraction (vidnl.clip_features) replaces head.fc by the identity: the head then
    gives the globally pooled B×F features, not a softmax over feature channels."""
    from vidnl.clip_features import feature_model

    class Net(nn.Module):
        def __init__(self, seq):
            super().__init__()
            self.stem, self.head = seq[0], seq[1]

        def forward(self, x):
            return self.head(self.stem(x))

    model = Net(small_model())
    x = torch.randn(2, 3, 2, 4, 4)
    with torch.no_grad():
        feats = feature_model(model)(x)
        assert torch.allclose(feats, model.stem(x).mean((2, 3, 4)), atol=1e-6)
        assert model(x).shape == (2, 4) and torch.allclose(model(x).exp().sum(1), torch.ones(2))  # untouched


def test_kernel_from_a_real_forward_where_the_meta_device_cannot_run(monkeypatch):
    """An operation without a meta kernel: the kernel comes from a forward pass on the CPU."""
    from vidnl.models import build as build_mod

    def no_meta(model):
        class Fail(nn.Module):
            def forward_features(self, x):
                raise NotImplementedError("Could not run 'aten::op' with arguments from the 'Meta' backend")
        return Fail()

    monkeypatch.setattr(build_mod, "_meta_copy", no_meta)
    cfg = cfg_of("MODEL.ARCH", "i3d", "RESNET.DEPTH", "18", "DATA.NUM_FRAMES", "4", "DATA.TRAIN_CROP_SIZE", "64",
                 "DATA.TRAIN_JITTER_SCALES", "[64, 80]", "DATA.TEST_CROP_SIZE", "64")
    model = build_mod.MODEL_REGISTRY["i3d"](cfg)
    build_mod.apply_test_head(cfg, model)
    assert model.head.test_pool_kernel == (2, 2, 2)


def test_too_few_frames_is_the_usual_config_error():
    with pytest.raises(ConfigError, match="DATA.NUM_FRAMES: 1 frame is too few for this network"):
        build_model(cfg_of("MODEL.ARCH", "p3d", "RESNET.DEPTH", "63", "DATA.NUM_FRAMES", "1", "DATA.TEST_CROP_SIZE",
                           "64"))
