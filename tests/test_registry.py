"""The name registries (vidnl/registry.py) and what is registered in them: every nonlocal block
builds from plain arguments and trains on 1D / 2D / 3D inputs, its config options are read from
its constructor's signature, and every dataset builds from tiny generated files."""

from __future__ import annotations

import inspect
import os
import pydoc
from typing import Sequence

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from vidnl.config import load_config
from vidnl.data.datasets import DATASET_REGISTRY, build_dataset, list_datasets
from vidnl.data.datasets.reid import REID_DATASET_REGISTRY, build_reid_data, num_splits
from vidnl.errors import ConfigError, DatasetError
from vidnl.nonlocal_blocks import (A2, BLOCK_REGISTRY, BLOCK_TYPES, CC, CGNL, NL, SNL, TYPE_OPTIONS, NonLocalBase,
                                   block_options, build_nonlocal_block, create_block, inner_channels, list_blocks)
from vidnl.nonlocal_blocks import blocks as B
from vidnl.registry import Registry, UnknownNameError


# ------------------------------------------------------------------------------------------------
# Registry
# ------------------------------------------------------------------------------------------------
def test_registry_registers_by_decorator_or_call_and_refuses_duplicates():
    reg = Registry("widget")

    @reg.register("spectral", paper="Zhu 2021")
    def spectral():
        return 1

    assert spectral() == 1  # the decorator returns the object itself
    assert reg.register("softmax", max) is max
    assert reg.names() == ("spectral", "softmax") and list(reg) == ["spectral", "softmax"] and len(reg) == 2
    assert "spectral" in reg and "other" not in reg and sorted(reg) == ["softmax", "spectral"]
    assert reg["softmax"] is max and reg.get("spectral") is spectral and dict(reg) == {"spectral": spectral,
                                                                                      "softmax": max}
    assert reg.metadata("spectral") == {"paper": "Zhu 2021"} and reg.metadata("softmax") == {}
    reg.metadata("spectral")["paper"] = "changed"  # a copy
    assert reg.metadata("spectral") == {"paper": "Zhu 2021"}
    with pytest.raises(ValueError, match="widget 'softmax' is already registered"):
        reg.register("softmax", min)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("spectral")(min)
    assert reg["softmax"] is max  # unchanged
    with pytest.raises(ValueError, match="non-empty strings"):
        reg.register("", min)


def test_registry_unknown_name_lists_the_names_and_suggests_the_closest():
    reg = Registry("widget")
    for name in ("spectral", "softmax", "criss_cross"):
        reg.register(name, name.upper())
    with pytest.raises(KeyError) as e:
        reg["spectal"]
    assert isinstance(e.value, UnknownNameError)
    assert str(e.value) == ("unknown widget 'spectal'; known: ['criss_cross', 'softmax', 'spectral']; "
                            "did you mean 'spectral'?")
    with pytest.raises(UnknownNameError) as e:
        reg.get("zzz")
    assert "did you mean" not in str(e.value) and "['criss_cross', 'softmax', 'spectral']" in str(e.value)
    with pytest.raises(UnknownNameError, match="did you mean 'criss_cross'"):
        reg.metadata("criss-cross")
    assert reg.get("zzz", None) is None and reg.get("zzz", 5) == 5


# ------------------------------------------------------------------------------------------------
# Nonlocal blocks
# ------------------------------------------------------------------------------------------------
# The options each type took from the config before they were read from the signatures.
EXPECTED_TYPE_OPTIONS = {
    "nl": {"kernel", "norm", "softmax_scale"},
    "ns": {"kernel", "norm", "num_stages", "softmax_scale"},
    "a2": {"num_descriptors"},
    "cgnl": {"kernel", "order", "groups", "gamma", "beta", "norm_layer"},
    "cc": {"recurrence"},
    "snl": {"kernel", "norm", "output_activation", "a_sign"},
    "gsnl": {"kernel", "norm", "order", "output_activation", "a_sign"},
}
SHARED = ("pool_size", "mode", "implementation", "zero_init_final_bn", "bn_eps", "bn_momentum", "bias", "pool_at",
          "pool_ceil_mode")


