"""Model registry: ``build_model(cfg)`` reads the config; modules themselves take plain arguments.

The config package checks keys, types and literal values only; what depends on the models is
checked here, where they are built, with the same kind of :class:`ConfigError` naming the key:
``check_model_config(cfg)`` (MODEL.ARCH registered, RESNET.DEPTH available, NONLOCAL.LOCATION in
range, RESNET.INFLATE's shape; cheap, nothing is built) runs first in ``build_model``, and
``nonlocal_factory`` turns a block constructor's ValueError into a ConfigError naming the
NONLOCAL.* key (``NONLOCAL_OPTION_KEYS``). Tools that write files call ``check_model_config``
before writing anything. Once built, ``check_input_frames`` runs the model on the meta device
(shapes only) on an input of the config's size: too few frames for its temporal kernels, strides
and pools is a ConfigError naming DATA.NUM_FRAMES (REID.SEQ_LEN) and the minimum the network
takes, instead of a RuntimeError deep in the first forward pass.
"""

from __future__ import annotations

import copy
import re
from typing import Callable, Sequence

import torch
import torch.nn as nn
from fvcore.common.config import CfgNode

from ..config.defaults import get_cfg
from ..errors import ConfigError
from ..nonlocal_blocks import BLOCK_REGISTRY, build_nonlocal_block, inner_channels, insert_nonlocal
from ..registry import Registry
from .heads import ClassificationHead
from .memory_format import use_channels_last
from .p3d import P3D_BLOCKS
from .resnet import STAGE_BLOCKS, VideoResNet
from .resnet3d import RESNET3D_BLOCKS

# MODEL.ARCH -> builder fn(cfg) -> nn.Module; metadata "stages": fn(cfg) -> (stage names, residual
# blocks per stage), what NONLOCAL.LOCATION and RESNET.INFLATE index.
MODEL_REGISTRY = Registry("model")


def register_model(name: str, stages: Callable[[CfgNode], tuple[tuple[str, ...], tuple[int, ...]]]):
    """Register a builder ``fn(cfg) -> nn.Module`` under MODEL.ARCH ``name``. ``stages(cfg)``
    returns the stage names and block counts of the configured model (raise ValueError naming
    the key for an unsupported depth); ``check_model_config`` checks NONLOCAL.LOCATION and
    RESNET.INFLATE against it."""
    return MODEL_REGISTRY.register(name, stages=stages)


def check_arch(arch: str) -> None:
    """ConfigError unless ``arch`` (MODEL.ARCH) is a registered model."""
    MODEL_REGISTRY.check(arch, "MODEL.ARCH")


def model_stages(cfg: CfgNode) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """(stage names, residual blocks per stage) of the configured model: what NONLOCAL.LOCATION
    and RESNET.INFLATE index. ConfigError for an unknown MODEL.ARCH or an unavailable depth."""
    check_arch(cfg.MODEL.ARCH)
    try:
        return MODEL_REGISTRY.metadata(cfg.MODEL.ARCH)["stages"](cfg)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def check_nonlocal_location(location: Sequence, names: Sequence[str], blocks: Sequence[int], arch: str) -> None:
    """The one range check of NONLOCAL.LOCATION: ``location[s]`` lists block indices of stage
    ``s`` (``names[s]`` with ``blocks[s]`` residual blocks) of ``arch`` (e.g. "i3d (depth 50)").
    Trailing empty entries beyond the stages are allowed (the 4-stage default on a 3-stage
    net). Raises ConfigError naming the key, the stage and the allowed indices."""
    loc = list(location)
    if len(loc) > len(blocks) and any(loc[len(blocks):]):
        raise ConfigError(
            f"NONLOCAL.LOCATION: {loc!r} names {len(loc)} stages, but {arch} has {len(blocks)} "
            f"({', '.join(names)})."
        )
    for stage, idx in enumerate(loc[:len(blocks)]):
        if not isinstance(idx, (list, tuple)) or not all(isinstance(i, int) and not isinstance(i, bool) for i in idx):
            raise ConfigError(
                f"NONLOCAL.LOCATION: entry {stage} ({names[stage]}) must be a list of block indices, got {idx!r}."
            )
        for i in idx:
            if not 0 <= i < blocks[stage]:
                raise ConfigError(
                    f"NONLOCAL.LOCATION: index {i} in {names[stage]} (entry {stage}) is out of range; "
                    f"{arch} {names[stage]} has {blocks[stage]} blocks, allowed indices 0..{blocks[stage] - 1}."
                )
        if len(set(idx)) != len(idx):
            raise ConfigError(f"NONLOCAL.LOCATION: repeated index in {names[stage]}: {list(idx)!r}.")


