"""Mixed precision (vidnl/engine/precision.py): the autocast dtype, the guard around oneDNN's
padded bfloat16 weight gradients, float32 graphs in the nonlocal blocks, AMP training against
float32, and a diverging run's message.

The shapes in ``FAILING_SHAPES`` are ones whose bfloat16 weight gradient oneDNN got wrong (inf,
1e38, NaN) on an AMD EPYC with AVX-512 BF16 without the guard; on CPUs without bfloat16 units
they pass either way, so the wiring of the guard is also asserted directly (the pad node in the
autograd graph), which means the same on every CPU."""

import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from vidnl.config import load_config
from vidnl.config.validate import ALLOWED_VALUES
from vidnl.engine import train
from vidnl.engine.checkpoint import list_checkpoints
from vidnl.engine.precision import (AMP_DTYPES, ExplicitConvPadding, _conv_padding, autocast_context,
                                    needs_grad_scaler, resolve_amp_dtype)
from vidnl.engine.train import Trainer
from vidnl.errors import ConfigError
from vidnl.nonlocal_blocks import blocks as B
from vidnl.nonlocal_blocks.blocks import in_float32

from conftest import ROOT, tiny_opts

CPU = torch.device("cpu")
# (dims, C_in, C_out, kernel, stride, input size without batch/channels)
FAILING_SHAPES = [
    (3, 8, 16, (3, 3, 3), (1, 2, 2), (2, 4, 4)),  # res4 of the tests' tiny I3D-R18
    (3, 16, 16, (3, 3, 3), (1, 1, 1), (2, 4, 4)),
    (3, 16, 16, (3, 1, 1), (1, 1, 1), (2, 4, 4)),
    (3, 64, 64, (3, 3, 3), (1, 1, 1), (2, 4, 4)),
    (3, 16, 16, (5, 7, 7), (1, 1, 1), (4, 16, 16)),
    (3, 8, 16, (5, 7, 7), (1, 1, 1), (4, 8, 8)),
    (3, 16, 16, (3, 3, 3), (1, 1, 1), (2, 2, 2)),
    (3, 64, 64, (5, 7, 7), (1, 1, 1), (2, 2, 2)),
    (2, 16, 16, (7, 7), (1, 1), (2, 2)),
    (2, 64, 64, (7, 7), (2, 2), (2, 2)),
    (2, 32, 32, (5, 5), (1, 1), (2, 1)),
]


def _conv(dims, x, w, stride, padding, bias=None):
    return (F.conv2d if dims == 2 else F.conv3d)(x, w, bias, stride=stride, padding=padding)


@pytest.mark.parametrize("dims,cin,cout,kernel,stride,size", FAILING_SHAPES)
def test_padded_conv_gradients_in_bfloat16_autocast_match_float32(dims, cin, cout, kernel, stride, size):
    """Under vidnl's CPU bfloat16 autocast, the weight, bias and input gradients of a zero-padded
    convolution equal float32's to bfloat16 rounding (relative Frobenius error < 3 %, measured
    ≤ 1 %), every one of 5 calls (the broken kernels gave other garbage on each call)."""
    torch.manual_seed(0)
    pad = tuple(k // 2 for k in kernel)
    x = torch.randn(2, cin, *size)
    w = (torch.randn(cout, cin, *kernel) * 0.1).requires_grad_()
    b = torch.randn(cout).requires_grad_()
    xr = x.clone().requires_grad_()
    out = _conv(dims, xr, w, stride, pad, b)
    g = torch.randn_like(out)
    out.backward(g)
    ref_w, ref_b, ref_x = w.grad.clone(), b.grad.clone(), xr.grad.clone()
    for _ in range(5):
        w.grad = b.grad = None
        xb = x.clone().requires_grad_()
        with autocast_context(CPU, torch.bfloat16):
            out = _conv(dims, xb, w, stride, pad, b)
        assert out.dtype == torch.bfloat16
        out.float().backward(g)
        for got, ref in ((w.grad, ref_w), (b.grad, ref_b), (xb.grad, ref_x)):
            assert torch.isfinite(got).all()
            assert ((got.float() - ref).norm() / ref.norm()).item() < 0.03


def _has_pad(fn) -> bool:
    """Whether the autograd graph below grad_fn ``fn`` has the guard's node (a constant pad, or
    the convolution whose weight gradient is taken on the padded input)."""
    seen, stack = set(), [fn]
    while stack:
        f = stack.pop()
        if f is None or f in seen:
            continue
        seen.add(f)
        if "ConstantPadNd" in type(f).__name__ or "ConvWithUnpaddedWeightGrad" in type(f).__name__:
            return True
        stack.extend(n for n, _ in f.next_functions)
    return False


def test_guard_pads_explicitly_only_where_it_must():
    """The guard's wiring, on any CPU: under bfloat16 autocast with gradients, a padded
    nn.Conv3d/Conv2d gets an explicit pad; without padding, without gradients, in float32 or
    outside vidnl's context it does not."""
    x = torch.randn(1, 4, 2, 4, 4, requires_grad=True)
    conv3 = torch.nn.Conv3d(4, 4, 3, padding=1)
    with autocast_context(CPU, torch.bfloat16):
        assert _has_pad(conv3(x).grad_fn)
        assert _has_pad(torch.nn.Conv2d(4, 4, 3, padding="same")(x[:, :, 0]).grad_fn)
        assert not _has_pad(torch.nn.Conv3d(4, 4, 1)(x).grad_fn)
        with torch.no_grad():
            y = conv3(x)
        assert y.grad_fn is None
    with autocast_context(CPU, None):
        assert not _has_pad(conv3(x).grad_fn)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not _has_pad(conv3(x).grad_fn)
    with ExplicitConvPadding():  # bfloat16 tensors without autocast
        assert _has_pad(conv3.bfloat16()(x.detach().bfloat16().requires_grad_()).grad_fn)


def test_explicit_padding_is_the_same_convolution():
    """In float64, pad + unpadded conv == the padded conv (values and gradients), for int,
    tuple and "same" paddings with dilation: the rewrite changes no function."""
    torch.manual_seed(0)
    for padding, dilation, k in ((1, 1, 3), ((2, 1, 0), 1, (5, 3, 1)), ("same", (1, 2, 2), 3), ("same", 1, 4)):
        x = torch.randn(2, 3, 5, 6, 7, dtype=torch.float64, requires_grad=True)
        w = torch.randn(4, 3, *((k,) * 3 if isinstance(k, int) else k), dtype=torch.float64, requires_grad=True)
        ref = F.conv3d(x, w, padding=padding, dilation=dilation)
        (ref_gx, ref_gw) = torch.autograd.grad(ref.sum(), (x, w))
        pad = _conv_padding(padding, w, dilation, 3)
        got = F.conv3d(F.pad(x, pad), w, dilation=dilation)
        gx, gw = torch.autograd.grad(got.sum(), (x, w))
        assert got.shape == ref.shape
        for a, b in ((got, ref), (gx, ref_gx), (gw, ref_gw)):
            assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)
    assert _conv_padding(0, w, 1, 3) is None and _conv_padding("valid", w, 1, 3) is None


