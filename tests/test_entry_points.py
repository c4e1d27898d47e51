"""Every user-facing command (tools/, data_prep/) ends a user's mistake with one message and exit
status 2, never a traceback; a bug ends with the traceback and a one-line hint (exit 1)."""

import os
import subprocess
import sys

import pytest

from vidnl.cli import EXIT_INTERNAL_ERROR, EXIT_USER_ERROR, run_cli
from vidnl.errors import ConfigError

from conftest import ROOT

# (script, arguments; "{tmp}" is a fresh temporary folder, "{file}" an existing plain file in it,
# "{missing}" a path that does not exist, and what the message must name)
CASES = [
    ("tools/run_net.py", ["--cfg", "{missing}.yaml"], "missing"),
    ("tools/run_net.py", ["--cfg", "configs/Synthetic/I3D_R18_SNL.yaml", "OUTPUT_DIR", "{file}/out"], "file"),
    ("tools/convert_checkpoint.py", ["{missing}.pyth", "{tmp}/out.pyth", "--cfg",
                                     "configs/Synthetic/I3D_R18_SNL.yaml"], "missing"),
    ("tools/model_info.py", ["--cfg", "{missing}.yaml"], "missing"),
    ("tools/visualize_attention.py", ["--cfg", "{missing}.yaml", "--video", "{file}"], "missing"),
    ("tools/plot_training.py", ["{tmp}"], "log.txt"),
    ("data_prep/check_videos.py", ["{missing}.csv"], "missing"),
    ("data_prep/extract_frames.py", ["--videos", "{missing}", "--out", "{tmp}/frames"], "missing"),
    ("data_prep/extract_flow.py", ["--csv", "{missing}.csv", "--out", "{tmp}/flow"], "missing"),
    ("data_prep/make_synthetic_motion.py", ["--out", "{file}/data"], "file"),
    ("data_prep/prepare_imagenet_val.py", ["--val", "{missing}", "--out", "{tmp}/val",
                                           "--solution", "{missing}.csv"], "missing"),
    ("data_prep/prepare_kinetics.py", ["--videos", "{missing}", "--out", "{tmp}/k"], "missing"),
    ("data_prep/prepare_ucf101.py", ["--root", "{missing}", "--out", "{tmp}/ucf"], "missing"),
    ("tools/predict.py", ["{file}", "--cfg", "configs/Synthetic/I3D_R18_SNL.yaml", "--weights", "{missing}.pyth"],
     "missing"),
    ("tools/extract_features.py", ["--cfg", "configs/MARS/R50tp.yaml", "--weights", "{missing}.pyth", "{tmp}",
                                   "--out", "{tmp}/f.npz"], "missing"),
    ("tools/report.py", ["{missing}"], "missing"),
    ("tools/export.py", ["--cfg", "configs/Synthetic/I3D_R18_SNL.yaml", "--weights", "{missing}.pyth",
                         "--format", "onnx", "{tmp}/m.onnx"], "missing"),
]


@pytest.mark.parametrize("script,args,named", CASES, ids=[f"{c[0]}:{i}" for i, c in enumerate(CASES)])
def test_user_error_is_one_message_and_exit_2(tmp_path, script, args, named):
    plain = tmp_path / "file"
    plain.write_text("not a folder\n")
    subst = {"{tmp}": str(tmp_path), "{file}": str(plain), "{missing}": str(tmp_path / "missing")}
    argv = []
    for a in args:
        for k, v in subst.items():
            a = a.replace(k, v)
        argv.append(a)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, script)] + argv, cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == EXIT_USER_ERROR, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "error" in proc.stderr.lower() and named in proc.stderr, proc.stderr


def test_run_cli_outcomes(capsys):
    def ok(argv):
        return 0

    def user(argv):
        raise ConfigError("SOLVER.BASE_LR must be > 0, got -1")

    def disk(argv):
        open("/nonexistent-dir/x.txt")

    def bug(argv):
        raise KeyError("momentum")

    assert run_cli(ok, [], tool="t") == 0
    assert run_cli(user, [], tool="t") == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err == "t: error: SOLVER.BASE_LR must be > 0, got -1\n"
    assert run_cli(disk, [], tool="t") == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "No such file or directory" in err and "/nonexistent-dir/x.txt" in err and "Traceback" not in err
    assert run_cli(bug, [], tool="t") == EXIT_INTERNAL_ERROR
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError: 'momentum'" in err and "bug in vidnl" in err.splitlines()[-1]


def test_cli_entry_makes_main_end_like_the_shell(capsys):
    """A decorated main(argv) returns the exit status itself: 2 and one line for a user error,
    130 after Ctrl-C with the tool's note, 1 and the hint for a bug."""
    from vidnl.cli import cli_entry
    from vidnl.errors import ConfigError

    @cli_entry(tool="t", interrupted="interrupted; rerun to resume")
    def main(argv=None):
        what = argv[0]
        if what == "user":
            raise ConfigError("SOLVER.BASE_LR must be > 0, got -1")
        if what == "ctrl-c":
            raise KeyboardInterrupt
        if what == "bug":
            raise ZeroDivisionError("oops")
        return 0

    assert main(["ok"]) == 0
    assert main(["user"]) == 2 and capsys.readouterr().err == "t: error: SOLVER.BASE_LR must be > 0, got -1\n"
    assert main(["ctrl-c"]) == 130 and capsys.readouterr().err == "t: interrupted; rerun to resume\n"
    assert main(["bug"]) == 1
    err = capsys.readouterr().err
    assert "ZeroDivisionError: oops" in err and "t: internal error: this is a bug in vidnl" in err


def test_no_tool_writes_its_own_error_handling():
    """Every tool ends through vidnl.cli (cli_entry or run_cli), none catches VidnlUserError itself."""
    for name in sorted(os.listdir(os.path.join(ROOT, "tools"))):
        if name.endswith(".py"):
            text = open(os.path.join(ROOT, "tools", name), encoding="utf-8").read()
            assert "except VidnlUserError" not in text, name
            assert "cli_entry" in text or "run_cli" in text, name
