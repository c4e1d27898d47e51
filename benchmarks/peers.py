#!/usr/bin/env python
"""vidnl against the peers' own code: same weights, same outputs, one process, alternating runs.

Each row pairs a peer's module with vidnl's equivalent, copies the peer's weights into vidnl's
module (names mapped explicitly below, or through vidnl's own pytorchvideo checkpoint loader for
whole networks), and checks in the same run, before any timing, that the outputs (and for
forward+backward the input gradients, or the logits and loss of a training step) agree to
``TOL`` relative to their scale; a network whose outputs do not also counts as equal when
vidnl's results (eval logits, training-step logits and loss) are each no farther from the peer's
float64 run than ``FP64_FACTOR`` times the peer's own float32 results (see below). A pair that does not agree gets "outputs differ: max
|diff| = X" and no times and no ratio: a benchmark that times two different functions must not
print one.

Then peer and vidnl run alternately (peer, vidnl, vidnl, peer, ...: the order flips every round so
neither always runs second) and the median of each is reported; ratio = peer time / vidnl time
(> 1: vidnl is faster). ``fwd``: blocks in eval mode and networks' eval forward, under no_grad.
``fwd+bwd``: blocks in training mode, forward and backward of a fixed output gradient;
networks: a training step (forward, cross-entropy, backward, SGD step).

Peak memory: every measured side of every row also runs in a fresh process (this script with
``--_memory-child``) that builds its module and input, runs one forward+backward as a warm-up (lazy
library buffers, thread pools), resets the high-water mark (writes "5" to /proc/self/clear_refs,
Linux), runs one more forward+backward (networks: one training step) and reads ``VmHWM`` from
/proc/self/status; the MB above the resident size at the reset are reported (glibc's mmap
threshold fixed, so freed buffers leave the resident set alike on both sides).

Peers: pytorchvideo (installed): ``NonLocal`` (``create_nonlocal``) and the hub I3D-R50 /
Slow-R50. From local checkouts (never committed; skipped with a note when absent):
``--slowfast PATH`` (PySlowFast's ``Nonlocal``, slowfast/models/nonlocal_helper.py, and its whole
``ResNet`` built from configs/Kinetics/c2/I3D_NLN_8x8_R50.yaml by its own config system),
``--snl PATH`` (SNL_ICCV2021, SNL-Classification/model/nls: ``Stage`` with one ``SNLUnit``, run
per frame on B·T×C×H×W), ``--cgnl PATH`` (cgnl-network.pytorch, model/resnet.py ``SpatialCGNL``,
dot kernel, 8 groups, on B×C×H×W).

    python benchmarks/peers.py                                   # pytorchvideo rows
    python benchmarks/peers.py --snl /tmp/snl --cgnl /tmp/cgnl --slowfast /tmp/slowfast \\
        --json benchmarks/results/peers.json
    python benchmarks/peers.py --quick                           # tiny sizes, CI
    python benchmarks/peers.py --slowfast /tmp/slowfast --rows slowfast_i3d_nl:8x224 --net-batch 2 \\
        --vidnl-mode compile --json benchmarks/results/peers_networks.json --merge

``--vidnl-mode`` runs vidnl's side as a user would switch it on: ``channels_last`` (model and
input in torch.channels_last_3d, TRAIN.CHANNELS_LAST), ``compile`` (torch.compile, inductor,
TRAIN.COMPILE; compiled during the equality check, before any timing) or both. The peer always
runs as its own code does, eagerly.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import types
import warnings
from concurrent.futures import ThreadPoolExecutor
from datetime import date

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from vidnl.errors import VidnlUserError  # noqa: E402

# max |diff| allowed, relative to max(1, max |reference|), float32: the same function summed in
# another order (SDPA vs explicit softmax, N×M sums of 6272×1568 terms) differs by up to ~2e-4
# at res3; a 1 % change of the weights by ~2e-2.
TOL = 1e-3
# Networks: their logits go through ~50 layers (training steps: training-mode BNs), and float32
# itself is about that far from the exact result: PySlowFast's own I3D-NL training-step logits
# differ from its float64 run by 1.1e-3 relative (8×112², random norms), pytorchvideo's tiny
# I3D-R50 (batch 1, 1×1 final maps) by 2.1e-2. So a network also counts as equal when vidnl's
# float32 results are no farther from the peer's float64 run than FP64_FACTOR × the peer's own
# float32 results are (another summation order: channels-last kernels, a compiled graph). A 1 %
# weight change is ~100× farther (``--perturb-vidnl``).
FP64_FACTOR = 3.0

# Block sizes: name -> (C, Cs, T, H, W); the batch is --batch.
BLOCK_SIZES = {
    "res2": (256, 128, 8, 56, 56),
    "res3": (512, 256, 8, 28, 28),
    "res4": (1024, 512, 8, 14, 14),
    "tiny": (16, 8, 2, 6, 6),
}
# Network sizes: name -> (T, H=W, base width or None for the published 64).
NET_SIZES = {"8x112": (8, 112, None), "8x224": (8, 224, None), "8x256": (8, 256, None), "tiny": (4, 32, 8)}

# (case, size) rows of the full run; the quick run uses DEFAULT_QUICK.
DEFAULT_ROWS = [
    ("nl", "res3"), ("nl", "res4"), ("nl_pool", "res3"), ("nl_pool", "res4"),
    ("slowfast_nl", "res3"), ("slowfast_nl", "res4"), ("slowfast_nl_pool", "res3"),
    ("snl", "res3"), ("cgnl", "res3"), ("cgnl", "res4"),
    ("i3d_r50", "8x112"), ("slow_r50", "8x112"), ("slowfast_i3d_nl", "8x112"),
]
DEFAULT_QUICK = [("nl", "tiny"), ("nl_pool", "tiny"), ("i3d_r50", "tiny")]
CASE_PEER = {"nl": "pytorchvideo", "nl_pool": "pytorchvideo", "slowfast_nl": "slowfast", "slowfast_nl_pool": "slowfast",
             "snl": "snl", "cgnl": "cgnl", "i3d_r50": "pytorchvideo", "slow_r50": "pytorchvideo", "slowfast_i3d_nl": "slowfast"}
NET_CASES = {"i3d_r50", "slow_r50", "slowfast_i3d_nl"}
# How vidnl's side runs (--vidnl-mode): (channels-last 3D, torch.compile).
VIDNL_MODES = {"eager": (False, False), "channels_last": (True, False), "compile": (False, True),
               "compile_channels_last": (True, True)}
# PySlowFast's released I3D-NL: its config file in the checkout, and vidnl's config of that network.
SLOWFAST_I3D_NL_YAML = os.path.join("configs", "Kinetics", "c2", "I3D_NLN_8x8_R50.yaml")
VIDNL_I3D_NL_YAML = os.path.join(ROOT, "configs", "Kinetics", "I3D_NLN_8x8_R50.yaml")


class PeerError(VidnlUserError):
    """A peer checkout that is missing or does not hold the expected file."""


# ---------------------------------------------------------------------------------------------
# Peers from local checkouts: import just the file needed, from the path given at run time
# ---------------------------------------------------------------------------------------------
def _load_file(name: str, path: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _need(path: str, flag: str) -> str:
    if not os.path.isfile(path):
        raise PeerError(f"{flag}: expected the file {path} in the checkout; fetch the peer's repository there")
    return path


def slowfast_nonlocal_class(root: str):
    """PySlowFast's ``Nonlocal`` (slowfast/models/nonlocal_helper.py imports only torch)."""
    return _load_file("_peer_slowfast_nonlocal", _need(os.path.join(root, "slowfast", "models", "nonlocal_helper.py"),
                                                       "--slowfast")).Nonlocal