def check_inflate(cfg: CfgNode, blocks: Sequence[int]) -> None:
    """RESNET.INFLATE ([] or one list of 0/1 per residual block of every stage) fits ``blocks``."""
    inflate = cfg.RESNET.INFLATE
    if inflate and (len(inflate) != len(blocks) or any(
            not isinstance(s, (list, tuple)) or len(s) != n or not all(v in (0, 1) for v in s)
            for s, n in zip(inflate, blocks))):
        raise ConfigError(
            f"RESNET.INFLATE: expected one list of 0/1 per stage with {list(blocks)} entries for "
            f"{cfg.MODEL.ARCH} depth {cfg.RESNET.DEPTH}, got {inflate!r}."
        )


def check_model_config(cfg: CfgNode) -> None:
    """What the config says about the model fits the registered models (ConfigError naming the
    key otherwise): NONLOCAL.TYPE (a registered block), MODEL.ARCH, RESNET.DEPTH, NONLOCAL.LOCATION,
    RESNET.INFLATE, MODEL.TEST_HEAD. Builds nothing;
    the nonlocal block options are checked when the blocks are built (``nonlocal_factory``)."""
    BLOCK_REGISTRY.check(cfg.NONLOCAL.TYPE, "NONLOCAL.TYPE")
    names, blocks = model_stages(cfg)
    check_nonlocal_location(cfg.NONLOCAL.LOCATION, names, blocks, f"{cfg.MODEL.ARCH} (depth {cfg.RESNET.DEPTH})")
    check_inflate(cfg, blocks)
    check_test_head(cfg)


def _resnet_stages(cfg: CfgNode) -> tuple[tuple[str, ...], tuple[int, ...]]:
    if cfg.RESNET.DEPTH not in STAGE_BLOCKS:
        raise ValueError(f"RESNET.DEPTH: {cfg.RESNET.DEPTH} is not available for {cfg.MODEL.ARCH}; "
                         f"choose one of {sorted(STAGE_BLOCKS)}.")
    return ("res2", "res3", "res4", "res5"), STAGE_BLOCKS[cfg.RESNET.DEPTH]


# Block argument -> the NONLOCAL.* key that sets it (see nonlocal_options): a block's ValueError
# names the argument, the user's error names the key.
NONLOCAL_OPTION_KEYS = {
    "style": "NONLOCAL.STYLE", "pool_size": "NONLOCAL.POOL", "mode": "NONLOCAL.MODE",
    "implementation": "NONLOCAL.IMPLEMENTATION", "kernel": "NONLOCAL.KERNEL", "norm": "NONLOCAL.NORM",
    "order": "NONLOCAL.ORDER", "groups": "NONLOCAL.GROUPS", "recurrence": "NONLOCAL.RECURRENCE",
    "num_stages": "NONLOCAL.NS_STAGES", "num_descriptors": "NONLOCAL.NUM_DESCRIPTORS", "bias": "NONLOCAL.BIAS",
    "softmax_scale": "NONLOCAL.SOFTMAX_SCALE", "pool_at": "NONLOCAL.POOL_AT", "pool_ceil_mode": "NONLOCAL.POOL_CEIL_MODE",
    "output_activation": "NONLOCAL.OUTPUT_ACTIVATION", "a_sign": "NONLOCAL.A_SIGN", "gamma": "NONLOCAL.CGNL_GAMMA",
    "beta": "NONLOCAL.CGNL_BETA", "norm_layer": "NONLOCAL.CGNL_NORM",
}


