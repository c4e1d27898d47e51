"""Parameter and multiply-add counts per stage and per nonlocal block (``torch.utils.flop_counter``).

Convention: the "FLOPs" here are **multiply-adds** (MACs), as in the papers' tables (Wang et al.
2018 (NL), Table 2e; Zhu et al. 2021 (SNL), Table 6). ``FlopCounterMode`` counts 2 FLOPs per multiply-add, so every count
it reports is divided by 2. Counted: convolutions, matrix products (linear, matmul, bmm, einsum)
and attention (``scaled_dot_product_attention``: B·N·M·(E + Ev) for its two products; vidnl adds
the rule for the fused CPU kernel, which torch's table lacks, so the fused and the explicit forms
count the same). Not counted: batch norm, pooling, activations, softmax and elementwise sums
(fvcore's counter, used before, also counted batch norm and pooling: its totals were ~0.5 %
higher, e.g. C2D R101 at 32×224² 35.47 G there, 35.29 G here).
"""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs (2 per multiply-add) of a fused attention kernel torch's table does not list."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _extra_rules() -> dict:
    aten = torch.ops.aten
    names = ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_fused_attention_overrideable")
    return {getattr(aten, n): _sdpa_flops for n in names if hasattr(aten, n)}


def macs_by_module(model: nn.Module, inputs: torch.Tensor) -> dict[str, int]:
    """Multiply-adds of ``model(inputs)`` (one forward, no gradient), keyed by module name
    (``named_modules`` names; ``""`` is the whole forward). A module called twice counts twice.
    ``model`` and ``inputs`` may live on the ``meta`` device (shapes only, nothing computed)."""
    counter = FlopCounterMode(display=False, custom_mapping=_extra_rules())
    with counter, torch.no_grad():
        model(inputs)
    root = type(model).__name__
    out: dict[str, int] = {}
    for key, ops in counter.get_flop_counts().items():
        if key == "Global":
            name = ""
        elif key == root:
            continue  # the same as Global: the model's own forward
        elif key.startswith(root + "."):
            name = key[len(root) + 1:]
        else:
            continue
        out[name] = sum(ops.values()) // 2
    out.setdefault("", 0)
    return out


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Parameters under every module name prefix (``""``: all); shared tensors count once."""
    counts: dict[str, int] = defaultdict(int)
    for name, p in model.named_parameters():
        parts = name.split(".")
        for i in range(len(parts)):
            counts[".".join(parts[:i])] += p.numel()
    return dict(counts)


def complexity_table(model: nn.Module, inputs: torch.Tensor) -> list[dict]:
    """Rows {name, kind, params, gflops} for the whole model, each stage and each nonlocal block;
    ``gflops``: 10⁹ multiply-adds for ``inputs`` (e.g. 1×3×T×H×W), see the module docstring."""
    from ..nonlocal_blocks import NonLocalBase

    model = model.eval()
    names = {id(m): n for n, m in model.named_modules()}
    by_module = macs_by_module(model, inputs)
    params = parameter_counts(model)
    rows = [{"name": "total", "kind": type(model).__name__, "params": params.get("", 0),
             "gflops": by_module[""] / 1e9}]
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