def test_block_registry_lists_every_block():
    assert set(list_blocks()) == set(EXPECTED_TYPE_OPTIONS) and list_blocks() == BLOCK_REGISTRY.names()
    assert BLOCK_TYPES["snl"] is SNL and BLOCK_REGISTRY["cc"] is CC and create_block is build_nonlocal_block
    with pytest.raises(ValueError, match=r"unknown nonlocal block type 'snll'; choose one of \['a2', 'cc', "):
        build_nonlocal_block("snll", 16)
    with pytest.raises(UnknownNameError, match="did you mean 'snl'"):
        BLOCK_REGISTRY["snll"]


@pytest.mark.parametrize("block_type", list_blocks())
def test_type_options_are_the_constructor_keyword_options_minus_the_shared_ones(block_type):
    cls = BLOCK_REGISTRY[block_type]
    params = inspect.signature(cls).parameters
    keyword = {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY}
    assert TYPE_OPTIONS[block_type] == keyword - set(SHARED) == EXPECTED_TYPE_OPTIONS[block_type]
    # the shared options are all listed, with NonLocalBase's defaults; no **kw hides any option
    base = inspect.signature(NonLocalBase).parameters
    assert B.SHARED_OPTIONS == SHARED
    for name in SHARED:
        assert params[name].kind is params[name].KEYWORD_ONLY and params[name].default == base[name].default, name
    for klass in cls.__mro__[:cls.__mro__.index(NonLocalBase) + 1]:
        if "__init__" in vars(klass):
            kinds = {p.kind for p in inspect.signature(klass.__init__).parameters.values()}
            assert inspect.Parameter.VAR_KEYWORD not in kinds, f"{klass.__name__}.__init__ takes **kw"
    assert block_options(block_type) == {n: params[n].default for n in params if n in keyword}
    assert set(block_options(block_type, shared=False)) == EXPECTED_TYPE_OPTIONS[block_type]


def test_signatures_and_help_show_the_options():
    assert {"pool_size", "mode", "implementation", "output_activation"} <= set(inspect.signature(SNL).parameters)
    assert "recurrence" in TYPE_OPTIONS["cc"] and "recurrence" not in TYPE_OPTIONS["nl"]
    assert "order" in TYPE_OPTIONS["gsnl"] and "order" not in TYPE_OPTIONS["snl"]
    assert "softmax_scale" in TYPE_OPTIONS["nl"] and "softmax_scale" not in TYPE_OPTIONS["snl"]
    text = pydoc.render_doc(SNL, renderer=pydoc.plaintext)
    assert "pool_size" in text and "implementation" in text and "a_sign" in text
    assert block_options("gsnl")["order"] == 3 and block_options("cc")["recurrence"] == 2
    assert block_options("nl")["kernel"] == "embedded_gaussian" and block_options("snl")["kernel"] == "relu_dot"
    assert block_options("cgnl")["kernel"] == "dot" and block_options("a2")["num_descriptors"] is None
    assert B.OPTIONAL == set().union(*EXPECTED_TYPE_OPTIONS.values())
    assert B.OFFICIAL_OPTIONS["nl"] == dict(bias=True, softmax_scale=True, pool_at="input", pool_ceil_mode=False)
    assert set(B.OFFICIAL_OPTIONS) == {"nl", "snl", "gsnl", "cgnl"}


def test_option_errors_keep_their_text():
    with pytest.raises(ValueError) as e:
        build_nonlocal_block("nl", 16, recurrence=3)
    assert str(e.value) == ("nonlocal type 'nl' does not take option 'recurrence' (got 3); "
                            "it takes ['kernel', 'norm', 'softmax_scale']")
    with pytest.raises(ValueError) as e:
        build_nonlocal_block("cc", 16, order=4)
    assert str(e.value) == "nonlocal type 'cc' does not take option 'order' (got 4); it takes ['recurrence']"
    with pytest.raises(ValueError, match="type 'a2' has no official code"):
        build_nonlocal_block("a2", 16, style="official")
    # None leaves an option to the type's default, so one set of config options fits every type
    assert build_nonlocal_block("cc", 16, order=None, recurrence=None).recurrence == 2