def cgnl_spatial_class(root: str):
    """Official ``SpatialCGNL`` (model/resnet.py; needs termcolor)."""
    return _load_file("_peer_cgnl_resnet", _need(os.path.join(root, "model", "resnet.py"), "--cgnl")).SpatialCGNL


def snl_stage_class(root: str):
    """Official SNL ``Stage`` (SNL-Classification/model/nls/basic.py). basic.py imports unit modules
    that the repository does not ship (arma, direct): empty placeholders stand in for those, the
    real snl.py is loaded from the checkout."""
    base = os.path.join(root, "SNL-Classification") if os.path.isdir(os.path.join(root, "SNL-Classification")) else root
    nls = os.path.join(base, "model", "nls")
    _need(os.path.join(nls, "basic.py"), "--snl")
    for pkg in ("model", "model.nls"):
        if pkg not in sys.modules or not hasattr(sys.modules[pkg], "__path__"):
            m = types.ModuleType(pkg)
            m.__path__ = [os.path.join(base, *pkg.split("."))]
            sys.modules[pkg] = m
    for unit, cls in [("snl", "SNLUnit"), ("nl", "NLUnit"), ("ns", "NSUnit"), ("dnl", "DNLUnit"),
                      ("arma", "ARMAUnit"), ("direct", "DirectNLUnit"), ("caylay", "CayleySNLUnit")]:
        path = os.path.join(nls, f"{unit}.py")
        if f"model.nls.{unit}" in sys.modules:
            continue
        try:
            _load_file(f"model.nls.{unit}", path) if os.path.isfile(path) else None
        except Exception:  # an unused unit with missing deps
            pass
        if f"model.nls.{unit}" not in sys.modules:
            placeholder = types.ModuleType(f"model.nls.{unit}")
            setattr(placeholder, cls, None)
            sys.modules[f"model.nls.{unit}"] = placeholder
    return _load_file("model.nls.basic", os.path.join(nls, "basic.py")).Stage