# passed whatever their value: every block type takes them
ALWAYS_PASSED = ("style", "mode", "implementation")


def nonlocal_options(cfg: CfgNode) -> dict:
    """Block arguments from cfg.NONLOCAL (``NONLOCAL_OPTION_KEYS``) and cfg.BN. An option whose
    key is at its config default is passed as None, so that a type which does not take it
    accepts the config and the style or the constructor decides it; the defaults themselves are
    written only in ``vidnl/config/defaults.py`` and in the constructors."""
    nl, default = cfg.NONLOCAL, get_cfg().NONLOCAL
    options = {"zero_init_final_bn": nl.ZERO_INIT_FINAL_BN, "bn_eps": cfg.BN.EPSILON, "bn_momentum": cfg.BN.MOMENTUM}
    for arg, key in NONLOCAL_OPTION_KEYS.items():
        name = key.split(".", 1)[1]
        value = list(nl[name]) if isinstance(nl[name], (list, tuple)) else nl[name]
        options[arg] = value if arg in ALWAYS_PASSED or value != default[name] else None
    return options


def nonlocal_option_error(block_type: str, error: ValueError) -> ConfigError:
    """A block constructor's ValueError as the user's error: arguments renamed to their
    NONLOCAL.* keys ("does not take option 'recurrence'" -> "does not take NONLOCAL.RECURRENCE")."""
    keys = NONLOCAL_OPTION_KEYS
    msg = re.sub(r"option '(\w+)'", lambda m: keys.get(m.group(1), m.group(0)), str(error))
    # "x=": the argument as a whole word only ("mode=" is not in "pool_ceil_mode=")
    msg = re.sub(r"(?<![\w.])(\w+)=", lambda m: keys.get(m.group(1), m.group(1)) + "=", msg)
    return ConfigError(f"NONLOCAL.TYPE {block_type!r}: {msg}")


def nonlocal_inner_channels(cfg: CfgNode, dim: int) -> int:
    return inner_channels(dim, cfg.NONLOCAL.INNER_CHANNELS or None, cfg.NONLOCAL.INNER_RATIO)


def nonlocal_factory(cfg: CfgNode) -> Callable[[int], nn.Module]:
    """A function channels -> nonlocal block, configured by cfg.NONLOCAL and cfg.BN. Options that
    do not fit the type (or each other) raise ConfigError naming the NONLOCAL.* key."""
    options = nonlocal_options(cfg)

    def make(dim: int) -> nn.Module:
        try:
            return build_nonlocal_block(cfg.NONLOCAL.TYPE, dim, dim_inner=nonlocal_inner_channels(cfg, dim), **options)
        except ValueError as e:
            raise nonlocal_option_error(cfg.NONLOCAL.TYPE, e) from None
    return make


def _video_resnet(cfg: CfgNode) -> nn.Module:
    model = VideoResNet(
        depth=cfg.RESNET.DEPTH,
        arch=cfg.MODEL.ARCH,
        num_classes=cfg.MODEL.NUM_CLASSES,
        base_width=cfg.RESNET.BASE_WIDTH,
        in_channels=cfg.DATA.INPUT_CHANNEL_NUM,
        stem_temporal_kernel=cfg.RESNET.STEM_TEMPORAL_KERNEL or None,
        stem_temporal_stride=cfg.RESNET.STEM_TEMPORAL_STRIDE,
        pool1_temporal=tuple(cfg.RESNET.POOL1_TEMPORAL),
        pool2_temporal=tuple(cfg.RESNET.POOL2_TEMPORAL) or None,
        temporal_pool=cfg.RESNET.TEMPORAL_POOL,
        inflate=[list(s) for s in cfg.RESNET.INFLATE] or None,
        inflate_conv=cfg.RESNET.INFLATE_CONV,
        dropout=cfg.MODEL.DROPOUT_RATE,
        zero_init_final_bn=cfg.RESNET.ZERO_INIT_FINAL_BN,
        bn_eps=cfg.BN.EPSILON,
        bn_momentum=cfg.BN.MOMENTUM,
    )
    insert_nonlocal(model.stages, cfg.NONLOCAL.LOCATION, nonlocal_factory(cfg), model.stage_names)
    return model


