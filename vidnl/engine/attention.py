"""What a nonlocal block attends to: one affinity row per query position, laid on the key grid,
and a figure of those rows over the clip's frames with one colorbar per row (Zhu et al. 2021
(SNL), Fig. 3; Wang et al. 2018 (NL), Fig. 3). Used by ``tools/visualize_attention.py`` and the run report
(:mod:`vidnl.engine.report`).

One row of the affinity is computed directly (O(N), never the N×N matrix), so it works for the
fast forms and for large graphs, and for every block type (nl, ns, snl, gsnl, a2, cc, cgnl).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn


def nonlocal_block_names(model: nn.Module) -> list[str]:
    """Module names of the model's nonlocal blocks, in forward order (``[]`` if it has none)."""
    from ..nonlocal_blocks import NonLocalBase

    return [n for n, m in model.named_modules() if isinstance(m, NonLocalBase)]


class _Captured(Exception):
    """Raised by the last input hook: the rest of the forward pass is not needed."""


def block_inputs(model: nn.Module, block_names: list[str], clip: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input of each named block for ``clip``, from one forward pass that stops as soon as
    every block has been reached."""
    modules = dict(model.named_modules())
    captured: dict[str, torch.Tensor] = {}
    wanted = set(block_names)

    def hook(name):
        def fn(module, args):
            captured.setdefault(name, args[0].detach())
            if wanted.issubset(captured):
                raise _Captured

        return fn

    handles = [modules[n].register_forward_pre_hook(hook(n)) for n in wanted]
    try:
        with torch.no_grad():
            model(clip)
    except _Captured:
        pass
    finally:
        for h in handles:
            h.remove()
    missing = wanted - set(captured)
    if missing:
        raise RuntimeError(f"the forward pass never reached {sorted(missing)}")
    return captured


def attention_maps(model: nn.Module, block_name: str, clip: torch.Tensor, queries) -> list[dict]:
    """For each query ``(t, y, x)`` (frame of ``clip``, and fractions of its height and width) the
    block's affinity row reshaped onto the block's key grid: ``{"query", "map": T'×H'×W' float32
    numpy, "row_sum"}``. ``clip`` is the model's input, 1×C×T×H×W, on the model's device."""
    return block_attention_maps(model, [block_name], clip, queries)[block_name]


def block_attention_maps(model: nn.Module, block_names: list[str], clip: torch.Tensor,
                         queries) -> dict[str, list[dict]]:
    """:func:`attention_maps` of several blocks and of a batch of N clips (N×C×T×H×W) from one
    (truncated) forward pass: per block, the maps of clip 0's queries, then clip 1's, ...; each
    map has a ``"clip"`` entry (its index in the batch)."""
    inputs = block_inputs(model, block_names, clip)
    modules = dict(model.named_modules())
    n = clip.shape[0]
    out = {}
    for name in block_names:
        x = inputs[name]
        if n > 1 and x.shape[0] != n:
            raise ValueError(f"{name} sees {x.shape[0]} samples for {n} clips: give the clips one at a time")
        out[name] = [{**m, "clip": b} for b in range(n)
                     for m in _rows(modules[name], x[b:b + 1], clip.shape[2], queries)]
    return out


def _rows(block: nn.Module, x: torch.Tensor, clip_frames: int, queries) -> list[dict]:
    from ..nonlocal_blocks.blocks import NonLocalBase, _as_5d

    x = _as_5d(x)
    _, _, t, h, w = x.shape
    kt, kh, kw = block.pool_kernel if isinstance(block, NonLocalBase) else (1, 1, 1)
    keys = (-(-t // kt), -(-h // kh), -(-w // kw))  # ceil_mode pooling
    out = []
    for qt, qy, qx in queries:
        ti = min(int(qt * t / clip_frames), t - 1)
        yi, xi = min(int(qy * h), h - 1), min(int(qx * w), w - 1)
        mode = getattr(block, "mode", "spacetime")
        if mode == "spacetime":
            graph, node, shape = 0, (ti * h + yi) * w + xi, keys
        elif mode == "space":
            graph, node, shape = ti, yi * w + xi, (1,) + keys[1:]
        else:  # time
            graph, node, shape = yi * w + xi, ti, (keys[0], 1, 1)
        with torch.no_grad():
            row = block.affinity_row(x, node)[graph].float().cpu()
        amap = row.reshape(shape).numpy()
        if mode == "space":  # the graph is one frame: show the map on that frame only
            full = np.zeros(keys, np.float32)
            full[min(ti // kt, keys[0] - 1)] = amap[0]
            amap = full
        elif mode == "time":
            amap = np.zeros(keys, np.float32)
            for tt in range(keys[0]):
                amap[tt, min(yi // kh, keys[1] - 1), min(xi // kw, keys[2] - 1)] = row[tt].item()
        out.append({"query": (qt, qy, qx), "map": amap, "row_sum": float(row.sum())})
    return out


def attention_figure(clip: torch.Tensor, maps: list[dict], mean, std, title: str,
                     row_labels: list[str] | None = None):
    """A matplotlib figure: one row per map showing the T frames of ``clip`` (N×C×T×H×W,
    normalised with ``mean`` / ``std``; a map's ``"clip"`` entry picks its clip, default 0)
    side by side, the map upsampled (nearest) and overlaid,
    the query marked with a star on its frame, and a colorbar per row (each row has its own
    scale). Non-negative maps use ``jet`` from 0; signed ones (dot-product kernels: NL dot, CGNL
    dot) a diverging map centred at 0. Size: (1.6 T + 0.8) × (1.7 rows + 0.2) inches."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch.nn.functional as F

    c = clip.detach().float().cpu()
    frames = (c * torch.tensor(std)[:, None, None, None] + torch.tensor(mean)[:, None, None, None])
    frames = frames.clamp(0, 1).permute(0, 2, 3, 4, 1).numpy()  # N×T×H×W×C
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    t, h, w = frames.shape[1:4]
    gap = max(1, w // 16)
    step = w + gap

    def montage(a: np.ndarray, fill) -> np.ndarray:  # T×H×W(×C) -> H×(T·(W+gap) - gap)(×C)
        pad = [(0, 0), (0, 0), (0, gap)] + [(0, 0)] * (a.ndim - 3)
        a = np.pad(a, pad, constant_values=fill)
        return np.concatenate(list(a), axis=1)[:, :t * step - gap]

    strips = {}
    rows = len(maps)
    fig, axes = plt.subplots(rows, 2, figsize=(1.6 * t + 0.8, 1.7 * rows + 0.2), squeeze=False,
                             gridspec_kw={"width_ratios": [1.6 * t, 0.08]})
    for r, m in enumerate(maps):
        up = F.interpolate(torch.from_numpy(np.ascontiguousarray(m["map"], dtype=np.float32))[None, None],
                           size=(t, h, w), mode="nearest")[0, 0].numpy()
        vmax = max(float(np.abs(up).max()), 1e-12)
        cmap, vmin = ("jet", 0.0) if up.min() >= 0 else ("coolwarm", -vmax)
        ax = axes[r][0]
        n = m.get("clip", 0)
        if n not in strips:
            strips[n] = montage(frames[n], 1.0)
        ax.imshow(strips[n], interpolation="nearest")
        image = ax.imshow(np.ma.masked_invalid(montage(up, np.nan)), cmap=cmap, alpha=0.5, vmin=vmin, vmax=vmax,
                          interpolation="nearest")
        qt, qy, qx = m["query"]
        if 0 <= qt < t:
            ax.plot([qt * step + qx * (w - 1)], [qy * (h - 1)], marker="*", color="white", markersize=10,
                    markeredgecolor="black")
        ax.set_yticks([])
        ax.set_xticks([i * step + (w - 1) / 2 for i in range(t)],
                      [f"frame {i}" for i in range(t)] if r == rows - 1 else [], fontsize=7)
        ax.tick_params(length=0)
        for side in ax.spines.values():
            side.set_visible(False)
        if row_labels:
            ax.set_ylabel(row_labels[r], fontsize=7)
        bar = fig.colorbar(image, cax=axes[r][1])
        bar.ax.tick_params(labelsize=6)
        bar.set_label("affinity", fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.subplots_adjust(left=0.3 / (1.6 * t + 0.8), right=1 - 0.55 / (1.6 * t + 0.8), top=1 - 0.3 / (1.7 * rows + 0.2),
                        bottom=0.25 / (1.7 * rows + 0.2), wspace=0.02, hspace=0.25)
    return fig


def render(clip: torch.Tensor, maps: list[dict], mean, std, path, title: str,
           row_labels: list[str] | None = None, dpi: int = 80) -> None:
    """Save :func:`attention_figure` as a PNG at ``path`` (a file name or a binary file object)."""
    import matplotlib.pyplot as plt

    fig = attention_figure(clip, maps, mean, std, title, row_labels)
    fig.savefig(path, dpi=dpi, format="png")
    plt.close(fig)


__all__ = ["nonlocal_block_names", "block_inputs", "attention_maps", "block_attention_maps", "attention_figure",
           "render"]