def slowfast_network_api(root: str):
    """``(ResNet, get_cfg)`` of a PySlowFast checkout: its own network builder
    (slowfast/models/video_model_builder.py) and config system (slowfast/config/defaults.py,
    fvcore). Its package ``__init__`` files import the training, AVA and contrastive code, which
    needs pytorchvideo's main branch, simplejson, psutil and detectron2: the packages are mapped to
    the checkout's folders without running those files, ``slowfast.utils.logging`` is replaced by
    the standard ``logging.getLogger``, and when detectron2 is absent its ``ROIAlign`` (built only
    by the AVA detection heads) by a class that refuses to be built. The model code is the
    checkout's, unchanged."""
    import logging

    _need(os.path.join(root, "slowfast", "models", "video_model_builder.py"), "--slowfast")
    _need(os.path.join(root, SLOWFAST_I3D_NL_YAML), "--slowfast")
    if root not in sys.path:
        sys.path.insert(0, root)
    for pkg in ("slowfast", "slowfast.models", "slowfast.utils", "slowfast.config"):
        if pkg not in sys.modules:
            module = types.ModuleType(pkg)
            module.__path__ = [os.path.join(root, *pkg.split("."))]
            sys.modules[pkg] = module
    if "slowfast.utils.logging" not in sys.modules:
        log = types.ModuleType("slowfast.utils.logging")
        log.get_logger = logging.getLogger
        sys.modules["slowfast.utils.logging"] = log
    try:
        import detectron2.layers  # noqa: F401
    except ImportError:
        d2, layers = types.ModuleType("detectron2"), types.ModuleType("detectron2.layers")

        class ROIAlign:  # only the AVA detection heads build one
            def __init__(self, *a, **k):
                raise PeerError("PySlowFast's detection head needs detectron2, which is not installed")
        layers.ROIAlign, d2.layers = ROIAlign, layers
        sys.modules["detectron2"], sys.modules["detectron2.layers"] = d2, layers
    try:
        from slowfast.config.defaults import get_cfg
        from slowfast.models.video_model_builder import ResNet
    except ImportError as e:
        raise PeerError(f"--slowfast {root}: PySlowFast's model code did not import ({e}); its model files need "
                        "fvcore and pytorchvideo") from e
    return ResNet, get_cfg


class _OnePathway(nn.Module):
    """PySlowFast's networks take a list of pathways; this one has one."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net([x])


class _EvalSoftmax(nn.Module):
    """vidnl's network with PySlowFast's head behaviour: probabilities (softmax) in eval mode,
    logits in training; so both sides do the same work. The eval logits are kept in ``logits``
    for the equality check."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.logits = None

    def forward(self, x):
        out = self.net(x)
        if self.training:
            return out
        self.logits = out
        return out.softmax(-1)


def tap_logits(net: nn.Module, logits_module) -> callable:
    """A getter of ``net``'s last logits: a forward hook on ``logits_module(net)`` (PySlowFast's
    head projection, B×T'×H'×W'×classes) keeps its output, returned as B×classes."""
    kept = {}
    logits_module(net).register_forward_hook(lambda module, inputs, output: kept.update(value=output))
    return lambda: kept["value"].reshape(kept["value"].shape[0], -1, kept["value"].shape[-1]).mean(1)


