"""Checkpoint layouts of other codebases and their key maps to vidnl's names.

A layout is detected from the key names (``detect_format``) or named by MODEL.WEIGHTS_FORMAT;
``rename_state(state, fmt)`` returns vidnl keys. The layouts (key patterns in docs/pretrained.md):

| format        | source                                                        | example key |
|---------------|---------------------------------------------------------------|-------------|
| vidnl         | vidnl checkpoints                                             | ``res3.blocks.0.conv1.weight`` |
| torchvision   | torchvision 2D ResNets, Hara et al.'s 3D-ResNets              | ``layer2.0.conv1.weight`` |
| pyslowfast    | PySlowFast ``.pyth`` (single pathway)                         | ``s3.pathway0_res0.branch2.a.weight`` |
| caffe2        | the video-nonlocal-net ``.pkl`` release (blob names)          | ``res3_0_branch2a_w``, ``nonlocal_conv3_1_theta_w`` |
| pytorchvideo  | pytorchvideo hub ``.pyth`` (``create_resnet``)                | ``blocks.1.res_blocks.0.branch2.conv_a.weight`` |
| mmaction2     | mmaction2 recognizers (ResNet3d backbone, mmcv NonLocal3d)    | ``backbone.layer2.1.non_local_block.g.0.conv.weight`` |
| snl_official  | the official SNL code (block inside ``layerN``)               | ``layer3.5.stages.0.w_1.weight`` |
| cgnl_official | the official CGNL code (block inside ``layerN``)              | ``layer3.5.z.weight`` |
| bearpaw_preresnet | bearpaw/pytorch-classification CIFAR PreResNet            | ``layer2.0.downsample.0.weight``, ``bn.weight`` |
| snl_code_preresnet | the SNL code's CIFAR bottleneck PreResNet (block inside ``layerN``) | ``conv.weight``, ``fc1.weight``, ``layer1.2.t.weight`` |
| reid_resnet50tp | Video-Person-ReID ResNet50tp (torchvision children as ``base.N``) | ``base.4.0.conv1.weight`` |
| p3d_official  | Qiu et al.'s P3D (qijiezhao/pseudo-3d-pytorch), 2D res5          | ``conv1_custom.weight``, ``layer1.0.conv4.weight`` |

In the official SNL / CGNL ResNets the block is an element of ``layerN`` inserted before
residual block i, so the residual blocks after it are shifted by one; the map undoes the shift
(``layer3.5`` = the block after residual block 4, ``layer3.6`` = residual block 5).
"""

from __future__ import annotations

import re
from typing import Callable

FORMATS = ("auto", "vidnl", "torchvision", "pyslowfast", "caffe2", "pytorchvideo", "mmaction2", "snl_official",
           "cgnl_official", "bearpaw_preresnet", "snl_code_preresnet", "reid_resnet50tp", "p3d_official")
DROP = ""  # what a key map returns for a tensor the source saved but never used (dropped, reported)

# Caffe2 blobs that are training state, not weights.
CAFFE2_SKIP = re.compile(r"(.*_momentum|lr|model_iter)")


def detect_format(state: dict) -> str:
    """The layout of a state dict, from its key names."""
    keys = set(state)
    if any(k.startswith(("stem.", "res2.", "res1.", "rgb.")) for k in keys):
        return "vidnl"
    if any(re.fullmatch(r"backbone\.(conv1|layer\d\.\d+\.(conv\d|downsample))\.conv\.weight", k) for k in keys):
        return "mmaction2"  # ConvModule names (…conv1.conv.weight); a vidnl re-ID backbone has …conv1.weight
    if any(k.startswith("backbone.") for k in keys):
        return "vidnl"
    if any(k.startswith("s1.pathway0_stem") for k in keys):
        return "pyslowfast"
    if any(re.match(r"blocks\.\d+\.res_blocks\.", k) for k in keys):
        return "pytorchvideo"
    if "conv1_w" in keys or any(k.startswith(("res2_0_branch2a", "nonlocal_conv")) for k in keys):
        return "caffe2"
    if "conv1_custom.weight" in keys:
        return "p3d_official"
    if any(k.startswith("base.4.") for k in keys):
        return "reid_resnet50tp"
    if {"conv.weight", "fc1.weight", "fc2.weight"} <= keys:
        return "snl_code_preresnet"
    if {"conv1.weight", "bn.weight"} <= keys and "bn1.weight" not in keys:
        return "bearpaw_preresnet"
    if "conv1.weight" in keys and any(k.startswith("layer1.") for k in keys):
        if any(re.match(r"layer\d\.\d+\.stages\.0\.w_1\.", k) for k in keys):
            return "snl_official"
        if any(re.match(r"layer\d\.\d+\.z\.weight", k) for k in keys):
            return "cgnl_official"
        return "torchvision"
    return "unknown"