register_model("c2d", _resnet_stages)(_video_resnet)
register_model("i3d", _resnet_stages)(_video_resnet)


def _with_nonlocal(cfg: CfgNode, model: nn.Module) -> nn.Module:
    insert_nonlocal(model.stages, cfg.NONLOCAL.LOCATION, nonlocal_factory(cfg), model.stage_names)
    return model


def _depth_stages(table: dict, names=("res2", "res3", "res4", "res5")):
    def stages(cfg: CfgNode):
        if cfg.RESNET.DEPTH not in table:
            raise ValueError(f"RESNET.DEPTH: {cfg.RESNET.DEPTH} is not available for {cfg.MODEL.ARCH}; "
                             f"choose one of {sorted(table)}.")
        return names, tuple(table[cfg.RESNET.DEPTH])
    return stages


@register_model("resnet2d", _resnet_stages)
def _resnet2d(cfg: CfgNode) -> nn.Module:
    """2D ResNet-18/50/101 (torchvision layout as 1×k×k kernels); images are clips with T = 1."""
    model = VideoResNet(depth=cfg.RESNET.DEPTH, arch="c2d", num_classes=cfg.MODEL.NUM_CLASSES,
                        base_width=cfg.RESNET.BASE_WIDTH, in_channels=cfg.DATA.INPUT_CHANNEL_NUM, temporal_pool=False,
                        dropout=cfg.MODEL.DROPOUT_RATE, zero_init_final_bn=cfg.RESNET.ZERO_INIT_FINAL_BN,
                        bn_eps=cfg.BN.EPSILON, bn_momentum=cfg.BN.MOMENTUM)
    return _with_nonlocal(cfg, model)


def _preresnet_stages(cfg: CfgNode):
    d = cfg.RESNET.DEPTH
    if d < 8 or (d - 2) % 6:
        raise ValueError(f"RESNET.DEPTH: {d} is not available for preresnet; it must be 6n + 2 (20, 56, 110, ...).")
    n = (d - 2) // 6
    return ("res1", "res2", "res3"), (n, n, n)


@register_model("preresnet", _preresnet_stages)
def _preresnet(cfg: CfgNode) -> nn.Module:
    from .preresnet import PreResNetCifar

    model = PreResNetCifar(depth=cfg.RESNET.DEPTH, num_classes=cfg.MODEL.NUM_CLASSES,
                           base_width=cfg.RESNET.BASE_WIDTH, in_channels=cfg.DATA.INPUT_CHANNEL_NUM,
                           dropout=cfg.MODEL.DROPOUT_RATE)
    return _with_nonlocal(cfg, model)


# The SNL authors' CIFAR bottleneck PreResNets by their names: "preresnet56" = [9, 9, 9], "110" = [18]*3.
SNL_CODE_PRERESNET_BLOCKS = {56: (9, 9, 9), 110: (18, 18, 18)}


@register_model("preresnet_snl_code", _depth_stages(SNL_CODE_PRERESNET_BLOCKS, ("res1", "res2", "res3")))
def _preresnet_snl_code(cfg: CfgNode) -> nn.Module:
    """The bottleneck PreResNet of the SNL authors' classification code (Zhu et al. 2021 (SNL), Tables 2-5)."""
    from .preresnet import PreResNetBottleneckCifar

    model = PreResNetBottleneckCifar(blocks=SNL_CODE_PRERESNET_BLOCKS[cfg.RESNET.DEPTH][0],
                                     num_classes=cfg.MODEL.NUM_CLASSES, base_width=cfg.RESNET.BASE_WIDTH,
                                     in_channels=cfg.DATA.INPUT_CHANNEL_NUM, dropout=cfg.MODEL.DROPOUT_RATE)
    return _with_nonlocal(cfg, model)