# ---------------------------------------------------------------------------------------------
# Building a pair: the peer's module, vidnl's module with the peer's weights, inputs
# ---------------------------------------------------------------------------------------------
def randomise_norms(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial norm scales/biases/statistics and conv biases: zero-initialised final norms
    would make every block the identity and the equality check vacuous."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        with torch.no_grad():
            if isinstance(m, (nn.BatchNorm3d, nn.BatchNorm2d, nn.GroupNorm)):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                if getattr(m, "running_mean", None) is not None:
                    m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                    m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
            elif isinstance(m, (nn.Conv3d, nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))


# peer parameter prefix -> vidnl parameter prefix
PTV_NL_NAMES = {"conv_theta": "theta", "conv_phi": "phi", "conv_g": "g", "conv_out": "out_proj.0", "norm": "bn"}
SLOWFAST_NL_NAMES = {"conv_theta": "theta", "conv_phi": "phi", "conv_g": "g", "conv_out": "out_proj.0", "bn": "bn"}
SNL_NAMES = {"t": "theta", "p": "phi", "stages.0.g": "g", "stages.0.w_1": "out_proj.0", "stages.0.w_2": "out_proj.1",
             "stages.0.bn": "bn"}
CGNL_NAMES = {"t": "theta", "p": "phi", "g": "g", "z": "out_proj.0", "gn": "bn"}


def copy_renamed(peer: nn.Module, ours: nn.Module, names: dict) -> None:
    """Load ``peer``'s state into ``ours`` under the names ``names`` maps (longest prefix first), strictly."""
    state, target = {}, ours.state_dict()
    for k, v in peer.state_dict().items():
        prefix = max((p for p in names if k == p or k.startswith(p + ".")), key=len, default=None)
        if prefix is None:
            raise KeyError(f"peer tensor {k!r} has no vidnl name")
        name = names[prefix] + k[len(prefix):]
        if name in target and v.dim() == 4 and target[name].dim() == 5 and v.shape[2:] == (1, 1):
            v = v.unsqueeze(2)  # a 2D 1×1 kernel (official SNL/CGNL) -> vidnl's 1×1×1 Conv3d
        state[name] = v
    ours.load_state_dict(state, strict=True)


def build_pair(case: str, size: str, args, side: str = "both") -> dict:
    """``dict(peer=, ours=, x=, y=, kind=)`` for a row; ``side`` "peer"/"ours" builds only that one
    (the memory child). Weights: the peer's, randomised norms, copied into vidnl's module."""
    torch.manual_seed(0)
    build_peer, build_ours = side in ("both", "peer"), side in ("both", "ours")
    peer = ours = None
    if case in NET_CASES:
        t, s, width = NET_SIZES[size]
        pair = _build_net(case, t, s, width, args, build_peer, build_ours)
        apply_vidnl_mode(pair, args.vidnl_mode)
        return pair
    from vidnl.nonlocal_blocks import build_nonlocal_block

    c, cs, t, h, w = BLOCK_SIZES[size]
    b = args.batch
    if case in ("nl", "nl_pool", "slowfast_nl", "slowfast_nl_pool"):
        pool = (1, 2, 2) if case.endswith("_pool") else (1, 1, 1)
        if case.startswith("slowfast"):
            cls = slowfast_nonlocal_class(args.slowfast)
            peer = cls(c, cs, pool_size=list(pool) if pool != (1, 1, 1) else None, instantiation="softmax")
            names = SLOWFAST_NL_NAMES
        else:
            from pytorchvideo.layers.nonlocal_net import create_nonlocal
            peer = create_nonlocal(dim_in=c, dim_inner=cs, pool_size=pool, instantiation="softmax")
            names = PTV_NL_NAMES
        x_shape = (b, c, t, h, w)
        if build_ours:
            ours = build_nonlocal_block("nl", c, dim_inner=cs, style="official", pool_size=list(pool),
                                        kernel="embedded_gaussian")
    elif case == "snl":
        stage = snl_stage_class(args.snl)
        peer = stage(c, cs, nl_type="snl", stage_num=1)
        names, x_shape = SNL_NAMES, (b * t, c, h, w)  # per frame
        if build_ours:
            ours = build_nonlocal_block("snl", c, dim_inner=cs, style="official")
    elif case == "cgnl":
        cls = cgnl_spatial_class(args.cgnl)
        with contextlib.redirect_stdout(io.StringIO()):  # its constructor prints warnings in colour
            peer = cls(c, cs, use_scale=False, groups=8)
        names, x_shape = CGNL_NAMES, (b, c, h, w)
        if build_ours:
            ours = build_nonlocal_block("cgnl", c, dim_inner=cs, style="official", groups=8, kernel="dot")
    else:
        raise ValueError(f"unknown case {case!r}")
    randomise_norms(peer, 1)
    if build_ours:
        copy_renamed(peer, ours, names)
        if args.perturb_vidnl:
            perturb(ours)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(x_shape, generator=g)
    pair = dict(peer=peer if build_peer else None, ours=ours, x=x, dy=torch.randn(x_shape, generator=g), kind="block")
    apply_vidnl_mode(pair, args.vidnl_mode)
    return pair


def _build_net(case, t, s, width, args, build_peer, build_ours) -> dict:
    if case == "slowfast_i3d_nl":
        peer, weights, fmt, ours = _slowfast_i3d_nl(t, s, width, args, build_ours)
    else:
        peer, weights, fmt, ours = _pytorchvideo_net(case, t, s, width, build_ours)
    g = torch.Generator().manual_seed(2)
    x = torch.randn((args.net_batch, 3, t, s, s), generator=g)
    y = torch.randint(0, 400, (args.net_batch,), generator=g)
    calibrate_running_stats(peer, x)
    if build_ours:
        from vidnl.models.weights import load_weights

        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, f"{case}.pyth")
            torch.save({"model_state": weights.state_dict()}, path)
            report = load_weights(ours, path, fmt=fmt)
        if report.get("missing") or report.get("unexpected"):
            raise RuntimeError(f"{case}: the {fmt} weights do not fit vidnl's model: {report}")
        if args.perturb_vidnl:
            perturb(ours)
    pair = dict(peer=peer if build_peer else None, ours=ours, x=x, y=y, kind="net")
    if case == "slowfast_i3d_nl":
        # PySlowFast returns probabilities in eval mode: any two networks' agree to 1e-3 when they are
        # near 1/400 or saturated, so its logits (its head's projection, tapped) are compared.
        pair["peer_logits_module"] = lambda net: net.net.head.projection
        pair["eval_logits"] = {"peer": tap_logits(peer, pair["peer_logits_module"])}
        if build_ours:
            pair["ours"] = _EvalSoftmax(ours)
            pair["eval_logits"]["ours"] = lambda: pair["ours"].logits
    return pair