_BN_CAFFE2 = {"s": "weight", "b": "bias", "rm": "running_mean", "riv": "running_var"}
_BRANCH2 = {"a": "1", "b": "2", "c": "3"}
_NL_PARTS = {"theta": "theta", "phi": "phi", "g": "g", "out": "out_proj.0"}


def torchvision_key(k: str) -> str | None:
    """torchvision ResNet (and Hara's 3D-ResNet) names -> vidnl's."""
    if k in ("fc.weight", "fc.bias"):
        return "head." + k
    m = re.fullmatch(r"(conv1|bn1)\.(.+)", k)
    if m:
        return ("stem.0." if m.group(1) == "conv1" else "stem.1.") + m.group(2)
    m = re.fullmatch(r"layer(\d)\.(\d+)\.(.+)", k)
    if m:
        return f"res{int(m.group(1)) + 1}.blocks.{m.group(2)}.{m.group(3)}"
    return None


def pyslowfast_key(k: str) -> str | None:
    """PySlowFast ResNet/NL names (single pathway) -> vidnl's."""
    m = re.fullmatch(r"s1\.pathway0_stem\.(conv|bn)\.(.+)", k)
    if m:
        return ("stem.0." if m.group(1) == "conv" else "stem.1.") + m.group(2)
    m = re.fullmatch(r"s(\d)\.pathway0_res(\d+)\.branch1(_bn)?\.(.+)", k)
    if m:
        return f"res{m.group(1)}.blocks.{m.group(2)}.downsample.{1 if m.group(3) else 0}.{m.group(4)}"
    m = re.fullmatch(r"s(\d)\.pathway0_res(\d+)\.branch2\.([abc])(_bn)?\.(.+)", k)
    if m:
        layer = ("bn" if m.group(4) else "conv") + _BRANCH2[m.group(3)]
        return f"res{m.group(1)}.blocks.{m.group(2)}.{layer}.{m.group(5)}"
    m = re.fullmatch(r"s(\d)\.pathway0_nonlocal(\d+)\.(conv_theta|conv_phi|conv_g|conv_out|bn)\.(.+)", k)
    if m:
        part = {"conv_theta": "theta", "conv_phi": "phi", "conv_g": "g", "conv_out": "out_proj.0", "bn": "bn"}
        return f"res{m.group(1)}.nonlocal_blocks.{m.group(2)}.{part[m.group(3)]}.{m.group(4)}"
    m = re.fullmatch(r"head\.projection\.(weight|bias)", k)
    if m:
        return f"head.fc.{m.group(1)}"
    return None