@register_model("resnet3d", _depth_stages(RESNET3D_BLOCKS))
def _resnet3d(cfg: CfgNode) -> nn.Module:
    """Hara et al.'s 3D-ResNet (RESNET.CARDINALITY 1) or 3D-ResNeXt (e.g. 32)."""
    from .resnet3d import ResNet3D

    model = ResNet3D(depth=cfg.RESNET.DEPTH, num_classes=cfg.MODEL.NUM_CLASSES, base_width=cfg.RESNET.BASE_WIDTH,
                     in_channels=cfg.DATA.INPUT_CHANNEL_NUM, cardinality=cfg.RESNET.CARDINALITY,
                     dropout=cfg.MODEL.DROPOUT_RATE, zero_init_final_bn=cfg.RESNET.ZERO_INIT_FINAL_BN,
                     shortcut=cfg.RESNET.SHORTCUT)
    return _with_nonlocal(cfg, model)


@register_model("p3d", _depth_stages(P3D_BLOCKS))
def _p3d(cfg: CfgNode) -> nn.Module:
    from .p3d import P3DResNet

    model = P3DResNet(depth=cfg.RESNET.DEPTH, num_classes=cfg.MODEL.NUM_CLASSES, base_width=cfg.RESNET.BASE_WIDTH,
                      in_channels=cfg.DATA.INPUT_CHANNEL_NUM, dropout=cfg.MODEL.DROPOUT_RATE,
                      temporal_pool=cfg.RESNET.TEMPORAL_POOL)
    return _with_nonlocal(cfg, model)


@register_model("mars", _depth_stages(RESNET3D_BLOCKS))
def _mars(cfg: CfgNode) -> nn.Module:
    """RGB 3D-ResNeXt with a frozen flow teacher (loaded from MODEL.MARS_FLOW_CHECKPOINT)."""
    from .mars import MARS

    model = MARS(num_classes=cfg.MODEL.NUM_CLASSES, depth=cfg.RESNET.DEPTH, base_width=cfg.RESNET.BASE_WIDTH,
                 cardinality=cfg.RESNET.CARDINALITY, alpha=cfg.MODEL.MARS_ALPHA, dropout=cfg.MODEL.DROPOUT_RATE)
    if cfg.MODEL.MARS_FLOW_CHECKPOINT:
        from .weights import load_weights

        # the teacher's classifier is never used (it may have other classes): not loaded
        load_weights(model.flow, cfg.MODEL.MARS_FLOW_CHECKPOINT, fmt="auto", skip=("head.*",))
        model.freeze_teacher()
    return _with_nonlocal(cfg, model)


@register_model("vtn_vit", _resnet_stages)
def _vtn_vit(cfg: CfgNode) -> nn.Module:
    """vidnl's ViT-style video transformer (C2D-ResNet features, classification token)."""
    from .vtn_vit import ATTENTIONS as VTN_VIT_ATTENTIONS, VTNViT

    v = cfg.VTN
    if v.ATTENTION not in VTN_VIT_ATTENTIONS:
        raise ConfigError(f"VTN.ATTENTION: {v.ATTENTION!r} is not available for MODEL.ARCH vtn_vit; it takes "
                          f"{list(VTN_VIT_ATTENTIONS)} (MODEL.ARCH vtn takes every nonlocal block type).")
    model = VTNViT(num_classes=cfg.MODEL.NUM_CLASSES, depth=cfg.RESNET.DEPTH, base_width=cfg.RESNET.BASE_WIDTH,
                   in_channels=cfg.DATA.INPUT_CHANNEL_NUM, dim=v.DIM, layers=v.NUM_LAYERS, heads=v.NUM_HEADS,
                   attention=v.ATTENTION, max_frames=v.MAX_FRAMES, dropout=cfg.MODEL.DROPOUT_RATE)
    return _with_nonlocal(cfg, model)


