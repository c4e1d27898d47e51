"""Parameter and FLOP counts (fvcore) per stage and per nonlocal block.

FLOPs follow fvcore's convention (one multiply-add = one FLOP). fvcore has no rule for
``scaled_dot_product_attention``; vidnl adds one: B·N·M·(E + Ev) for the two products.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from fvcore.nn import FlopCountAnalysis, parameter_count


def sdpa_flop_handle(inputs, outputs) -> int:
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(t) for t in inputs[:3])
    batch = 1
    for s in q[:-2]:
        batch *= s
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


def flop_counter(model: nn.Module, inputs: torch.Tensor) -> FlopCountAnalysis:
    flops = FlopCountAnalysis(model, inputs).set_op_handle("aten::scaled_dot_product_attention", sdpa_flop_handle)
    flops.unsupported_ops_warnings(False)
    flops.uncalled_modules_warnings(False)
    return flops


def complexity_table(model: nn.Module, inputs: torch.Tensor) -> list[dict]:
    """Rows {name, kind, params, gflops} for the whole model, each stage and each nonlocal block."""
    from ..nonlocal_blocks import NonLocalBase

    model = model.eval()
    names = {id(m): n for n, m in model.named_modules()}
    with torch.no_grad():
        by_module = flop_counter(model, inputs).by_module()
    params = parameter_count(model)
    rows = [{"name": "total", "kind": type(model).__name__, "params": params[""], "gflops": by_module[""] / 1e9}]
    stage_names = getattr(model, "stage_names", ())
    for label, stage in zip(stage_names, getattr(model, "stages", [])):
        n = names[id(stage)]
        rows.append({"name": label, "kind": f"stage ({n})", "params": params.get(n, 0),
                     "gflops": by_module.get(n, 0) / 1e9})
    for n, m in model.named_modules():
        if isinstance(m, NonLocalBase):
            rows.append({"name": n, "kind": type(m).__name__, "params": params.get(n, 0),
                         "gflops": by_module.get(n, 0) / 1e9})
    return rows


def format_table(rows: list[dict]) -> str:
    width = max(len(r["name"]) for r in rows)
    lines = [f"{'module':{width}}  {'kind':22} {'params':>12} {'GFLOPs':>10}"]
    for r in rows:
        lines.append(f"{r['name']:{width}}  {r['kind']:22} {r['params']:12,d} {r['gflops']:10.3f}")
    return "\n".join(lines)