def caffe2_key(k: str) -> str | None:
    """Caffe2 blob names of the video-nonlocal-net release -> vidnl's (``_bn_riv`` holds the
    running variance)."""
    if k == "conv1_w":
        return "stem.0.weight"
    m = re.fullmatch(r"res_conv1_bn_(s|b|rm|riv)", k)
    if m:
        return "stem.1." + _BN_CAFFE2[m.group(1)]
    m = re.fullmatch(r"res(\d)_(\d+)_branch2([abc])_w", k)
    if m:
        return f"res{m.group(1)}.blocks.{m.group(2)}.conv{_BRANCH2[m.group(3)]}.weight"
    m = re.fullmatch(r"res(\d)_(\d+)_branch2([abc])_bn_(s|b|rm|riv)", k)
    if m:
        return f"res{m.group(1)}.blocks.{m.group(2)}.bn{_BRANCH2[m.group(3)]}.{_BN_CAFFE2[m.group(4)]}"
    m = re.fullmatch(r"res(\d)_(\d+)_branch1_w", k)
    if m:
        return f"res{m.group(1)}.blocks.{m.group(2)}.downsample.0.weight"
    m = re.fullmatch(r"res(\d)_(\d+)_branch1_bn_(s|b|rm|riv)", k)
    if m:
        return f"res{m.group(1)}.blocks.{m.group(2)}.downsample.1.{_BN_CAFFE2[m.group(3)]}"
    m = re.fullmatch(r"nonlocal_conv(\d)_(\d+)_(theta|phi|g|out)_(w|b)", k)
    if m:
        return (f"res{m.group(1)}.nonlocal_blocks.{m.group(2)}.{_NL_PARTS[m.group(3)]}."
                + ("weight" if m.group(4) == "w" else "bias"))
    m = re.fullmatch(r"nonlocal_conv(\d)_(\d+)_bn_(s|b|rm|riv)", k)
    if m:
        return f"res{m.group(1)}.nonlocal_blocks.{m.group(2)}.bn.{_BN_CAFFE2[m.group(3)]}"
    m = re.fullmatch(r"pred_(w|b)", k)
    if m:
        return "head.fc." + ("weight" if m.group(1) == "w" else "bias")
    return None


def mmaction2_key(k: str) -> str | None:
    """mmaction2 ResNet3d / I3D (``backbone.``, ``cls_head.``) with mmcv NonLocal3d -> vidnl's."""
    m = re.fullmatch(r"backbone\.conv1\.(conv|bn)\.(.+)", k)
    if m:
        return ("stem.0." if m.group(1) == "conv" else "stem.1.") + m.group(2)
    m = re.fullmatch(r"backbone\.layer(\d)\.(\d+)\.non_local_block\.(g\.0|theta|phi\.0)\.conv\.(.+)", k)
    if m:
        part = m.group(3).split(".")[0]
        return f"res{int(m.group(1)) + 1}.nonlocal_blocks.{m.group(2)}.{part}.{m.group(4)}"
    m = re.fullmatch(r"backbone\.layer(\d)\.(\d+)\.non_local_block\.conv_out\.(conv|bn)\.(.+)", k)
    if m:
        part = "out_proj.0" if m.group(3) == "conv" else "bn"
        return f"res{int(m.group(1)) + 1}.nonlocal_blocks.{m.group(2)}.{part}.{m.group(4)}"
    m = re.fullmatch(r"backbone\.layer(\d)\.(\d+)\.(conv[123]|downsample)\.(conv|bn)\.(.+)", k)
    if m:
        stage, block, layer = int(m.group(1)) + 1, m.group(2), m.group(3)
        if layer == "downsample":
            return f"res{stage}.blocks.{block}.downsample.{0 if m.group(4) == 'conv' else 1}.{m.group(5)}"
        name = layer if m.group(4) == "conv" else "bn" + layer[-1]
        return f"res{stage}.blocks.{block}.{name}.{m.group(5)}"
    m = re.fullmatch(r"cls_head\.fc_cls\.(weight|bias)", k)
    if m:
        return f"head.fc.{m.group(1)}"
    return None