def _vtn_stages(cfg: CfgNode) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Kozlov et al.'s VTN: a torchvision ResNet per frame, no nonlocal stages (NONLOCAL.LOCATION
    must stay empty)."""
    from .vtn import DEPTHS

    if cfg.RESNET.DEPTH not in DEPTHS:
        raise ValueError(f"RESNET.DEPTH: {cfg.RESNET.DEPTH} is not available for vtn; choose one of {list(DEPTHS)} "
                         f"(34 in Kozlov et al. 2019).")
    return (), ()


@register_model("vtn", _vtn_stages)
def _vtn(cfg: CfgNode) -> nn.Module:
    """Kozlov et al. 2019's Video Transformer Network as its official code builds it (vidnl.models.vtn):
    the position table has DATA.NUM_FRAMES rows (the official clip length); the decoder's dropout
    is the official 0.1 (MODEL.DROPOUT_RATE is not used). VTN.ATTENTION other than "mha" replaces
    every self-attention by that nonlocal block type over the frames, configured by NONLOCAL.*
    (inner width, kernel, style, ...; NONLOCAL.TYPE and LOCATION are not used)."""
    from .vtn import VTN

    v = cfg.VTN
    if cfg.RESNET.BASE_WIDTH != 64:
        raise ConfigError(f"RESNET.BASE_WIDTH: {cfg.RESNET.BASE_WIDTH} is not available for MODEL.ARCH vtn (a "
                          f"torchvision ResNet per frame, width 64).")
    options = None
    if v.ATTENTION != "mha":
        BLOCK_REGISTRY.check(v.ATTENTION, "VTN.ATTENTION")
        options = dict(nonlocal_options(cfg), dim_inner=nonlocal_inner_channels(cfg, v.DIM))
    try:
        return VTN(num_classes=cfg.MODEL.NUM_CLASSES, depth=cfg.RESNET.DEPTH, in_channels=cfg.DATA.INPUT_CHANNEL_NUM,
                   dim=v.DIM, layers=v.NUM_LAYERS, heads=v.NUM_HEADS, max_frames=cfg.DATA.NUM_FRAMES,
                   attention=v.ATTENTION, nonlocal_options=options)
    except ValueError as e:
        if options is None:
            raise
        raise ConfigError(str(nonlocal_option_error(v.ATTENTION, e)).replace("NONLOCAL.TYPE", "VTN.ATTENTION", 1)) from None


# ------------------------------------------------------------------------------------------------
# The model's input, and what the built model says about it
# ------------------------------------------------------------------------------------------------
# Architectures that take images (clips of one frame) whatever DATA.NUM_FRAMES says.
IMAGE_ARCHS = ("resnet2d", "preresnet", "preresnet_snl_code")
MAX_FRAMES_SEARCHED = 4096  # check_input_frames looks for a minimum up to this many frames


def model_input(cfg: CfgNode) -> tuple[str | None, tuple[int, int, int, int]]:
    """(the key that sets the frames of the model's input, None for images; the input's C×T×H×W
    at the test size): re-ID clips of REID.SEQ_LEN frames of REID.HEIGHT×REID.WIDTH (3 channels),
    image models (an image dataset or an image architecture) one frame of DATA.TEST_CROP_SIZE²,
    video models DATA.NUM_FRAMES frames of DATA.TEST_CROP_SIZE² with DATA.INPUT_CHANNEL_NUM
    channels."""
    from ..config.defaults_data import IMAGE_DATASETS

    if cfg.MODEL.TASK == "reid":
        return "REID.SEQ_LEN", (3, cfg.REID.SEQ_LEN, cfg.REID.HEIGHT, cfg.REID.WIDTH)
    size = cfg.DATA.TEST_CROP_SIZE
    if cfg.TEST.DATASET in IMAGE_DATASETS or cfg.MODEL.ARCH in IMAGE_ARCHS:
        return None, (cfg.DATA.INPUT_CHANNEL_NUM, 1, size, size)
    return "DATA.NUM_FRAMES", (cfg.DATA.INPUT_CHANNEL_NUM, cfg.DATA.NUM_FRAMES, size, size)


def _meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` on the meta device (shapes only), in eval mode; ``model`` is untouched."""
    return copy.deepcopy(model).to(device="meta").eval()


