"""Dependencies that are all real: decord is optional (PyAV decodes everything without it),
every install requirement is imported, every third-party import is declared, and FLOPs come
from torch's FlopCounterMode (no fvcore jit tracer) with the facts of Wang et al. 2018 (NL), Table 2e."""

from __future__ import annotations

import ast
import json
import logging
import os
import re
import subprocess
import sys
import warnings
from importlib.metadata import packages_distributions

import pytest
import torch

from conftest import ROOT, tiny_opts
from vidnl.config import load_config
from vidnl.data import decoding
from vidnl.errors import ConfigError


# ------------------------------------------------------------------------------------------
# decord optional
# ------------------------------------------------------------------------------------------
def _no_decord_env(tmp_path) -> dict:
    """An environment where ``import decord`` fails as if it were not installed."""
    shadow = tmp_path / "no_decord"
    (shadow / "decord").mkdir(parents=True)
    (shadow / "decord" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'decord'\", name='decord')\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(shadow), ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


# One process (its start-up is most of the cost): a train + test run, the same with an explicit
# decord, check_videos with auto and with decord. Each result: [exit status, stdout, stderr].
DRIVER = r"""
import contextlib, io, json, os, sys
sys.path[:0] = [sys.argv[1], os.path.join(sys.argv[1], "tools")]
try:
    import decord
    shadowed = False
except ModuleNotFoundError as e:
    shadowed = "No module named 'decord'" in str(e)
import run_net
from data_prep import check_videos
out = {"shadowed": shadowed}
for name, main, argv in json.loads(sys.argv[2]):
    o, e = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        rc = {"run_net": run_net.main, "check_videos": check_videos.main}[main](argv)
    out[name] = [rc, o.getvalue(), e.getvalue()]
print(json.dumps(out))
"""


def test_without_decord_training_and_testing_use_pyav(tiny_dataset, tmp_path):
    csv = os.path.join(tiny_dataset, "test.csv")
    rep = tmp_path / "report.json"
    fast = {"SOLVER.MAX_EPOCH": 1, "TEST.NUM_ENSEMBLE_VIEWS": 1, "TEST.NUM_SPATIAL_CROPS": 1}
    calls = [
        ["auto", "run_net", tiny_opts(tiny_dataset, str(tmp_path / "out"), **fast)],
        ["decord", "run_net", tiny_opts(tiny_dataset, str(tmp_path / "out2"), **{"DATA.DECODING_BACKEND": "decord"})],
        ["check_auto", "check_videos", [csv, "--out-csv", str(tmp_path / "clean.csv"), "--report", str(rep),
                                        "--workers", "1"]],
        ["check_decord", "check_videos", [csv, "--backend", "decord"]],
    ]
    proc = subprocess.run([sys.executable, "-c", DRIVER, ROOT, json.dumps(calls)], capture_output=True, text=True,
                          env=_no_decord_env(tmp_path), cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["shadowed"] is True  # decord really cannot be imported in there

    rc, out, err = res["auto"]
    assert rc == 0, out[-2000:] + err[-2000:]
    assert "DATA.DECODING_BACKEND auto: decoding with pyav (decord is not available" in out
    assert "video top-1" in out

    # an explicit decord is a config error: one message, exit 2, stopped before anything was written
    rc, out, err = res["decord"]
    assert rc == 2, err
    assert err.startswith("vidnl: error: DATA.DECODING_BACKEND: 'decord'") and err.count("\n") == 1
    assert "pip install 'vidnl[decord]'" in err and "DATA.DECODING_BACKEND pyav" in err
    assert not (tmp_path / "out2").exists()

    # check_videos: auto decodes with PyAV; an explicit decord is refused the same way
    assert res["check_auto"][0] == 0, res["check_auto"][2]
    assert {v["backend"] for v in json.loads(rep.read_text())["videos"]} == {"pyav"}
    rc, out, err = res["check_decord"]
    assert rc == 2 and "pip install 'vidnl[decord]'" in err and err.count("\n") == 1


def test_auto_backend_resolves_and_logs_once(monkeypatch, caplog):
    monkeypatch.setattr(decoding, "_DECORD_IMPORT", ["ModuleNotFoundError: No module named 'decord'"])
    monkeypatch.setattr(decoding, "_AUTO_LOGGED", [])
    with caplog.at_level(logging.INFO, logger="vidnl.data.decoding"):
        assert decoding.resolve_backend("auto") == "pyav"
        assert decoding.resolve_backend("auto") == "pyav"
        assert decoding.resolve_backend("pyav") == "pyav"
    assert [r.getMessage() for r in caplog.records if "DECODING_BACKEND" in r.getMessage()] == [
        "DATA.DECODING_BACKEND auto: decoding with pyav (decord is not available: ModuleNotFoundError: No module "
        "named 'decord'; pip install 'vidnl[decord]' for faster random access)"]
    assert load_config(None, []).DATA.DECODING_BACKEND == "auto"
    cfg = load_config(None, ["DATA.DECODING_BACKEND", "decord"])  # checked where the decoder is chosen:
    with pytest.raises(ConfigError, match=r"^DATA.DECODING_BACKEND: 'decord' is set but decord cannot be imported"
                                          r".*pip install 'vidnl\[decord\]'"):
        decoding.resolve_backend(cfg.DATA.DECODING_BACKEND)
    assert load_config(None, ["DATA.DECODING_BACKEND", "pyav"]).DATA.DECODING_BACKEND == "pyav"

    monkeypatch.setattr(decoding, "_DECORD_IMPORT", [None])
    monkeypatch.setattr(decoding, "_AUTO_LOGGED", [])
    assert decoding.resolve_backend("auto") == "decord"
    cfg = load_config(None, ["DATA.DECODING_BACKEND", "decord"])
    assert decoding.resolve_backend(cfg.DATA.DECODING_BACKEND) == "decord"
    with pytest.raises(ValueError, match="'ffmpeg'"):
        decoding.resolve_backend("ffmpeg")


# ------------------------------------------------------------------------------------------
# Declared = imported
# ------------------------------------------------------------------------------------------
def _setup_requirements() -> tuple[list[str], dict[str, list[str]]]:
    """install_requires and extras_require of setup.py, as written (read with ast, not run)."""
    tree = ast.parse(open(os.path.join(ROOT, "setup.py")).read())
    consts = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                consts[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass

    def value(node):
        if isinstance(node, ast.Name):
            return consts[node.id]
        if isinstance(node, ast.List):
            out = []
            for elt in node.elts:
                out += value(elt.value) if isinstance(elt, ast.Starred) else [value(elt)]
            return out
        if isinstance(node, ast.Dict):
            return {ast.literal_eval(k): value(v) for k, v in zip(node.keys, node.values)}
        return ast.literal_eval(node)

    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    kw = {k.arg: value(k.value) for k in call.keywords if k.arg in ("install_requires", "extras_require")}
    return kw["install_requires"], kw.get("extras_require", {})


def _dist_name(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9._-]+", requirement.strip()).group(0)
    return re.sub(r"[-_.]+", "-", name).lower()


def _imports(folders=("vidnl", "tools")) -> dict[str, list[tuple[str, bool]]]:
    """Absolute imports (dotted name) -> [(file, at module level)]."""
    found: dict[str, list[tuple[str, bool]]] = {}
    for folder in folders:
        for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
            for f in files:
                if not f.endswith(".py"):
                    continue
                path = os.path.join(dirpath, f)
                tree = ast.parse(open(path).read())
                lazy = set()
                for fn in ast.walk(tree):
                    if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        lazy.update(id(n) for n in ast.walk(fn))
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        names = [a.name for a in node.names]
                    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                        names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                    else:
                        continue
                    for n in names:
                        found.setdefault(n, []).append((os.path.relpath(path, ROOT), id(node) not in lazy))
    return found


# a distribution whose module is not its name, or that vidnl uses through another package
MODULE_OF = {"tensorboard": "torch.utils.tensorboard"}


def _unused(requirements: list[str], imported: set[str]) -> list[str]:
    modules_of = {}
    for module, dists in packages_distributions().items():
        for d in dists:
            modules_of.setdefault(_dist_name(d), set()).add(module)
    unused = []
    for req in requirements:
        dist = _dist_name(req)
        mods = {MODULE_OF[dist]} if dist in MODULE_OF else modules_of.get(dist, {dist})
        if not any(i == m or i.startswith(m + ".") for m in mods for i in imported):
            unused.append(dist)
    return unused


def test_every_install_requirement_is_imported():
    install, _ = _setup_requirements()
    imported = set(_imports())
    assert len(install) >= 10 and "torch" in {_dist_name(r) for r in install}
    assert _unused(install, imported) == []
    # the check itself sees an unused one (iopath came with fvcore and was never imported)
    assert _unused(install + ["iopath", "some-package-nobody-imports"], imported) == [
        "iopath", "some-package-nobody-imports"]


def test_every_third_party_import_is_declared_and_decord_is_lazy():
    install, extras = _setup_requirements()
    declared = {_dist_name(r) for r in install}
    optional = {_dist_name(r) for reqs in extras.values() for r in reqs} - declared
    assert "decord" in optional and {"onnx", "onnxscript", "onnxruntime"} <= optional
    assert "decord" in {_dist_name(r) for r in extras["test"]}  # CI on x86_64 tests both backends
    imports = _imports(("vidnl", "tools", "data_prep"))
    local = {"vidnl", "data_prep"} | {os.path.splitext(f)[0] for d in ("tools", "data_prep")
                                      for f in os.listdir(os.path.join(ROOT, d))}
    by_top: dict[str, set] = {}
    for name, where in imports.items():
        by_top.setdefault(name.split(".")[0], set()).update(where)
    dists_of = packages_distributions()
    undeclared, eager = {}, {}
    for top, where in by_top.items():
        if top in sys.stdlib_module_names or top in local:
            continue
        dists = {_dist_name(d) for d in dists_of.get(top, [top])}
        if not dists & (declared | optional):
            undeclared[top] = sorted({w for w, _ in where})
        elif not dists & declared:  # an extra only: vidnl must import and run without it
            eager[top] = sorted(w for w, module_level in where if module_level and w.startswith("vidnl"))
    assert undeclared == {}
    assert "decord" in eager and all(v == [] for v in eager.values()), eager


# ------------------------------------------------------------------------------------------
# FLOPs: FlopCounterMode (multiply-adds = its count / 2), Wang et al. 2018 (NL), Table 2e
# ------------------------------------------------------------------------------------------
def _table_model(config: str, *opts: str):
    from vidnl.models import build_model

    cfg = load_config(os.path.join(ROOT, "configs", "Kinetics", config), ["RESNET.DEPTH", "101", *opts])
    with torch.device("meta"):  # shapes only: a full-size R101 costs nothing to count
        return build_model(cfg)


def test_flops_of_seed_004_table_2e_with_flop_counter_mode():
    """C2D R101 at 32×224²: 34.2 G multiply-adds in the paper (35.3 G here, which also counts the
    400-way classifier and the stem exactly); I3D 3×3×3 1.8×, I3D 3×1×1 1.5×, 5-block NL C2D 1.2×;
    parameters 43.2 M, 1.5×, 1.2×, 1.2×."""
    from vidnl.models.complexity import complexity_table

    x = torch.empty(1, 3, 32, 224, 224, device="meta")
    nl = ("NONLOCAL.TYPE", "nl", "NONLOCAL.STYLE", "official", "NONLOCAL.POOL", "[1, 2, 2]",
          "NONLOCAL.LOCATION", "[[], [1, 3], [6, 13, 20], []]")
    nets = {"c2d": _table_model("C2D_R50.yaml"), "i3d3x3x3": _table_model("I3D3x3x3_R50.yaml"),
            "i3d3x1x1": _table_model("I3D_R50_BASE.yaml"), "nl_c2d": _table_model("C2D_R50.yaml", *nl)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no tracer, no deprecation warning
        tables = {k: complexity_table(m, x) for k, m in nets.items()}
    g = {k: t[0]["gflops"] for k, t in tables.items()}
    p = {k: t[0]["params"] / 1e6 for k, t in tables.items()}
    assert abs(g["c2d"] - 34.2) / 34.2 < 0.05, g
    assert abs(p["c2d"] - 43.2) < 0.2, p
    assert [round(g[k] / g["c2d"], 1) for k in ("i3d3x3x3", "i3d3x1x1", "nl_c2d")] == [1.8, 1.5, 1.2], g
    assert [round(p[k] / p["c2d"], 1) for k in ("i3d3x3x3", "i3d3x1x1", "nl_c2d")] == [1.5, 1.2, 1.2], p

    # the per-module breakdown: stages and the 5 NL blocks, which account for the whole difference
    rows = {r["name"]: r for r in tables["nl_c2d"]}
    blocks = [r for r in tables["nl_c2d"] if r["kind"] == "NL"]
    assert [r["name"] for r in blocks] == ["res3.nonlocal_blocks.1", "res3.nonlocal_blocks.3",
                                           "res4.nonlocal_blocks.6", "res4.nonlocal_blocks.13",
                                           "res4.nonlocal_blocks.20"]
    assert all(r["gflops"] > 0 for r in blocks)
    base = {r["name"]: r for r in tables["c2d"]}
    for stage in ("res3", "res4"):
        added = sum(r["gflops"] for r in blocks if r["name"].startswith(stage + "."))
        assert rows[stage]["gflops"] - base[stage]["gflops"] == pytest.approx(added, rel=1e-9)
    assert g["nl_c2d"] - g["c2d"] == pytest.approx(sum(r["gflops"] for r in blocks), rel=1e-9)


def test_macs_by_module_adds_up_and_matches_a_hand_count():
    from vidnl.models.complexity import macs_by_module

    model = torch.nn.Sequential(torch.nn.Conv3d(3, 8, 3, padding=1, bias=False), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(8 * 2 * 4 * 4, 5))
    counts = macs_by_module(model, torch.randn(2, 3, 2, 4, 4))
    conv = 2 * 8 * 2 * 4 * 4 * 3 * 27  # batch × outputs × (C_in × kernel) multiply-adds
    assert counts == {"": conv + 2 * 256 * 5, "0": conv, "3": 2 * 256 * 5}
