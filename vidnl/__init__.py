"""vidnl: video action recognition and re-identification with nonlocal blocks.

    import vidnl
    vidnl.list_models(); model = vidnl.create_model("i3d_r50", num_classes=101)
    vidnl.predict(["video.mp4"], model, cfg=cfg)

The functions load lazily, so ``import vidnl`` alone does not import torch. ``vidnl.predict`` is
the module :mod:`vidnl.predict`, which calls :func:`vidnl.predict.predict` when called (the
package attribute of a submodule is the module once it is imported, so the two are one object).
"""

__version__ = "0.1.0"

_LAZY = {"create_model": "api", "list_models": "api", "describe_model": "api", "model_config": "api",
         "predict": "predict"}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return module if _LAZY[name] == name else getattr(module, name)
    raise AttributeError(f"module 'vidnl' has no attribute {name!r}")