def test_inner_channels_is_the_one_rule():
    assert inner_channels(16) == 8 and inner_channels(16, 4) == 4 and inner_channels(16, 0) == 8
    assert inner_channels(256, ratio=0.25) == 64 and inner_channels(100, ratio=0.3) == 30 and inner_channels(1) == 1
    assert NL(16).dim_inner == 8 and CGNL(16, groups=4).dim_inner == 8 and A2(16, 6).dim_inner == 6
    with pytest.raises(ValueError, match="groups=3 must divide the inner channels 8"):
        CGNL(16, groups=3)


def test_a2_affinity_row_is_a_method():
    assert "affinity_row" in vars(A2) and A2.affinity_row.__qualname__ == "A2.affinity_row"
    torch.manual_seed(0)
    block, x = A2(8, 4).eval(), torch.randn(2, 8, 2, 3, 3)
    row = block.affinity_row(x, 5)
    assert row.shape == (2, 18) and torch.allclose(row.sum(-1), torch.ones(2))


def _norms(block):
    return [m for m in block.modules() if isinstance(m, (nn.BatchNorm3d, nn.GroupNorm))]


@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4)], ids=["1d", "2d", "3d"])
@pytest.mark.parametrize("block_type", list_blocks())
def test_every_block_builds_and_trains_with_default_options(block_type, shape):
    torch.manual_seed(0)
    block = build_nonlocal_block(block_type, 16)
    assert isinstance(block, BLOCK_REGISTRY[block_type]) and block.dim_inner == 8
    assert all(float(n.weight.detach().abs().sum()) == 0 for n in _norms(block))  # starts as the identity
    x = torch.randn(2, 16, *shape)
    assert torch.equal(block(x), x)
    for n in _norms(block):  # open the residual branch so every parameter gets a gradient
        nn.init.ones_(n.weight)
    x.requires_grad_(True)
    y = block(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    (y * torch.randn_like(y)).sum().backward()
    assert torch.isfinite(x.grad).all()
    for name, p in block.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_a_new_block_is_one_registration(monkeypatch):
    """The example of docs/extending.md, "A nonlocal block", registered in a copy of the registry."""
    reg = Registry("nonlocal block")
    for name in BLOCK_REGISTRY:
        reg.register(name, BLOCK_REGISTRY[name], **BLOCK_REGISTRY.metadata(name))
    monkeypatch.setattr(B, "BLOCK_REGISTRY", reg)
    from vidnl.nonlocal_blocks.blocks import _conv, _shared, from_nodes, to_nodes

    @reg.register("mean")
    class GlobalMean(NonLocalBase):
        """Y = X + BN(W · (mean_j g(x_j) [− g(x_i)])): A = 1/M everywhere. B×C×T×H×W -> same."""

        def __init__(self, dim: int, dim_inner: int | None = None, *,
                     center: bool = False,
                     pool_size: Sequence[int] | None = None, mode: str = "spacetime",
                     implementation: str = "auto", zero_init_final_bn: bool = True, bn_eps: float = 1e-5,
                     bn_momentum: float = 0.1, bias: bool = False, pool_at: str = "projection",
                     pool_ceil_mode: bool = True):
            super().__init__(dim, dim_inner, **_shared(locals()))
            self.center = center
            self.g = _conv(dim, self.dim_inner, self.bias)
            self.out_proj = nn.ModuleList([_conv(self.dim_inner, dim, self.bias)])

        def residual(self, x):
            g = to_nodes(self.on_keys(self.g, x), self.mode)
            n = to_nodes(x[:, :1], self.mode).shape[1]
            az = g.mean(dim=1, keepdim=True).expand(-1, n, -1)
            if self.center:
                az = az - to_nodes(self.g(x), self.mode)
            shape = (x.shape[0], self.dim_inner) + tuple(x.shape[2:])
            return self.out_proj[0](from_nodes(az, self.mode, shape))

    assert "mean" in list_blocks() and block_options("mean", shared=False) == {"center": False}
    assert TYPE_OPTIONS["mean"] == {"center"} and "center" in B.OPTIONAL
    block = build_nonlocal_block("mean", 16, center=True, mode="space", pool_size=[1, 2, 2])
    assert isinstance(block, GlobalMean) and block.center and block.pool_kernel == (1, 2, 2)
    assert block.dim_inner == 8
    x = torch.randn(2, 16, 2, 4, 4)
    assert torch.equal(block(x), x)  # the identity at start
    with pytest.raises(ValueError, match=r"'nl' does not take option 'center' \(got True\)"):
        build_nonlocal_block("nl", 16, center=True)
    with pytest.raises(ValueError, match=r"'mean' does not take option 'kernel'.*it takes \['center'\]"):
        build_nonlocal_block("mean", 16, kernel="dot")


# ------------------------------------------------------------------------------------------------
# Datasets: every registered name builds from tiny generated files
# ------------------------------------------------------------------------------------------------
def _video_csv(folder, n_per_class=1):
    from conftest import index_video, write_video

    os.makedirs(folder, exist_ok=True)
    lines = []
    for label in range(2):
        for i in range(n_per_class):
            name = f"v{label}_{i}.mp4"
            write_video(os.path.join(folder, name), index_video(10, 32, 40))
            lines.append(f"{name} {label}")
    for split in ("train", "val", "test"):
        with open(os.path.join(folder, f"{split}.csv"), "w") as f:
            f.write("\n".join(lines) + "\n")


def _classes(path):
    with open(path, "w") as f:
        f.write("0 jump\n1 run\n")


def _csv(root):
    _video_csv(root)
    return root, []


def _kinetics(root):
    _video_csv(root)
    _classes(os.path.join(root, "classes.txt"))
    return root, []


def _ucf101(root):
    _video_csv(os.path.join(root, "split1"))
    _classes(os.path.join(root, "classes.txt"))
    return root, ["DATA.SPLIT", "1"]


def _cifar10(root):
    from test_image_datasets import make_cifar10

    import pathlib
    make_cifar10(pathlib.Path(root), per_batch=2, test=2)
    return root, ["DATA.NUM_FRAMES", "1", "MODEL.NUM_CLASSES", "10"]


def _cifar100(root):
    from test_image_datasets import cifar_images, dump

    os.makedirs(root)
    _, rows = cifar_images(3, 0)
    for split in ("train", "test"):
        dump(os.path.join(root, split), {b"fine_labels": [0, 50, 99], b"coarse_labels": [0, 1, 2], b"data": rows})
    dump(os.path.join(root, "meta"), {b"fine_label_names": [f"c{i}".encode() for i in range(100)]})
    return root, ["DATA.NUM_FRAMES", "1", "MODEL.NUM_CLASSES", "100"]


def _cub200(root):
    from test_image_datasets import make_cub

    import pathlib
    make_cub(pathlib.Path(root))
    return root, ["DATA.NUM_FRAMES", "1"]


def _imagefolder(root):
    for split in ("train", "val"):
        for c, name in enumerate(["n01", "n02"]):
            os.makedirs(os.path.join(root, split, name))
            Image.new("RGB", (40, 30), (100 * c, 60, 40)).save(os.path.join(root, split, name, "a.JPEG"))
    return root, ["DATA.NUM_FRAMES", "1"]


DATASET_FIXTURES = {"csv": _csv, "ucf101": _ucf101, "kinetics": _kinetics, "cifar10": _cifar10,
                    "cifar100": _cifar100, "cub200": _cub200, "imagefolder": _imagefolder}


def test_every_dataset_has_a_fixture_here():
    assert set(list_datasets()) == set(DATASET_FIXTURES) and list_datasets() == tuple(DATASET_REGISTRY)
    with pytest.raises(ConfigError, match="TRAIN.DATASET: 'cifar1O' is not allowed; choose one of .*"
                                          "Did you mean 'cifar10'"):
        build_dataset("cifar1O", None, "train")
    with pytest.raises(KeyError, match="unknown dataset 'cifar1O'; known: .*did you mean 'cifar10'"):
        DATASET_REGISTRY["cifar1O"]


@pytest.mark.parametrize("name", list_datasets())
def test_every_dataset_builds_from_generated_files(name, tmp_path):
    root, extra = DATASET_FIXTURES[name](str(tmp_path / name))
    cfg = load_config(None, ["TRAIN.DATASET", name, "TEST.DATASET", name, "DATA.PATH_TO_DATA_DIR", root,
                             "MODEL.NUM_CLASSES", "2", "DATA.NUM_FRAMES", "2", "DATA.SAMPLING_RATE", "2",
                             "DATA.TRAIN_JITTER_SCALES", "[24, 28]", "DATA.TRAIN_CROP_SIZE", "24",
                             "DATA.TEST_CROP_SIZE", "24", "TEST.NUM_ENSEMBLE_VIEWS", "1", "TEST.NUM_SPATIAL_CROPS",
                             "1"] + extra)
    train, test = build_dataset(name, cfg, "train"), build_dataset(name, cfg, "test")
    assert isinstance(train, DATASET_REGISTRY[name]) and len(train) > 0 and len(test) > 0
    item = train[0]
    assert item["inputs"].shape[1:] == (24, 24, 3) and item["inputs"].dtype == torch.uint8
    assert test[0]["inputs"].shape[-3:] == (24, 24, 3)


REID_PERSONS = [1, 2, 3, 4]


def _mars(root):
    from test_reid_data import write_mars

    write_mars(root, [(1, 1, 3), (1, 2, 3), (2, 1, 3), (2, 2, 3)], [(5, 1, 3), (5, 2, 3), (6, 1, 3), (6, 2, 3)],
               [0, 2])
    return 1


def _ilidsvid(root):
    from test_reid_data import write_ilidsvid

    ls = np.stack([np.roll(np.arange(1, 5), k) for k in range(3)])
    write_ilidsvid(root, REID_PERSONS, {(p, c): 3 for p in REID_PERSONS for c in (1, 2)}, ls)
    return 3


def _prid(root):
    from test_reid_data import write_prid

    frames = {p: 3 for p in REID_PERSONS}
    write_prid(root, frames, frames)
    return 10


REID_FIXTURES = {"mars": _mars, "ilidsvid": _ilidsvid, "prid": _prid}


def _reid_cfg(name, root):
    return load_config(None, ["MODEL.TASK", "reid", "MODEL.ARCH", "resnet50tp", "TRAIN.BATCH_SIZE", "8",
                              "REID.DATASET", name, "REID.ROOT", root, "REID.PRID_MIN_FRAMES", "2"])


@pytest.mark.parametrize("name", REID_DATASET_REGISTRY.names())
def test_every_reid_dataset_builds_from_generated_files(name, tmp_path):
    assert set(REID_DATASET_REGISTRY) == set(REID_FIXTURES)
    root = str(tmp_path / name)
    splits = REID_FIXTURES[name](root)
    cfg = _reid_cfg(name, root)
    data = build_reid_data(cfg)
    assert data.name == REID_DATASET_REGISTRY.metadata(name)["title"]
    assert data.train and data.query and data.gallery and data.num_train_pids == 2
    assert num_splits(cfg) == splits == data.num_splits


def test_unknown_reid_dataset_is_a_config_error_naming_the_key():
    cfg = _reid_cfg("mars", "/nonexistent")
    cfg.defrost()
    cfg.REID.DATASET = "marss"
    with pytest.raises(ConfigError, match=r"REID.DATASET: 'marss' is not allowed; choose one of 'ilidsvid', 'mars', "
                                          r"'prid'. Did you mean 'mars'"):
        build_reid_data(cfg)
    with pytest.raises(ConfigError, match="REID.DATASET: 'marss' is not allowed"):
        num_splits(cfg)
    # the config itself no longer lists the names: a dataset registered later is accepted
    assert load_config(None, ["MODEL.TASK", "reid", "MODEL.ARCH", "resnet50tp", "REID.DATASET", "newset"])
