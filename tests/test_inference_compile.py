"""TEST.COMPILE (vidnl.engine.inference): the test and prediction loops' forward passes through one
torch.compile graph. Padding a short pass with zero clips is exact because every network scores
each clip of an eval batch on its own (checked for every family and block, with a network that
mixes clips as the negative control); the compiled model gives the eager outputs and compiles
once for all pass sizes; a compiler failure falls back to eager mode with a warning; and the
multi-view test, predict and validation during training give their eager results with it (the
re-ID test and feature extraction: tests/test_reid_engine.py, tests/test_predict.py)."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import torch
import torch.nn as nn

from vidnl.api import create_model
from vidnl.engine import inference
from vidnl.engine.inference import CompiledInference, build_inference_model, compile_for_inference
from vidnl.config import load_config

from conftest import tiny_opts
from test_memory_format import FAMILIES
from test_parameter_names import BLOCK_STYLES

# (name, model kwargs, clip shape C×T×H×W) of every network family and nonlocal block
NETWORKS = ([(name, {}, (3, t, crop, crop)) for name, t, crop in FAMILIES]
            + [(f"i3d_r18+{b}+{s}", dict(nonlocal_blocks=dict(type=b, style=s, location=[[], [1], [0], []])),
                (3, 4, 32, 32)) for b, s in BLOCK_STYLES]
            + [("resnet50tp", {}, (3, 4, 32, 16)), ("vtn_vit_r50", {}, (3, 4, 32, 32)), ("resnet2d_r18", {}, (3, 4, 32, 32)),
               ("preresnet20", {}, (3, 1, 32, 32))])


def _eval_model(name: str, channels_last: bool = False, **kw) -> nn.Module:
    torch.manual_seed(0)
    model = create_model(name.split("+")[0], num_classes=5,
                         config={"RESNET.BASE_WIDTH": 8, "TRAIN.CHANNELS_LAST": channels_last}, **kw)
    g = torch.Generator().manual_seed(1)
    for m in model.modules():  # non-trivial norms: zero-initialised final BNs would hide a branch
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


def _padding_error(model: nn.Module, clip_shape: tuple, pad: int = 3) -> float:
    """Largest difference, relative to the scale, between the outputs of 2 clips scored alone and
    scored in a batch padded with ``pad`` zero clips."""
    x = torch.randn((2,) + clip_shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        alone = model(x)
        padded = model(torch.cat([x, x.new_zeros((pad,) + clip_shape)]))[:2]
    return ((padded - alone).abs().max() / alone.abs().max().clamp_min(1.0)).item()


@pytest.mark.parametrize("name,kw,clip_shape", NETWORKS, ids=[n[0] for n in NETWORKS])
def test_eval_networks_score_each_clip_on_its_own(name, kw, clip_shape):
    assert _padding_error(_eval_model(name, **kw), clip_shape) < 1e-5


def test_a_network_that_mixes_clips_is_caught():
    """The negative control of the test above: BN with batch statistics in eval mode."""
    model = nn.Sequential(nn.Conv3d(3, 4, 1), nn.BatchNorm3d(4, track_running_stats=False), nn.Flatten(),
                          nn.LazyLinear(5)).eval()
    assert _padding_error(model, (3, 2, 4, 4)) > 1e-2


def _counting_backend(graphs: list):
    """A torch.compile backend that records each graph it compiles (its input shapes) and runs it
    as captured (no C++ compiler needed)."""
    def backend(gm, example_inputs):
        graphs.append([tuple(t.shape) for t in example_inputs if isinstance(t, torch.Tensor)])
        return gm.forward
    return backend


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
def test_compiled_inference_compiles_once_and_gives_the_eager_outputs(caplog, channels_last):
    torch._dynamo.reset()
    model = _eval_model("i3d_r18+snl+paper", channels_last=channels_last,
                        nonlocal_blocks=dict(type="snl", location=[[], [1], [0], []]))
    graphs: list = []
    compiled = CompiledInference(model, batch_size=5, backend=_counting_backend(graphs))
    assert [k for k in compiled.state_dict()] == ["model." + k for k in model.state_dict()]
    g = torch.Generator().manual_seed(3)
    compiled_after = []
    with torch.no_grad(), caplog.at_level(logging.INFO):
        for n in (5, 3, 1, 5, 2):
            x = torch.randn(n, 3, 4, 32, 32, generator=g)
            got, want = compiled(x), model(x)
            assert got.shape == want.shape == (n, 5)
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=1e-5 * want.abs().max().item())
            compiled_after.append(len(graphs))
    # compiled on the first pass, never again for the passes of 3, 1 and 2 clips; for 5 clips
    assert compiled_after[0] > 0 and set(compiled_after) == {compiled_after[0]}
    assert graphs[0][0] == (5, 3, 4, 32, 32)
    assert "TEST.COMPILE: compiled the model" in caplog.text and "passes of 5 clips" in caplog.text


def test_eager_inference_is_the_model_itself():
    model = nn.Linear(2, 2)
    assert compile_for_inference(model, 4, None) is model
    cfg = load_config(None, ["TEST.BATCH_SIZE", "4"])
    assert build_inference_model(cfg, model) is model
    cfg = load_config(None, ["TEST.COMPILE", "True", "TEST.COMPILE_BACKEND", "aot_eager", "TEST.BATCH_SIZE", "4"])
    wrapped = build_inference_model(cfg, model)
    assert isinstance(wrapped, CompiledInference) and wrapped.batch_size == 4 and wrapped.backend == "aot_eager"


def test_a_compiler_failure_falls_back_to_eager(monkeypatch, caplog):
    calls = []

    def broken(*x):
        calls.append(1)
        raise RuntimeError("backend compiler failed: no C++ compiler")

    monkeypatch.setattr(inference.torch, "compile", lambda model, **kw: broken)
    model = _eval_model("c2d_r18")
    wrapped = compile_for_inference(model, 4, "inductor")
    x = torch.randn(3, 3, 4, 32, 32)
    with torch.no_grad(), caplog.at_level(logging.WARNING):
        first, second = wrapped(x), wrapped(x)
        want = model(x)
    assert "TEST.COMPILE: compiling failed (RuntimeError: backend compiler failed" in caplog.text
    assert calls == [1]  # not tried again
    assert torch.equal(first, want) and torch.equal(second, want)


def test_bad_backend_is_a_config_error():
    from vidnl.errors import ConfigError

    with pytest.raises(ConfigError, match="TEST.COMPILE_BACKEND"):
        load_config(None, ["TEST.COMPILE_BACKEND", "tensorrt"])


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="inductor needs a C++ compiler")
def test_inductor_compiles_a_nonlocal_block():
    """The default backend, once, on a small network of a conv, BN, ReLU and an NL block (the
    other tests capture graphs only; a whole backbone would take ~30 s of C++ compiling here)."""
    from vidnl.nonlocal_blocks import create_block

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(3, 16, 3, padding=1), nn.BatchNorm3d(16), nn.ReLU(),
                          create_block("nl", 16, style="official"), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
                          nn.Linear(16, 5)).eval()
    with torch.no_grad():
        model[1].running_var.uniform_(0.5, 2.0)
        model[3].bn.weight.fill_(1.0)  # the block's output BN (zero-initialised)
    compiled = compile_for_inference(model, 4, "inductor")
    x = torch.randn(3, 3, 4, 8, 8)
    with torch.no_grad():
        got, want = compiled(x), model(x)
    assert compiled.compiled_ok
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=1e-4 * want.abs().max().item())


def test_multi_view_test_and_predict_under_test_compile(tiny_dataset, tmp_path, caplog):
    """The whole test and predict with TEST.COMPILE (graph capture): the eager predictions."""
    from vidnl.engine import test as run_test
    from vidnl.models import build_model
    from vidnl.predict import predict_from_config

    weights = str(tmp_path / "tiny.pyth")
    base = {"TRAIN.ENABLE": False, "TEST.CHECKPOINT_FILE_PATH": weights, "TEST.BATCH_SIZE": 4}
    cfg = load_config(None, tiny_opts(tiny_dataset, str(tmp_path / "eager"), **base))
    torch.manual_seed(0)
    model = build_model(cfg)
    nn.init.normal_(model.head.fc.weight, std=1.0)
    torch.save({"model_state": model.state_dict(), "epoch": 1}, weights)
    eager = run_test(cfg)
    ccfg = load_config(None, tiny_opts(tiny_dataset, str(tmp_path / "compiled"), **base, **{
        "TEST.COMPILE": True, "TEST.COMPILE_BACKEND": "aot_eager"}))
    torch._dynamo.reset()
    with caplog.at_level(logging.INFO):
        compiled = run_test(ccfg)
    assert "TEST.COMPILE: compiled the model (backend aot_eager) for forward passes of 4 clips" in caplog.text
    assert compiled["num_videos"] == eager["num_videos"] == 4 and compiled["views_per_video"] == 6
    for a, b in zip(compiled["predictions"], eager["predictions"]):
        assert a["path"] == b["path"] and a["pred"] == b["pred"]
        np.testing.assert_allclose(a["scores"], b["scores"], rtol=0, atol=1e-5)
    videos = [p["path"] for p in eager["predictions"]]
    caplog.clear()
    with caplog.at_level(logging.INFO):
        predicted = predict_from_config(ccfg, weights, videos)
    assert "TEST.COMPILE: compiled the model (backend aot_eager)" in caplog.text
    for r, p in zip(predicted, eager["predictions"]):
        np.testing.assert_allclose(r["scores"], p["scores"], rtol=0, atol=1e-5)


def test_validation_under_test_compile_follows_the_training_weights(tiny_dataset, tmp_path, caplog, monkeypatch):
    """TEST.COMPILE during training: validation compiles once and gives eager validation's scores
    after every epoch (they change between epochs), so the compiled graph reads the weights as
    they are trained."""
    from vidnl.engine import tasks, train

    scores = {}

    def recording(name):
        def evaluate(*args, **kw):
            res = real_evaluate(*args, **kw)
            scores.setdefault(name, []).append([p["scores"] for p in res["predictions"]])
            return res
        return evaluate

    real_evaluate = tasks.evaluate
    extra = {"SOLVER.MAX_EPOCH": 2, "TEST.ENABLE": False, "TRAIN.EVAL_PERIOD": 1}
    monkeypatch.setattr(tasks, "evaluate", recording("eager"))
    train(load_config(None, tiny_opts(tiny_dataset, str(tmp_path / "eager"), **extra)))
    torch._dynamo.reset()
    monkeypatch.setattr(tasks, "evaluate", recording("compiled"))
    with caplog.at_level(logging.INFO):
        train(load_config(None, tiny_opts(tiny_dataset, str(tmp_path / "compiled"), **extra, **{
            "TEST.COMPILE": True, "TEST.COMPILE_BACKEND": "aot_eager"})))
    assert caplog.text.count("TEST.COMPILE: compiled the model (backend aot_eager)") == 1
    eager, compiled = np.array(scores["eager"]), np.array(scores["compiled"])
    assert eager.shape == compiled.shape and eager.shape[0] == 2  # two validations
    assert np.abs(eager[1] - eager[0]).max() > 1e-3  # training moved the scores
    np.testing.assert_allclose(compiled, eager, rtol=0, atol=1e-5)
