"""Mixed precision: which autocast dtype a run uses, the autocast context, and a guard around a
oneDNN bug in the CPU's bfloat16 convolutions.

``TRAIN.MIXED_PRECISION True`` turns autocast on; ``TRAIN.AMP_DTYPE`` picks its dtype:
``bfloat16`` (no gradient scaler: its range is float32's), ``float16`` (GPU only, with a
``GradScaler``) or ``auto``: bfloat16 on the CPU and on GPUs that support it (compute
capability 8.0 and newer: A100, H100, ...), float16 on older GPUs.

**Why the CPU's bfloat16 training diverged (measured, torch 2.14.1, AMD EPYC with AVX-512 BF16).**
oneDNN's bfloat16 weight-gradient kernel of a *padded* convolution returns garbage (values up to
1e38, inf, NaN, and different values on each call) and sometimes writes outside its buffer
(glibc aborts with "munmap_chunk(): invalid pointer") when the padding is large against the input:
a kernel taller than a short clip's time axis (3×3×3 on T = 2, 5×7×7 on T = 4) or a 2-D map of
1–2 pixels. 48 of 510 conv3d shapes and 8 of 1500 conv2d shapes tried gave weight gradients
off by more than 5 %; the forward and the input gradient were right in all of them, and
float32 is right. The tiny I3D-R18 of the tests hit it in res4 (T = 2, 4×4 map, 3×3×3 conv):
an inf weight gradient after one step, NaN loss at the next, in 5 of 6 seeds, and never the same
seeds twice because the kernel reads memory it did not write. On CPUs without AVX-512 BF16
(emulated bfloat16) the bug does not show.

Its bias gradient is wrong in the same shapes.

**The guard.** Under bfloat16 autocast on the CPU, while gradients are recorded, every
zero-padded convolution (1-, 2- or 3-D) keeps oneDNN's padded kernels for the forward pass and
the input gradient (right in every shape tried), and takes its weight gradient on the explicitly
padded input with an unpadded convolution and its bias gradient as a float32 sum
(``_ConvWithUnpaddedWeightGrad``); an asymmetric padding ("same" with an even kernel) runs as
``F.pad`` plus the unpadded convolution. Both are the same function with the same gradients
(the pad is zeros), and oneDNN's unpadded kernels are right: 0 of 1800 conv3d and 0 of 4500 conv2d
shapes off by more than 5 %, 0 non-finite in 6000 random conv2d/conv3d shapes through the guard
(``tests/test_precision.py`` keeps the failing shapes). The cost is one copy of the padded input
per convolution in the backward pass (``benchmarks/amp.py``). The nonlocal blocks run their graph
part (affinity, normaliser, aggregation) in float32 inside autocast (``vidnl.nonlocal_blocks``),
and the losses are computed on float32 logits.
"""

from __future__ import annotations

from contextlib import ExitStack, nullcontext

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..errors import ConfigError

AMP_DTYPES = ("auto", "bfloat16", "float16")
_CONVS = {torch.conv1d: 1, torch.conv2d: 2, torch.conv3d: 3}
_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")


def _cuda_bf16(device: torch.device) -> bool:
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(device)[0] >= 8


