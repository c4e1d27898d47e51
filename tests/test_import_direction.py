"""Imports point down only, checked statically (``ast``, nothing is imported):

    engine  ->  models, data, nonlocal_blocks  ->  config  ->  errors

vidnl/models, vidnl/data, vidnl/nonlocal_blocks and vidnl/config never import vidnl.engine (at
the top or inside a function, absolute or relative); vidnl/config is a leaf that imports nothing
of vidnl but vidnl.errors and itself; and inside vidnl, tools, data_prep and benchmarks weight
loading and samplers come from where they live (vidnl.models.weights, vidnl.data.samplers), not
from the engine modules that re-export them for old user code.
"""

from __future__ import annotations

import ast
import os

import pytest

from conftest import ROOT

LOWER_PACKAGES = ("vidnl/models", "vidnl/data", "vidnl/nonlocal_blocks", "vidnl/config")
# names engine modules re-export for backwards compatibility only
MOVED = {"vidnl.engine.checkpoint": {"CheckpointError", "extract_model_state", "load_caffe2_pickle",
                                     "load_checkpoint_file", "load_model_weights", "load_weights", "unwrap"},
         "vidnl.engine.distributed": {"GlobalBatchSampler", "shard_indices"}}


def _python_files(*folders: str) -> list[str]:
    out = []
    for folder in folders:
        for dirpath, _, names in os.walk(os.path.join(ROOT, folder)):
            out += [os.path.join(dirpath, n) for n in names if n.endswith(".py")]
    return sorted(out)


def _module_name(path: str) -> str:
    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
    return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def imports_of(path: str, source: str | None = None) -> list[tuple[int, str, tuple[str, ...]]]:
    """(line, absolute module, imported names) of every import statement of the file at ``path``
    (``source``: its text, else read), relative imports resolved against its package."""
    if source is None:
        with open(path, encoding="utf-8") as f:
            source = f.read()
    module = _module_name(path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(source, path)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = tuple(alias.name for alias in node.names)
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - (node.level - 1)])
                target = f"{base}.{node.module}" if node.module else base
                if not node.module:  # "from .. import engine": the names are modules
                    out += [(node.lineno, f"{target}.{n}", ()) for n in names]
                    continue
            else:
                target = node.module
            out.append((node.lineno, target, names))
    return out


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def violations(path: str, source: str | None = None) -> list[str]:
    """What the file at ``path`` imports against the rules above."""
    rel = os.path.relpath(path, ROOT)
    bad = []
    for line, target, names in imports_of(path, source):
        where = f"{rel}:{line} imports {target}" + (f" ({', '.join(names)})" if names else "")
        lower = rel.startswith(LOWER_PACKAGES)
        if lower and (_within(target, "vidnl.engine") or (target == "vidnl" and "engine" in names)):
            bad.append(where + ": the engine is above this package")
        if rel.startswith("vidnl/config") and (
                _within(target, "vidnl") and not (_within(target, "vidnl.errors") or _within(target, "vidnl.config"))
                or target == "vidnl" and set(names) - {"errors", "config"}):
            bad.append(where + ": vidnl/config imports only vidnl.errors and itself")
        moved = MOVED.get(target, set()) & set(names)
        if moved:
            bad.append(where + f": import {', '.join(sorted(moved))} from where they live (vidnl.models.weights, "
                               f"vidnl.data.samplers)")
    return bad


def test_imports_point_down_only():
    files = _python_files("vidnl", "tools", "data_prep", "benchmarks")
    assert len(files) > 50
    bad = [v for f in files for v in violations(f)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path, line", [
    ("vidnl/models/x.py", "from ..engine.checkpoint import load_weights"),
    ("vidnl/data/x.py", "def f():\n    from vidnl.engine.distributed import get_rank"),
    ("vidnl/nonlocal_blocks/x.py", "from .. import engine"),
    ("vidnl/data/datasets/x.py", "import vidnl.engine.train"),
    ("vidnl/config/x.py", "from ..models.build import MODEL_REGISTRY"),
    ("vidnl/config/x.py", "def f():\n    from ..data import decoding"),
    ("vidnl/config/x.py", "import vidnl.nonlocal_blocks"),
    ("vidnl/engine/x.py", "from .checkpoint import load_weights"),
    ("tools/x.py", "from vidnl.engine.distributed import GlobalBatchSampler"),
])
def test_the_checker_sees_upward_imports(path, line):
    assert violations(os.path.join(ROOT, path), line)


@pytest.mark.parametrize("path, line", [
    ("vidnl/config/x.py", "from ..errors import ConfigError\nfrom . import defaults\nfrom .defaults import get_cfg"),
    ("vidnl/models/x.py", "from ..nonlocal_blocks import build_nonlocal_block\nfrom .weights import load_weights"),
    ("vidnl/engine/x.py", "from ..models.weights import load_weights\nfrom .checkpoint import save_checkpoint"),
    ("vidnl/data/x.py", "from ..errors import ConfigError\nimport torch.distributed"),
])
def test_the_checker_allows_downward_imports(path, line):
    assert violations(os.path.join(ROOT, path), line) == []


def test_loading_a_config_imports_no_other_vidnl_package():
    import subprocess
    import sys

    code = ("import sys; from vidnl.config import load_config; load_config(None, ['MODEL.ARCH', 'i3d']); "
            "print(sorted(m for m in sys.modules if m.startswith('vidnl')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": ROOT}, check=True).stdout
    loaded = ast.literal_eval(out.strip().splitlines()[-1])
    assert loaded and all(m in ("vidnl", "vidnl.errors") or _within(m, "vidnl.config") for m in loaded), loaded