def _pytorchvideo_net(case, t, s, width, build_ours) -> tuple:
    """pytorchvideo's hub network (randomised norms), the module whose state is its checkpoint, the
    loader's format, vidnl's network."""
    from pytorchvideo.models import hub
    from pytorchvideo.models.resnet import create_resnet

    t_out = t // 2 if case == "i3d_r50" else t
    s_out = -(-s // 32)
    kw = dict(model_num_class=400, dropout_rate=0.0, head_pool_kernel_size=(t_out, s_out, s_out))
    if width is not None:
        kw["stem_dim_out"] = width
    if case == "i3d_r50":
        peer = hub.i3d_r50(pretrained=False, **kw)
    elif (t_out, s_out) == (8, 7) and width is None:
        peer = hub.slow_r50(pretrained=False, model_num_class=400, dropout_rate=0.0)
    else:  # hub.slow_r50 fixes the head pool for 8×224²: the same builder with the pool for this size
        peer = create_resnet(stem_conv_kernel_size=(1, 7, 7), model_depth=50, **kw)
    randomise_norms(peer, 1)
    ours = None
    if build_ours:
        import vidnl

        config = {"MODEL.DROPOUT_RATE": 0.0}
        if width is not None:
            config["RESNET.BASE_WIDTH"] = width
        ours = vidnl.create_model(case, num_classes=400, config=config)
    return peer, peer, "pytorchvideo", ours


def _slowfast_i3d_nl(t, s, width, args, build_ours) -> tuple:
    """PySlowFast's I3D_NLN_8x8_R50 built by PySlowFast from its own config file (dropout off, the
    head pool for this clip size), and vidnl's network from configs/Kinetics/I3D_NLN_8x8_R50.yaml,
    which loads PySlowFast's checkpoints (MODEL.WEIGHTS_FORMAT pyslowfast)."""
    resnet, get_cfg = slowfast_network_api(args.slowfast)
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(args.slowfast, SLOWFAST_I3D_NL_YAML))
    cfg.NUM_GPUS, cfg.MODEL.DROPOUT_RATE, cfg.DATA.NUM_FRAMES = 0, 0.0, t
    # its head pools crop/32 cells: the crop whose pool covers the whole final map (112 -> 4 cells)
    cfg.DATA.TRAIN_CROP_SIZE = cfg.DATA.TEST_CROP_SIZE = 32 * -(-s // 32)
    if width is not None:
        cfg.RESNET.WIDTH_PER_GROUP = width
    with contextlib.redirect_stdout(io.StringIO()):
        net = resnet(cfg)
    randomise_norms(net, 1)
    ours = None
    if build_ours:
        from vidnl.config.validate import load_config
        from vidnl.models.build import build_model

        opts = ["MODEL.NUM_CLASSES", "400", "MODEL.DROPOUT_RATE", "0.0", "DATA.NUM_FRAMES", str(t)]
        if width is not None:
            opts += ["RESNET.BASE_WIDTH", str(width)]
        ours = build_model(load_config(VIDNL_I3D_NL_YAML, opts))
    return _OnePathway(net), net, "pyslowfast", ours


def apply_vidnl_mode(pair: dict, mode: str) -> None:
    """vidnl's side as ``--vidnl-mode`` says: channels-last 3D model and input (the loader hands
    the batch over in that layout), and/or ``torch.compile`` (inductor)."""
    channels_last, compiled = VIDNL_MODES[mode]
    ours = pair["ours"]
    if ours is None:
        return
    if channels_last:
        layout = torch.channels_last_3d if pair["x"].dim() == 5 else torch.channels_last
        ours = ours.to(memory_format=layout)
        pair["x_ours"] = pair["x"].contiguous(memory_format=layout)
    if compiled:
        ours = torch.compile(ours)
    pair["ours"] = ours


def calibrate_running_stats(model: nn.Module, x: torch.Tensor) -> None:
    """BN running statistics set to the batch statistics of ``x`` (one training-mode forward with
    a cumulative average), as a trained network's are: with the random statistics of
    ``randomise_norms`` an eval forward through 50 layers grows to logits of 1e3–1e5, where
    either side's float32 rounding alone differs by more than the tolerance."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        model(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)


def perturb(model: nn.Module) -> None:
    """Add 1% noise to every weight (``--perturb-vidnl``: the refusal check of the benchmark)."""
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g) * (p.abs().mean() + 1e-3))


# ---------------------------------------------------------------------------------------------
# One step of each kind
# ---------------------------------------------------------------------------------------------
def step_fns(pair: dict, which: str) -> tuple:
    """(forward, forward+backward) closures of one side; each returns what equality compares."""
    m, x = pair[which], pair.get(f"x_{which}", pair["x"])
    if pair["kind"] == "block":
        dy = pair["dy"]

        def fwd():
            m.eval()
            with torch.no_grad():
                return [m(x)]

        def fwd_bwd():
            m.train()
            xi = x.detach().requires_grad_(True)
            out = m(xi)
            out.backward(dy)
            m.zero_grad(set_to_none=True)
            return [out.detach(), xi.grad]
        return fwd, fwd_bwd
    y, logits = pair["y"], pair.get("eval_logits", {}).get(which)
    opt = torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9)

    def fwd():
        m.eval()
        with torch.no_grad():
            out = m(x)
        return [logits() if logits else out]

    def train_step():
        m.train()
        opt.zero_grad(set_to_none=True)
        logits = m(x)
        loss = nn.functional.cross_entropy(logits, y)
        loss.backward()
        opt.step()
        return [logits.detach(), loss.detach().reshape(1)]
    return fwd, train_step


def float64_reference(peer: nn.Module, pair: dict, step: bool = True) -> tuple[list, list]:
    """``peer`` (a copy taken before its float32 training step) run in float64: its eval output
    (logits) and, with ``step``, its training-step logits and loss (batch statistics as in
    training): what both sides' float32 results approximate."""
    peer = peer.double()
    x = pair["x"].double()
    logits_of = pair.get("peer_logits_module")  # the peer returns probabilities in eval mode
    tapped = tap_logits(peer, logits_of) if logits_of else None
    with torch.no_grad():
        peer.eval()
        out = peer(x)
        fwd = [tapped() if tapped else out]
        if not step:
            return fwd, []
        peer.train()
        logits = peer(x)
        loss = nn.functional.cross_entropy(logits, pair["y"])
    return fwd, [logits, loss.reshape(1)]


def max_rel_diff(ref: list, out: list) -> tuple[float, float]:
    """(max |diff|, max |diff| / max(1, max |ref|)) over the compared tensors."""
    diff, rel = 0.0, 0.0
    for a, b in zip(ref, out):
        d = (a.double() - b.double()).abs().max().item()
        diff, rel = max(diff, d), max(rel, d / max(1.0, a.abs().max().item()))
    return diff, rel


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def alternate(fn_peer, fn_ours, repeat: int) -> tuple[float, float]:
    """Median seconds of each after one warm-up each; peer and vidnl alternate, order flipping each round."""
    fn_peer(), fn_ours()
    tp, to = [], []
    for i in range(repeat):
        if i % 2 == 0:
            tp.append(timed(fn_peer))
            to.append(timed(fn_ours))
        else:
            to.append(timed(fn_ours))
            tp.append(timed(fn_peer))
    return statistics.median(tp), statistics.median(to)


# ---------------------------------------------------------------------------------------------
# Peak memory in a fresh process
# ---------------------------------------------------------------------------------------------
def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def memory_child(spec: dict) -> dict:
    """In a fresh process: build one side, reset VmHWM, one forward+backward (networks: a
    training step), MB of VmHWM above the resident size at the reset."""
    torch.set_num_threads(spec["threads"])
    args = argparse.Namespace(**spec["args"])
    pair = build_pair(spec["case"], spec["size"], args, side=spec["side"])
    _, fwd_bwd = step_fns(pair, spec["side"])
    fwd_bwd()  # warm-up: lazy library buffers and thread pools are not the module's memory
    import gc
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status_kb("VmRSS")
    fwd_bwd()
    return {"peak_mb": (_status_kb("VmHWM") - base) / 1024}


def can_reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _status_kb("VmHWM")
        return True
    except (OSError, RuntimeError):
        return False


def run_memory_child(case: str, size: str, side: str, args) -> float | None:
    keys = ("batch", "net_batch", "slowfast", "snl", "cgnl", "perturb_vidnl", "vidnl_mode")
    spec = dict(case=case, size=size, side=side, threads=torch.get_num_threads(),
                args={k: getattr(args, k) for k in keys})
    # A fixed mmap threshold: glibc's adaptive one would keep the warm-up's freed buffers in the
    # heap (counted in the baseline) for one side and not the other.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--_memory-child", json.dumps(spec)],
                          capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        print(f"note: memory child for {case} {size} {side} failed: {proc.stderr.strip()[-300:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1])["peak_mb"]


# ---------------------------------------------------------------------------------------------
# Rows, tables
# ---------------------------------------------------------------------------------------------
def peer_available(case: str, args) -> str | None:
    """None when the row's peer can run, else the note saying why it is skipped."""
    peer = CASE_PEER[case]
    if peer == "pytorchvideo":
        try:
            import pytorchvideo.models.hub  # noqa: F401
        except Exception as e:  # noqa: BLE001
            return f"pytorchvideo not importable ({type(e).__name__}: {e})"
        return None
    path = getattr(args, peer)
    if not path:
        return f"--{peer} PATH not given"
    if not os.path.isdir(path):
        raise PeerError(f"--{peer}: {path} is not a directory (expected a checkout of the peer's repository)")
    return None


def measure_row(case: str, size: str, args) -> dict:
    row = {"case": case, "peer": CASE_PEER[case], "size": size, "mode": args.vidnl_mode, "ratio_fwd": None,
           "ratio_fwd_bwd": None, "equal": None, "checked_equality": False}
    pair = build_pair(case, size, args)
    fp, fbp = step_fns(pair, "peer")
    fo, fbo = step_fns(pair, "ours")
    # Equality first, in this run: forward (eval), then forward+backward / training step.
    fwd_peer, fwd_ours = fp(), fo()
    d1, r1 = max_rel_diff(fwd_peer, fwd_ours)
    # the float64 reference needs the weights before the training step changes them
    before_step = copy.deepcopy(pair["peer"]) if pair["kind"] == "net" else None
    step_peer, step_ours = (None, None) if args.fwd_only else (fbp(), fbo())
    d2, r2 = (0.0, 0.0) if args.fwd_only else max_rel_diff(step_peer, step_ours)
    row.update(checked_equality=True, max_abs_diff=max(d1, d2), max_rel_diff=max(r1, r2), tolerance=TOL,
               rel_diff_fwd=r1, rel_diff_fwd_bwd=None if args.fwd_only else r2, fwd_only=args.fwd_only)
    row["equal"] = max(r1, r2) <= TOL
    if not row["equal"] and pair["kind"] == "net":
        ref_fwd, ref_step = float64_reference(before_step, pair, step=not args.fwd_only)
        errors = [(max_rel_diff(ref_fwd, fwd_peer)[1], max_rel_diff(ref_fwd, fwd_ours)[1])]
        if not args.fwd_only:
            errors.append((max_rel_diff(ref_step, step_peer)[1], max_rel_diff(ref_step, step_ours)[1]))
        row.update(fp64_rel_err_peer=max(e for e, _ in errors), fp64_rel_err_vidnl=max(e for _, e in errors),
                   equal=all(e_ours <= FP64_FACTOR * e_peer for e_peer, e_ours in errors))
    if not row["equal"]:
        return row
    repeat = args.repeat if pair["kind"] == "block" else args.net_repeat
    tp, to = alternate(fp, fo, repeat)
    row.update(fwd_peer_ms=1e3 * tp, fwd_vidnl_ms=1e3 * to, ratio_fwd=tp / to, repeat=repeat)
    if not args.fwd_only:
        tp, to = alternate(fbp, fbo, repeat)
        row.update(fwd_bwd_peer_ms=1e3 * tp, fwd_bwd_vidnl_ms=1e3 * to, ratio_fwd_bwd=tp / to)
    return row


def size_text(case: str, size: str, args) -> str:
    if case in NET_CASES:
        t, s, w = NET_SIZES[size]
        return f"{args.net_batch}×3×{t}×{s}²" + (f" (width {w})" if w else "")
    c, cs, t, h, w = BLOCK_SIZES[size]
    if case == "snl":
        return f"{size} {args.batch * t}×{c}×{h}×{w} (per frame)"
    if case == "cgnl":
        return f"{size} {args.batch}×{c}×{h}×{w}"
    return f"{size} {args.batch}×{c}×{t}×{h}×{w}"


CASE_TEXT = {"nl": "NL vs pytorchvideo NonLocal", "nl_pool": "NL pool [1,2,2] vs pytorchvideo NonLocal",
             "slowfast_nl": "NL vs PySlowFast Nonlocal", "slowfast_nl_pool": "NL pool [1,2,2] vs PySlowFast Nonlocal",
             "snl": "SNL vs official SNL", "cgnl": "CGNL dot, 8 groups, vs official SpatialCGNL",
             "i3d_r50": "I3D-R50 vs pytorchvideo i3d_r50", "slow_r50": "Slow-R50 vs pytorchvideo slow_r50",
             "slowfast_i3d_nl": "I3D-R50 + 5 NL vs PySlowFast I3D_NLN_8x8_R50"}


def row_key(row: dict) -> tuple:
    return row["case"], row["size"], row.get("mode", "eager")


def row_name(row: dict) -> str:
    mode = row.get("mode", "eager")
    return CASE_TEXT[row["case"]] + ("" if mode == "eager" else f" (vidnl {mode.replace('_', ' ')})")


def _f(v, fmt):
    return "—" if v is None else format(v, fmt)


def table(rows: list[dict], header: dict) -> str:
    out = [f"Machine: {header['platform']}, {header['cpu_count']} CPUs, torch {header['torch']}, "
           f"{header['threads']} threads, float32, block batch {header['batch']}, network batch {header['net_batch']}; "
           f"{header['date']}. Peer and vidnl alternate in one process (median of {header['repeat']} runs per block, "
           f"{header['net_repeat']} per network); ratio = peer time / vidnl time (> 1: vidnl faster). Memory: "
           f"VmHWM above the baseline in a fresh process per side, one fwd+bwd (networks: one training step). "
           f"Equality: max |diff| ≤ {header.get('tolerance', TOL):g}·scale, scale = max(1, max |peer output|), "
           f"or for a network vidnl no farther from the peer's float64 run than "
           f"{header.get('fp64_factor', FP64_FACTOR):g}× the peer's float32 results are (last column: vidnl vs "
           "peer, relative to the scale).", "",
           "| case | size | fwd peer ms | fwd vidnl ms | fwd ratio | fwd+bwd peer ms | fwd+bwd vidnl ms | fwd+bwd ratio "
           "| memory peer / vidnl MB | max \\|diff\\| / scale |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        name = row_name(r)
        if r.get("skipped"):
            out.append(f"| {name} | {r['size_text']} | skipped: {r['skipped']} | | | | | | | |")
            continue
        fp64 = ("" if r.get("fp64_rel_err_vidnl") is None else
                f" (vs float64: vidnl {r['fp64_rel_err_vidnl']:.2g}, peer {r['fp64_rel_err_peer']:.2g})")
        if not r["equal"]:
            out.append(f"| {name} | {r['size_text']} | outputs differ: max \\|diff\\| = {r['max_abs_diff']:.3g} "
                       f"(relative {r['max_rel_diff']:.3g} > {r.get('tolerance', TOL):g}){fp64}; not timed "
                       "| | | | | | | |")
            continue
        mem = f"{_f(r.get('mem_peer_mb'), '.0f')} / {_f(r.get('mem_vidnl_mb'), '.0f')}"
        ratio_fb = _f(r.get("ratio_fwd_bwd"), ".2f") + ("×" if r.get("ratio_fwd_bwd") else "")
        out.append(f"| {name} | {r['size_text']} | {r['fwd_peer_ms']:.1f} | {r['fwd_vidnl_ms']:.1f} | "
                   f"{r['ratio_fwd']:.2f}× | {_f(r.get('fwd_bwd_peer_ms'), '.1f')} | "
                   f"{_f(r.get('fwd_bwd_vidnl_ms'), '.1f')} | {ratio_fb} | {mem} | {r['max_rel_diff']:.2g}{fp64} |")
    return "\n".join(out)


def parse_rows(items: list[str] | None, quick: bool) -> list[tuple[str, str]]:
    if not items:
        return DEFAULT_QUICK if quick else DEFAULT_ROWS
    rows = []
    for item in items:
        case, _, size = item.partition(":")
        if case not in CASE_PEER:
            raise PeerError(f"--rows: unknown case {case!r} in {item!r}; choose from {sorted(CASE_PEER)}")
        sizes = NET_SIZES if case in NET_CASES else BLOCK_SIZES
        size = size or ("tiny" if quick else ("8x112" if case in NET_CASES else "res3"))
        if size not in sizes:
            raise PeerError(f"--rows: unknown size {size!r} for {case!r}; choose from {sorted(sizes)}")
        rows.append((case, size))
    return rows


def ordered(rows: list[dict]) -> list[dict]:
    """Rows in the order of the default list (merged runs keep the table's order)."""
    order = {key: i for i, key in enumerate(DEFAULT_ROWS + DEFAULT_QUICK)}
    modes = list(VIDNL_MODES)
    return sorted(rows, key=lambda r: (order.get((r["case"], r["size"]), len(order)), modes.index(row_key(r)[2])))


def write_json(path: str, header: dict, rows: list[dict]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"machine": header, "rows": rows}, f, indent=1)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--slowfast", help="a PySlowFast checkout (github.com/facebookresearch/SlowFast)")
    p.add_argument("--snl", help="an SNL_ICCV2021 checkout (github.com/zh460045050/SNL_ICCV2021)")
    p.add_argument("--cgnl", help="a cgnl-network.pytorch checkout (github.com/KaiyuYue/cgnl-network.pytorch)")
    p.add_argument("--rows", nargs="+", help="case[:size] rows, e.g. nl:res3 cgnl:res4 i3d_r50 (default: all)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, few repeats (CI)")
    p.add_argument("--batch", type=int, default=2, help="batch of the block rows (default 2)")
    p.add_argument("--net-batch", type=int, default=1, help="batch of the network rows (default 1)")
    p.add_argument("--repeat", type=int, default=None, help="timed runs per side per block row (default 9; quick 3)")
    p.add_argument("--net-repeat", type=int, default=None, help="timed runs per side per network row (default 5; quick 2)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--no-memory", action="store_true", help="skip the fresh-process peak memory runs")
    p.add_argument("--fwd-only", action="store_true",
                   help="check and time the eval forward only (e.g. the 10×3 test views of a video as one batch)")
    p.add_argument("--json", help="write the rows and the machine to this JSON file (rewritten after every row)")
    p.add_argument("--merge", action="store_true", help="keep the other rows of --json's file, replace these")
    p.add_argument("--table-from", help="print the table of a JSON written by --json, measuring nothing")
    p.add_argument("--vidnl-mode", choices=sorted(VIDNL_MODES), default="eager",
                   help="how vidnl's side runs: eager (default), channels_last, compile, compile_channels_last")
    p.add_argument("--perturb-vidnl", action="store_true",
                   help="add noise to vidnl's copied weights (checks that the benchmark refuses to print ratios)")
    p.add_argument("--_memory-child", dest="memory_child", help=argparse.SUPPRESS)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    if args.memory_child:
        print(json.dumps(memory_child(json.loads(args.memory_child))))
        return 0
    try:
        if args.table_from:
            if not os.path.isfile(args.table_from):
                raise PeerError(f"--table-from: no file {args.table_from}")
            with open(args.table_from) as f:
                saved = json.load(f)
            print(table(saved["rows"], saved["machine"]))
            return 0
        if args.threads:
            torch.set_num_threads(args.threads)
        args.repeat = args.repeat or (3 if args.quick else 9)
        args.net_repeat = args.net_repeat or (2 if args.quick else 5)
        for v, name in [(args.batch, "--batch"), (args.net_batch, "--net-batch"), (args.repeat, "--repeat"),
                        (args.net_repeat, "--net-repeat")]:
            if v < 1:
                raise PeerError(f"{name}: must be ≥ 1, got {v}")
        wanted = parse_rows(args.rows, args.quick)
        memory = not args.no_memory and can_reset_hwm()
        if not args.no_memory and not memory:
            print("note: /proc/self/clear_refs cannot reset VmHWM here: peak memory not measured", file=sys.stderr)
        header = dict(platform=platform.platform(), processor=platform.processor() or platform.machine(),
                      cpu_count=os.cpu_count(), torch=torch.__version__, threads=torch.get_num_threads(),
                      batch=args.batch, net_batch=args.net_batch, repeat=args.repeat, net_repeat=args.net_repeat,
                      date=date.today().isoformat(), tolerance=TOL, fp64_factor=FP64_FACTOR, dtype="float32")
        rows, kept = [], []
        if args.merge and args.json and os.path.isfile(args.json):
            with open(args.json) as f:
                kept = [r for r in json.load(f)["rows"]
                        if row_key(r) not in {(c, z, args.vidnl_mode) for c, z in wanted}]
        for case, size in wanted:
            skip = peer_available(case, args)
            if skip:
                print(f"note: {case} {size} skipped: {skip}", file=sys.stderr)
                rows.append({"case": case, "peer": CASE_PEER[case], "size": size, "mode": args.vidnl_mode,
                             "skipped": skip, "size_text": size_text(case, size, args)})
                continue
            t0 = time.perf_counter()
            row = measure_row(case, size, args)
            row["size_text"] = size_text(case, size, args)
            if row["equal"] and memory and not args.fwd_only:
                with ThreadPoolExecutor(2) as pool:  # memory only: the two fresh processes may overlap
                    mp, mo = pool.map(lambda side: run_memory_child(case, size, side, args), ["peer", "ours"])
                row.update(mem_peer_mb=mp, mem_vidnl_mb=mo)
            print(f"note: {case} {size} done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            rows.append(row)
            if args.json:  # after every row, so a long run interrupted keeps what it measured
                write_json(args.json, header, ordered(kept + rows))
        print(table(ordered(kept + rows), header))
        if args.json:
            write_json(args.json, header, ordered(kept + rows))
    except VidnlUserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