def test_guard_holds_under_torch_compile():
    """A compiled (graph-captured) padded conv under the context gives float32's weight gradient
    on a shape oneDNN's padded kernel gets wrong."""
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(16, 16, 3, padding=1, bias=False)
    x = torch.randn(2, 16, 2, 4, 4)
    g = torch.randn(2, 16, 2, 4, 4)
    conv(x).backward(g)
    ref = conv.weight.grad.clone()
    compiled = torch.compile(conv, backend="aot_eager")
    for _ in range(3):
        conv.weight.grad = None
        with autocast_context(CPU, torch.bfloat16):
            out = compiled(x)
        out.float().backward(g)
        assert ((conv.weight.grad - ref).norm() / ref.norm()).item() < 0.03


def test_amp_dtype_resolution_and_config():
    assert set(ALLOWED_VALUES["TRAIN.AMP_DTYPE"]) == set(AMP_DTYPES)
    assert resolve_amp_dtype(False, "auto", CPU) is None
    assert resolve_amp_dtype(True, "auto", CPU) is torch.bfloat16
    assert resolve_amp_dtype(True, "bfloat16", CPU) is torch.bfloat16
    with pytest.raises(ConfigError, match="float16 needs a GPU"):
        resolve_amp_dtype(True, "float16", CPU)
    assert needs_grad_scaler(torch.float16) and not needs_grad_scaler(torch.bfloat16)
    with pytest.raises(ConfigError, match="TRAIN.AMP_DTYPE"):
        load_config(None, ["TRAIN.AMP_DTYPE", "half"])


def test_in_float32_runs_the_graph_part_in_float32():
    """Inside autocast, in_float32 turns autocast off and its tensor arguments to float32, and so
    does the operator it returns; outside autocast it changes nothing."""
    seen = {}

    def graph(a, b):
        seen["dtypes"] = (a.dtype, b.dtype)
        seen["autocast"] = torch.is_autocast_enabled("cpu")
        return lambda v: (seen.update(v=(v.dtype, torch.is_autocast_enabled("cpu"))), a @ v)[1]

    a, b = torch.randn(3, 4).bfloat16(), torch.randn(4, 2).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        op = in_float32(graph, a, b)
        assert seen == {"dtypes": (torch.float32, torch.float32), "autocast": False}
        out = op(torch.randn(4, 2).bfloat16())
        assert out.dtype == torch.float32 and seen["v"] == (torch.float32, False)
    in_float32(graph, a, b)
    assert seen["dtypes"] == (torch.bfloat16, torch.bfloat16)