def _pytorchvideo_map(state: dict) -> Callable[[str], str | None]:
    """pytorchvideo ``create_resnet``: ``blocks`` = stem, stages (with a parameter-free pool after
    the first in c2d/i3d, none in slow), head. Stage positions come from the keys."""
    stage_ids = sorted({int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.res_blocks\.", k))})
    stage_of = {i: s + 2 for s, i in enumerate(stage_ids)}
    part = {"branch1_conv": "downsample.0", "branch1_norm": "downsample.1", "branch2.conv_a": "conv1",
            "branch2.norm_a": "bn1", "branch2.conv_b": "conv2", "branch2.norm_b": "bn2", "branch2.conv_c": "conv3",
            "branch2.norm_c": "bn3"}

    def key(k: str) -> str | None:
        m = re.fullmatch(r"blocks\.0\.(conv|norm)\.(.+)", k)
        if m:
            return ("stem.0." if m.group(1) == "conv" else "stem.1.") + m.group(2)
        m = re.fullmatch(r"blocks\.(\d+)\.res_blocks\.(\d+)\.(branch1_conv|branch1_norm|branch2\.(?:conv|norm)_[abc])"
                         r"\.(.+)", k)
        if m and int(m.group(1)) in stage_of:
            return f"res{stage_of[int(m.group(1))]}.blocks.{m.group(2)}.{part[m.group(3)]}.{m.group(4)}"
        m = re.fullmatch(r"blocks\.\d+\.proj\.(weight|bias)", k)
        if m:
            return f"head.fc.{m.group(1)}"
        return None
    return key


def _official_block_map(state: dict, block_parts: dict[str, str], first_stage: int = 2,
                        outside: Callable[[str], str | None] | None = None,
                        inside: Callable[[str], str] = lambda rest: rest) -> Callable[[str], str | None]:
    """ResNets of the official SNL / CGNL codes: the nonlocal block is an element ``layerN.i``
    (recognised by its own parameter names) before residual block i. ``layerN`` is vidnl stage
    ``res{N + first_stage - 1}``; ``outside`` maps the other keys (default: torchvision names),
    ``inside`` renames a residual block's own parameters."""
    outside = outside or torchvision_key

    def is_block_param(rest: str) -> bool:
        return any(rest.startswith(p + ".") for p in block_parts)

    block_keys = {(int(m.group(1)), int(m.group(2))) for k in state
                  if (m := re.fullmatch(r"layer(\d)\.(\d+)\.(.+)", k)) and is_block_param(m.group(3))}
    nl_at = {}  # layer -> positions of nonlocal blocks
    for layer, pos in block_keys:
        nl_at.setdefault(layer, []).append(pos)

    def key(k: str) -> str | None:
        m = re.fullmatch(r"layer(\d)\.(\d+)\.(.+)", k)
        if not m:
            return outside(k)
        layer, pos, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        stage = layer + first_stage - 1
        before = sum(p < pos for p in nl_at.get(layer, []))
        if (layer, pos) in block_keys:
            for theirs, ours in block_parts.items():
                if rest.startswith(theirs + "."):
                    return f"res{stage}.nonlocal_blocks.{pos - before - 1}.{ours}{rest[len(theirs):]}"
            return None
        return f"res{stage}.blocks.{pos - before}.{inside(rest)}"
    return key


def bearpaw_preresnet_key(k: str) -> str | None:
    """bearpaw/pytorch-classification ``preresnet`` (CIFAR) -> vidnl ``preresnet``."""
    if re.fullmatch(r"(conv1|bn|fc)\.\w+", k):
        return k
    m = re.fullmatch(r"layer(\d)\.(\d+)\.(bn1|conv1|bn2|conv2|downsample\.0)\.(\w+)", k)
    if m:
        part = "shortcut" if m.group(3) == "downsample.0" else m.group(3)
        return f"res{m.group(1)}.blocks.{m.group(2)}.{part}.{m.group(4)}"
    return None


def _snl_code_preresnet_outside(k: str) -> str | None:
    """Stem and head of the SNL code's CIFAR PreResNet; its training script also saves an unused
    ``conv1`` and ``fc`` (dropped)."""
    m = re.fullmatch(r"(conv|bn1|fc1|bn2|fc2|conv1|fc)\.(\w+)", k)
    if not m:
        return None
    ours = {"conv": "conv1", "bn1": "head_bn1", "fc1": "head_conv", "bn2": "head_bn2", "fc2": "fc"}
    return f"{ours[m.group(1)]}.{m.group(2)}" if m.group(1) in ours else DROP


_P3D_PARTS = {"conv1": "reduce.0", "bn1": "reduce.1", "conv2": "spatial.0", "bn2": "spatial.1", "conv3": "temporal.0",
              "bn3": "temporal.1", "conv4": "expand", "bn4": "bn", "conv_normal": "spatial.0", "bn_normal": "spatial.1",
              "downsample.0": "downsample.0", "downsample.1": "downsample.1"}


def p3d_official_key(k: str) -> str | None:
    """Qiu et al.'s P3D (PyTorch port) -> vidnl p3d; res5's 2D kernels are taken as 1×k×k."""
    m = re.fullmatch(r"(conv1_custom|bn1)\.(\w+)", k)
    if m:
        return f"stem.{0 if m.group(1) == 'conv1_custom' else 1}.{m.group(2)}"
    m = re.fullmatch(r"layer(\d)\.(\d+)\.(conv\d|bn\d|conv_normal|bn_normal|downsample\.[01])\.(\w+)", k)
    if m and m.group(3) in _P3D_PARTS:
        return f"res{int(m.group(1)) + 1}.blocks.{m.group(2)}.{_P3D_PARTS[m.group(3)]}.{m.group(4)}"
    return "head." + k if k in ("fc.weight", "fc.bias") else None


def reid_resnet50tp_key(k: str) -> str | None:
    """Video-Person-ReID ResNet50tp (``base`` = torchvision ResNet-50 children) -> vidnl resnet50tp."""
    m = re.fullmatch(r"base\.([01])\.(\w+)", k)
    if m:
        return f"backbone.{'conv1' if m.group(1) == '0' else 'bn1'}.{m.group(2)}"
    m = re.fullmatch(r"base\.([4-7])\.(.+)", k)
    if m:
        return f"backbone.layer{int(m.group(1)) - 3}.{m.group(2)}"
    m = re.fullmatch(r"classifier\.(weight|bias)", k)
    return k if m else None


SNL_OFFICIAL_PARTS = {"t": "theta", "p": "phi", "stages.0.g": "g", "stages.0.w_1": "out_proj.0",
                      "stages.0.w_2": "out_proj.1", "stages.0.bn": "bn"}
CGNL_OFFICIAL_PARTS = {"t": "theta", "p": "phi", "g": "g", "z": "out_proj.0", "gn": "bn", "bn": "bn"}

KEY_MAPS: dict[str, Callable[[dict], Callable[[str], str | None]]] = {
    "torchvision": lambda state: torchvision_key,
    "pyslowfast": lambda state: pyslowfast_key,
    "caffe2": lambda state: caffe2_key,
    "mmaction2": lambda state: mmaction2_key,
    "pytorchvideo": _pytorchvideo_map,
    "snl_official": lambda state: _official_block_map(state, SNL_OFFICIAL_PARTS),
    "cgnl_official": lambda state: _official_block_map(state, CGNL_OFFICIAL_PARTS),
    "bearpaw_preresnet": lambda state: bearpaw_preresnet_key,
    "snl_code_preresnet": lambda state: _official_block_map(
        state, SNL_OFFICIAL_PARTS, first_stage=1, outside=_snl_code_preresnet_outside,
        inside=lambda rest: rest.replace("downsample.", "shortcut.", 1)),
    "reid_resnet50tp": lambda state: reid_resnet50tp_key,
    "p3d_official": lambda state: p3d_official_key,
}


def rename_state(state: dict, fmt: str, key: Callable[[str], str | None] | None = None) -> tuple[dict, list[str]]:
    """``state`` with vidnl key names, and the keys of ``state`` that the layout does not map
    (kept under their own names, so loading reports them as unexpected). Caffe2 training blobs
    (momenta, lr, iteration) and tensors a layout saves but never uses (``DROP``) are dropped.
    ``key``: a model's own map for this layout (its ``key_maps[fmt]``, e.g. the VTN's for
    torchvision ResNets) instead of ``KEY_MAPS[fmt]``."""
    if fmt not in FORMATS or fmt == "auto":
        raise ValueError(f"MODEL.WEIGHTS_FORMAT must be one of {FORMATS[1:]} here, got {fmt!r}")
    if fmt == "vidnl":
        return dict(state), []
    key = key or KEY_MAPS[fmt](state)
    out, unmapped = {}, []
    for k, v in state.items():
        if fmt == "caffe2" and CAFFE2_SKIP.fullmatch(k):
            continue
        new = key(k)
        if new == DROP:
            continue
        if new is None:
            unmapped.append(k)
            new = k
        out[new] = v
    return out, unmapped
