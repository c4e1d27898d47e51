"""vidnl: video action recognition and re-identification with nonlocal blocks.

    import vidnl
    vidnl.list_models(); model = vidnl.create_model("i3d_r50", num_classes=101)
    vidnl.predict(["video.mp4"], model, cfg=cfg)

The functions load lazily, so ``import vidnl`` alone does not import torch.
"""

__version__ = "0.1.0"

_LAZY = {"create_model": "api", "list_models": "api", "describe_model": "api", "predict": "predict"}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'vidnl' has no attribute {name!r}")