def _meta_forward(model: nn.Module, shape: tuple[int, ...]) -> tuple[Exception | None, str]:
    """(the exception of the meta-device ``model`` (``_meta_copy``) on an input of ``shape``, None
    if it runs; the innermost module running when it was raised): shapes only, no memory, no
    arithmetic."""
    stack: list[str] = []
    names = {m: n for n, m in model.named_modules()}

    def enter(m, args):
        t = args[0].shape[2] if args and isinstance(args[0], torch.Tensor) and args[0].dim() == 5 else None
        stack.append(f"{names.get(m) or type(m).__name__} ({type(m).__name__}"
                     f"{f', input of {t} frame' + 's' * (t != 1) if t is not None else ''})")

    def leave(m, args, out):
        stack.pop()

    hooks = [h for m in model.modules() for h in (m.register_forward_pre_hook(enter), m.register_forward_hook(leave))]
    try:
        with torch.no_grad():
            model(torch.empty(shape, device="meta"))
        return None, ""
    except Exception as e:  # noqa: BLE001 - the caller decides what the failure means
        return e, stack[-1] if stack else ""
    finally:
        for h in hooks:
            h.remove()


def check_input_frames(cfg: CfgNode, model: nn.Module) -> None:
    """ConfigError naming DATA.NUM_FRAMES (re-ID: REID.SEQ_LEN) when ``model`` cannot take the
    config's clips: fewer frames than its temporal kernels, strides and pools need (the message
    gives the minimum, found by running the model on the meta device for longer clips, and the
    layer where time runs out), or a ValueError of the model about its input (e.g. VTN.MAX_FRAMES).
    A failure that more frames do not cure is not about frames: it is left to the forward pass."""
    key, (c, t, h, w) = model_input(cfg)
    if key is None:
        return
    model = _meta_copy(model)
    error, where = _meta_forward(model, (1, c, t, h, w))
    if error is None:
        return
    if isinstance(error, ValueError):
        raise ConfigError(f"{key} {t}: {error}") from None
    if isinstance(error, NotImplementedError) or "meta" in str(error).lower():
        return  # an operation the meta device cannot run: nothing learnt about sizes
    low, high = t, 2 * t
    while high <= MAX_FRAMES_SEARCHED and _meta_forward(model, (1, c, high, h, w))[0] is not None:
        low, high = high, 2 * high
    if high > MAX_FRAMES_SEARCHED:
        return
    while high - low > 1:  # low fails, high runs: more frames never shorten a strided axis
        mid = (low + high) // 2
        low, high = (low, mid) if _meta_forward(model, (1, c, mid, h, w))[0] is None else (mid, high)
    raise ConfigError(f"{key}: {t} {'frame is' if t == 1 else 'frames are'} too few for this network (MODEL.ARCH "
                      f"{cfg.MODEL.ARCH!r}, RESNET.DEPTH {cfg.RESNET.DEPTH}): its temporal kernels, strides and pools "
                      f"need at least {high} frames{'; it fails at ' + where if where else ''}. Set {key} to {high} "
                      f"or more.")


# ------------------------------------------------------------------------------------------------
# MODEL.TEST_HEAD: PySlowFast's fully convolutional test head (vidnl.models.heads.ClassificationHead)
# ------------------------------------------------------------------------------------------------
# Architectures whose classifier is a ClassificationHead on a feature map (MARS: its RGB stream).
FULLY_CONV_TEST_HEAD_ARCHS = ("c2d", "i3d", "resnet2d", "resnet3d", "p3d", "mars")


def check_test_head(cfg: CfgNode) -> None:
    """ConfigError unless MODEL.TEST_HEAD fits MODEL.ARCH (builds nothing)."""
    if cfg.MODEL.TEST_HEAD == "fully_conv" and cfg.MODEL.ARCH not in FULLY_CONV_TEST_HEAD_ARCHS:
        raise ConfigError(
            f"MODEL.TEST_HEAD 'fully_conv' is not available for MODEL.ARCH {cfg.MODEL.ARCH!r} (its classifier is "
            f"not an average pool + linear on a feature map); it is for {', '.join(FULLY_CONV_TEST_HEAD_ARCHS)}. "
            f"Set MODEL.TEST_HEAD global.")


