"""Checkpoints written before the restructuring of issue 20 (shared layers, registries, weights
moved to models/) still load: every model's parameter names and shapes, and those of every
nonlocal block type and style, equal the ones recorded at commit 4e20c5e
(``tests/data/parameter_names_4e20c5e.json.gz``, written by ``parameter_names()`` below run
against that commit; ``vtn_vit_r50`` is the record of ``vtn_r50``, the name of that network then, and
``vtn_r34``, added later, holds the official VTN checkpoint's names). Models are built on the meta
device: no memory, no time."""

import gzip
import json
import os

import pytest
import torch

from vidnl.api import create_model, list_models

RECORDED = os.path.join(os.path.dirname(__file__), "data", "parameter_names_4e20c5e.json.gz")
BLOCK_STYLES = [("nl", "paper"), ("nl", "official"), ("ns", "paper"), ("a2", "paper"), ("cgnl", "paper"),
                ("cgnl", "official"), ("cc", "paper"), ("snl", "paper"), ("snl", "official"), ("gsnl", "paper"),
                ("gsnl", "official")]


def _names(model, only=""):
    return [[k, list(v.shape)] for k, v in model.state_dict().items() if only in k]


def parameter_names(name: str) -> list:
    """[[parameter name, shape], ...] of ``name``: a model of ``list_models()`` with 7 classes, or
    "i3d_r18+<block>+<style>" (the nonlocal blocks' parameters of I3D-R18 with blocks after res3
    block 1 and res4 block 0)."""
    with torch.device("meta"):
        if "+" not in name:
            return _names(create_model(name, num_classes=7))
        arch, block, style = name.split("+")
        model = create_model(arch, num_classes=7,
                             nonlocal_blocks=dict(type=block, style=style, location=[[], [1], [0], []]))
    return _names(model, "nonlocal")


@pytest.fixture(scope="module")
def recorded():
    with gzip.open(RECORDED, "rt") as f:
        return json.load(f)


def test_every_model_and_block_is_recorded(recorded):
    expected = set(list_models()) | {f"i3d_r18+{b}+{s}" for b, s in BLOCK_STYLES}
    assert expected <= set(recorded), sorted(expected - set(recorded))


@pytest.mark.parametrize("name", list_models() + [f"i3d_r18+{b}+{s}" for b, s in BLOCK_STYLES])
def test_parameter_names_and_shapes_are_unchanged(recorded, name):
    now = parameter_names(name)
    before = recorded[name]
    changed = [(a, b) for a, b in zip(before, now) if a != b][:5]
    assert now == before, (f"{name}: {len(before)} -> {len(now)} tensors; first differences (before, now): "
                           f"{changed}; checkpoints of earlier versions would no longer load")