@pytest.mark.parametrize("block_type", B.list_blocks())
def test_blocks_under_bfloat16_autocast_match_float32(block_type, monkeypatch):
    """Every block type's output under bfloat16 autocast is float32's to bfloat16 rounding (the
    residual's relative error < 5 %), and its graph part (the functional.py call) sees float32
    tensors with autocast off."""
    torch.manual_seed(0)
    block = B.BLOCK_REGISTRY[block_type](16, 8).eval()
    torch.nn.init.normal_(block.bn.weight)  # a non-zero residual
    x = torch.randn(2, 16, 2, 4, 4)
    seen = []
    for name in ("affinity_operator", "double_attention_fast", "cgnl_fast", "criss_cross_fast"):
        fn = getattr(B.NF, name)

        def spy(*args, _fn=fn, **kwargs):
            seen.append((torch.is_autocast_enabled("cpu"),
                         {a.dtype for a in args if torch.is_tensor(a) and a.is_floating_point()}))
            return _fn(*args, **kwargs)
        monkeypatch.setattr(B.NF, name, spy)
    with torch.no_grad():
        ref = block(x) - x
        seen.clear()
        with autocast_context(CPU, torch.bfloat16):
            got = block(x).float() - x
    assert seen and all(s == (False, {torch.float32}) for s in seen), seen
    assert ((got - ref).norm() / ref.norm()).item() < 0.05


def _flat(state: dict) -> torch.Tensor:
    return torch.cat([v.double().flatten() for k, v in sorted(state.items())
                      if v.is_floating_point() and "running" not in k])


def _run(data: str, out: str, amp: bool, seed: int = 3) -> tuple[torch.Tensor, float]:
    """Weights moved by 2 SGD steps of the tiny I3D-R18 + SNL, and the epoch's loss."""
    cfg = load_config(None, tiny_opts(data, out, **{
        "RNG_SEED": seed, "SOLVER.BASE_LR": 0.01, "SOLVER.MAX_EPOCH": 1, "TRAIN.EVAL_PERIOD": 0,
        "TEST.ENABLE": False, "MODEL.DROPOUT_RATE": 0.0, "TRAIN.MIXED_PRECISION": amp}))
    init = _flat(Trainer(cfg).model.state_dict())
    res = train(cfg)
    return _flat(res["model"].state_dict()) - init, res["last_epoch"]["loss"]


def test_amp_training_follows_float32_and_repeats_exactly(tiny_dataset, tmp_path):
    """bfloat16 AMP on the CPU over 2 SGD steps (momentum) from the same start: the loss is
    float32's to 2e-3 and the weight update float32's to 25 % (measured 2-11 % over seeds 0-5;
    an inf weight gradient gives inf). Two AMP runs of the same seed end bit-identical (the
    broken kernel made them differ)."""
    d32, loss32 = _run(tiny_dataset, str(tmp_path / "f32"), False)
    d_amp, loss_amp = _run(tiny_dataset, str(tmp_path / "amp"), True)
    d_again, _ = _run(tiny_dataset, str(tmp_path / "amp2"), True)
    assert math.isfinite(loss_amp) and abs(loss_amp - loss32) < 2e-3
    assert torch.isfinite(d_amp).all()
    assert ((d_amp - d32).norm() / d32.norm()).item() < 0.25
    assert torch.equal(d_amp, d_again)


def test_divergence_is_a_user_error_that_keeps_the_last_good_checkpoint(tiny_dataset, tmp_path):
    """A run whose learning rate jumps to 1e36 after epoch 1: exit 2 and one message with the
    step, the loss, the learning rate and the float32 hint; epoch 1's checkpoint stays and the
    same command with TRAIN.MIXED_PRECISION False resumes from it."""
    out = str(tmp_path / "run")
    opts = tiny_opts(tiny_dataset, out, **{
        "TRAIN.MIXED_PRECISION": True, "SOLVER.MAX_EPOCH": 3, "TRAIN.CHECKPOINT_PERIOD": 1, "TRAIN.EVAL_PERIOD": 0,
        "TEST.ENABLE": False, "SOLVER.BASE_LR": 1e36, "SOLVER.LR_POLICY": "steps_with_relative_lrs",
        "SOLVER.STEPS": "[0, 1]", "SOLVER.LRS": "[1e-38, 1.0]"})
    cmd = [sys.executable, os.path.join(ROOT, "tools", "run_net.py"), "--cfg",
           os.path.join(ROOT, "configs", "Synthetic", "I3D_R18_SNL.yaml")] + opts
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    msg = err[0]
    assert "training diverged" in msg and "at epoch 2 iteration" in msg and "learning rate 1e+36" in msg
    assert "TRAIN.MIXED_PRECISION False" in msg and "checkpoint_epoch_00001.pyth" in msg
    assert [os.path.basename(p) for p in list_checkpoints(out)] == ["checkpoint_epoch_00001.pyth"]
    again = subprocess.run(cmd + ["TRAIN.MIXED_PRECISION", "False"], capture_output=True, text=True, cwd=ROOT,
                           timeout=300)
    assert again.returncode == 2 and "training diverged" in again.stderr
    assert "mixed precision" not in again.stderr.splitlines()[-1]
    log = open(os.path.join(out, "log.txt")).read()
    assert "checkpoint_epoch_00001.pyth" in log.split("TRAIN.MIXED_PRECISION False", 1)[-1]