def classification_backbone(model: nn.Module) -> nn.Module | None:
    """The module with ``forward_features`` and a ``head`` that is a ClassificationHead (the model
    itself, or MARS's RGB stream); None if there is none."""
    for m in (model, getattr(model, "rgb", None)):
        if isinstance(getattr(m, "head", None), ClassificationHead) and hasattr(m, "forward_features"):
            return m
    return None


def training_feature_size(cfg: CfgNode, backbone: nn.Module) -> tuple[int, int, int]:
    """T'×H'×W' of ``backbone.forward_features`` on a training clip (DATA.NUM_FRAMES frames, or one
    for image models, of DATA.TRAIN_CROP_SIZE²), found by running it on the meta device (on a
    CPU copy where the meta device cannot run an operation): the network's own strides, pools
    and paddings decide it (for the 8×8 I3D-R50 at 224: 4×7×7, what
    PySlowFast writes as [NUM_FRAMES // 2, TRAIN_CROP_SIZE // 32, TRAIN_CROP_SIZE // 32])."""
    from ..config.defaults_data import IMAGE_DATASETS

    image = cfg.TRAIN.DATASET in IMAGE_DATASETS or cfg.MODEL.ARCH in IMAGE_ARCHS
    frames, size = (1 if image else cfg.DATA.NUM_FRAMES), cfg.DATA.TRAIN_CROP_SIZE
    channels = next(m.in_channels for m in backbone.modules() if isinstance(m, (nn.Conv3d, nn.Conv2d)))
    shape = (1, channels, frames, size, size)
    try:
        with torch.no_grad():
            try:
                out = _meta_copy(backbone).forward_features(torch.empty(shape, device="meta"))
            except (NotImplementedError, RuntimeError) as e:
                if not isinstance(e, NotImplementedError) and "meta" not in str(e).lower():
                    raise
                # an operation the meta device cannot run: a real forward pass of a CPU copy
                out = copy.deepcopy(backbone).cpu().eval().forward_features(torch.zeros(shape))
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"MODEL.TEST_HEAD fully_conv: the backbone cannot run on a training clip of {frames} "
                          f"frame(s) of DATA.TRAIN_CROP_SIZE {size}² to size its pool kernel: {e}") from None
    if out.dim() == 4:  # B×F×H×W image features
        return (1, *map(int, out.shape[2:]))
    return tuple(int(s) for s in out.shape[2:])


def apply_test_head(cfg: CfgNode, model: nn.Module) -> None:
    """MODEL.TEST_HEAD fully_conv: give the model's ClassificationHead the pool kernel of the
    training clip's feature size (``training_feature_size``), so that in eval mode it is
    PySlowFast's fully convolutional head; "global": nothing changes. The weights (head.fc.*)
    are the same either way."""
    if cfg.MODEL.TEST_HEAD != "fully_conv":
        return
    check_test_head(cfg)
    backbone = classification_backbone(model)
    if backbone is None:
        raise ConfigError(f"MODEL.TEST_HEAD 'fully_conv' is not available for MODEL.ARCH {cfg.MODEL.ARCH!r}: the "
                          f"model has no average-pool + linear classification head. Set MODEL.TEST_HEAD global.")
    backbone.head.set_test_pool_kernel(training_feature_size(cfg, backbone))


def build_model(cfg: CfgNode) -> nn.Module:
    """The model named by cfg.MODEL.ARCH, with nonlocal blocks at cfg.NONLOCAL.LOCATION and the
    test head of MODEL.TEST_HEAD (``apply_test_head``).
    A config that does not fit the models raises ConfigError naming the key (check_model_config,
    nonlocal_factory) before anything is built, or once it is built for an input it cannot take
    (``check_input_frames``)."""
    check_model_config(cfg)
    model = MODEL_REGISTRY[cfg.MODEL.ARCH](cfg)
    check_input_frames(cfg, model)
    apply_test_head(cfg, model)
    if cfg.TRAIN.CHANNELS_LAST:
        try:
            use_channels_last(model)
        except ValueError as e:
            raise ConfigError(f"TRAIN.CHANNELS_LAST True does not fit MODEL.ARCH {cfg.MODEL.ARCH!r}: {e}; set "
                              "TRAIN.CHANNELS_LAST False") from None
    return model