def resolve_amp_dtype(enabled: bool, amp_dtype: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a run on ``device`` (None: float32). ``amp_dtype`` is one of
    ``AMP_DTYPES``; float16 needs a GPU (the CPU has no float16 arithmetic to gain from)."""
    if amp_dtype not in AMP_DTYPES:
        raise ConfigError(f"TRAIN.AMP_DTYPE: expected one of {AMP_DTYPES}, got {amp_dtype!r}.")
    if not enabled:
        return None
    if amp_dtype == "float16":
        if device.type != "cuda":
            raise ConfigError("TRAIN.AMP_DTYPE float16 needs a GPU (this run is on the CPU); use bfloat16 or auto.")
        return torch.float16
    if amp_dtype == "bfloat16":
        if device.type == "cuda" and not _cuda_bf16(device):
            raise ConfigError(f"TRAIN.AMP_DTYPE bfloat16: {torch.cuda.get_device_name(device)} has no bfloat16 "
                              f"arithmetic (compute capability < 8.0); use float16 or auto.")
        return torch.bfloat16
    return torch.float16 if device.type == "cuda" and not _cuda_bf16(device) else torch.bfloat16


def amp_dtype_of(cfg, device: torch.device) -> torch.dtype | None:
    """``resolve_amp_dtype`` of ``cfg`` (TRAIN.MIXED_PRECISION, TRAIN.AMP_DTYPE)."""
    return resolve_amp_dtype(cfg.TRAIN.MIXED_PRECISION, cfg.TRAIN.AMP_DTYPE, device)


def needs_grad_scaler(dtype: torch.dtype | None) -> bool:
    """float16 gradients underflow without loss scaling; bfloat16 has float32's range."""
    return dtype == torch.float16


def _conv_padding(padding, weight: torch.Tensor, dilation, dims: int) -> list[int] | None:
    """(left, right) per spatial dim, last dim first (F.pad's order), for a convolution's
    ``padding`` (int, tuple, "valid" or "same"); None when there is nothing to pad."""
    kernel = weight.shape[2:]
    dil = [dilation] * dims if isinstance(dilation, int) else list(dilation)
    if isinstance(padding, str):
        if padding == "valid":
            return None
        total = [d * (k - 1) for d, k in zip(dil, kernel)]  # "same" (stride 1)
        pairs = [(t // 2, t - t // 2) for t in total]
    else:
        pad = [padding] * dims if isinstance(padding, int) else list(padding)
        pairs = [(p, p) for p in pad]
    if not any(a or b for a, b in pairs):
        return None
    return [v for pair in reversed(pairs) for v in pair]


class _ConvWithUnpaddedWeightGrad(torch.autograd.Function):
    """A zero-padded convolution in bfloat16 whose forward and input gradient are oneDNN's padded
    kernels (right, and the fastest), whose weight gradient is computed on the explicitly padded
    input without padding and whose bias gradient is a float32 sum (oneDNN's padded bfloat16
    weight and bias gradients are the broken ones)."""

    @staticmethod
    def forward(ctx, x, w, b, stride, padding, dilation, groups, pad):
        ctx.dtypes = (x.dtype, w.dtype, None if b is None else b.dtype)
        ctx.conv = (stride, padding, dilation, groups, pad)
        x, w = x.to(torch.bfloat16), w.to(torch.bfloat16)
        b = None if b is None else b.to(torch.bfloat16)
        ctx.save_for_backward(x, w)
        with torch.autocast("cpu", enabled=False):
            return torch.ops.aten.convolution(x, w, b, stride, padding, dilation, False, [0] * len(stride), groups)

    @staticmethod
    def backward(ctx, gy):
        x, w = ctx.saved_tensors
        stride, padding, dilation, groups, pad = ctx.conv
        zeros = [0] * len(stride)
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        gy = gy.to(torch.bfloat16)
        gx = gb = gw = None
        if need_x:
            gx = torch.ops.aten.convolution_backward(gy, x, w, None, stride, padding, dilation, False, zeros, groups,
                                                     [True, False, False])[0]
        if need_b:  # summed in float32 (oneDNN's padded bfloat16 bias gradient is wrong too)
            gb = gy.float().sum([0] + list(range(2, gy.dim())))
        if need_w:
            gw = torch.ops.aten.convolution_backward(gy, F.pad(x, pad), w, None, stride, zeros, dilation, False,
                                                     zeros, groups, [False, True, False])[1]
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        return (None if gx is None else gx.to(x_dtype), None if gw is None else gw.to(w_dtype),
                None if gb is None else gb.to(b_dtype), None, None, None, None, None)


def _tuple(v, dims: int) -> list[int]:
    return [v] * dims if isinstance(v, int) else list(v)


class ExplicitConvPadding(TorchFunctionMode):
    """Runs zero-padded ``conv1d/2d/3d`` on bfloat16 CPU inputs (or under CPU bfloat16 autocast),
    when gradients are recorded, with the weight gradient of the unpadded convolution of the
    padded input (see the module's docstring: oneDNN's padded bfloat16 weight and bias gradients
    are wrong on some CPUs). Other calls pass through unchanged."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        dims = _CONVS.get(func)
        if dims is None or not torch.is_grad_enabled():
            return func(*args, **kwargs)
        call = dict(zip(_CONV_ARGS, args), **kwargs)
        x, w, b = call["input"], call["weight"], call.get("bias")
        if x.device.type != "cpu" or not (x.requires_grad or w.requires_grad or (b is not None and b.requires_grad)):
            return func(*args, **kwargs)
        autocast_bf16 = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        if not ((autocast_bf16 and x.dtype in (torch.float32, torch.bfloat16)) or x.dtype == torch.bfloat16):
            return func(*args, **kwargs)
        pad = _conv_padding(call.get("padding", 0), w, call.get("dilation", 1), dims)
        if pad is None:
            return func(*args, **kwargs)
        if pad[0::2] == pad[1::2]:  # symmetric: padded forward and input gradient, unpadded weight gradient
            return _ConvWithUnpaddedWeightGrad.apply(
                x, w, b, _tuple(call.get("stride", 1), dims), pad[0::2][::-1], _tuple(call.get("dilation", 1), dims),
                call.get("groups", 1), pad)
        if autocast_bf16 and x.dtype == torch.float32:
            x = x.to(torch.bfloat16)  # pad the half-size copy autocast would make anyway
        call["input"], call["padding"] = F.pad(x, pad), 0
        return func(**{k: v for k, v in call.items()})


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    """Autocast to ``dtype`` on ``device`` (None: a no-op context). On the CPU in bfloat16 it
    also applies ``ExplicitConvPadding``."""
    if dtype is None:
        return nullcontext()
    if device.type != "cpu":
        return torch.autocast(device.type, dtype=dtype)
    stack = ExitStack()
    stack.enter_context(torch.autocast("cpu", dtype=dtype))
    if dtype == torch.bfloat16:
        stack.enter_context(ExplicitConvPadding())
    return stack
