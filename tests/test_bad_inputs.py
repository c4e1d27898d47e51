"""Bad inputs end in one clear error (file and line named, exit 2) before work starts, or are
handled as documented; never a traceback, never a silently wrong result."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from conftest import BACKENDS, ROOT, tiny_opts
from vidnl.config import load_config
from vidnl.data.datasets import read_csv
from vidnl.errors import DatasetError


def _copy(tiny_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    return data


def _run_net(opts, cwd):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "run_net.py")] + opts, capture_output=True,
                          text=True, cwd=cwd)


def test_csv_with_a_byte_order_mark_keeps_its_first_video(tiny_dataset, tmp_path):
    data = _copy(tiny_dataset, tmp_path)
    text = (data / "train.csv").read_text()
    (data / "train.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    records = read_csv(str(data / "train.csv"))
    assert len(records) == len(text.splitlines())
    assert records[0].path == os.path.join(str(data), text.split()[0]) and "\ufeff" not in records[0].path


def test_csv_in_another_encoding_is_refused_with_file_and_line(tiny_dataset, tmp_path):
    data = _copy(tiny_dataset, tmp_path)
    lines = (data / "train.csv").read_text().splitlines()
    lines[2] = "vidéos/x.mp4 1"
    (data / "train.csv").write_bytes("\n".join(lines).encode("latin-1"))
    with pytest.raises(DatasetError, match=r"train.csv:3: not UTF-8"):
        read_csv(str(data / "train.csv"))
    from data_prep import check_videos
    assert check_videos.main([str(data / "train.csv")]) == 2


def test_label_out_of_range_names_file_and_line(tiny_dataset, tmp_path):
    data = _copy(tiny_dataset, tmp_path)
    with open(data / "train.csv", "a") as f:
        f.write("videos/whatever.mp4 5\n")
    n = len((data / "train.csv").read_text().splitlines())
    with pytest.raises(DatasetError, match=rf"train.csv:{n}: label 5 is out of range for MODEL.NUM_CLASSES 2"):
        read_csv(str(data / "train.csv"), num_classes=2)


def test_bad_test_csv_stops_the_run_before_training(tiny_dataset, tmp_path):
    data = _copy(tiny_dataset, tmp_path)
    with open(data / "test.csv", "a") as f:
        f.write("videos/whatever.mp4 7\n")
    out = tmp_path / "out"
    proc = _run_net(tiny_opts(str(data), str(out)), tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "test.csv" in proc.stderr and "label 7 is out of range" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(out.glob("checkpoints/*.pyth"))  # nothing trained


def test_a_test_in_which_no_video_decodes_fails(tiny_dataset, tmp_path):
    data = _copy(tiny_dataset, tmp_path)
    for name in ("a.mp4", "b.mp4"):
        (data / "videos" / name).write_bytes(b"not a video")
    (data / "test.csv").write_text("videos/a.mp4 0\nvideos/b.mp4 1\n")
    out = tmp_path / "out"
    opts = tiny_opts(str(data), str(out), **{"SOLVER.MAX_EPOCH": 1, "TRAIN.EVAL_PERIOD": 0})
    proc = _run_net(opts, tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "2 of 2 test videos could not be decoded" in proc.stderr and "Traceback" not in proc.stderr
    assert (out / "predictions_test.json").exists()
    cfg = load_config(None, opts)
    assert cfg.DATA_LOADER.MAX_BAD_FRACTION == 0.1


def test_output_dir_that_is_a_file_or_empty_stops_at_once(tiny_dataset, tmp_path):
    from vidnl.engine.output_dir import OutputDirError, prepare_output_dir

    (tmp_path / "afile").write_text("x")
    proc = _run_net(tiny_opts(tiny_dataset, str(tmp_path / "afile")), tmp_path)
    assert proc.returncode == 2 and "is not a folder" in proc.stderr and "Traceback" not in proc.stderr
    with pytest.raises(OutputDirError, match="OUTPUT_DIR is empty"):
        prepare_output_dir("")


def test_read_only_output_dir_stops_at_once(tmp_path):
    from vidnl.engine.output_dir import OutputDirError, prepare_output_dir

    ro = tmp_path / "ro"
    (ro / "checkpoints").mkdir(parents=True)
    os.chmod(ro / "checkpoints", 0o500)
    try:
        if os.access(ro / "checkpoints", os.W_OK):
            pytest.skip("running as a user who can write anywhere (root): permissions cannot be tested")
        with pytest.raises(OutputDirError, match="not writable"):
            prepare_output_dir(str(ro))
    finally:
        os.chmod(ro / "checkpoints", 0o700)


def test_a_second_run_on_the_same_output_dir_is_refused(tmp_path):
    from vidnl.engine.output_dir import OutputDirError, output_dir_lock

    script = ("import sys, time; sys.path.insert(0, %r)\n"
              "from vidnl.engine.output_dir import output_dir_lock\n"
              "with output_dir_lock(%r):\n    print('locked', flush=True); time.sleep(30)\n") % (ROOT, str(tmp_path))
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputDirError, match=rf"in use by another vidnl run \(PID {holder.pid} on"):
            with output_dir_lock(str(tmp_path)):
                pass
    finally:
        holder.kill()
        holder.wait()
    with output_dir_lock(str(tmp_path)):  # a dead holder leaves no stale lock
        pass


@pytest.mark.parametrize("opts,key", [
    (["SOLVER.BASE_LR", ".nan"], "SOLVER.BASE_LR"), (["SOLVER.BASE_LR", ".inf"], "SOLVER.BASE_LR"),
    (["SOLVER.WEIGHT_DECAY", ".nan"], "SOLVER.WEIGHT_DECAY"), (["SOLVER.MOMENTUM", "-1"], "SOLVER.MOMENTUM"),
    (["RNG_SEED", "-1"], "RNG_SEED"), (["DATA.PATH_LABEL_SEPARATOR", "''"], "DATA.PATH_LABEL_SEPARATOR"),
    (["DATA.MEAN", "[.nan, 0.5, 0.5]"], "DATA.MEAN")])
def test_non_finite_and_out_of_range_numbers_name_the_key(opts, key):
    from vidnl.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"^{key}: "):
        load_config(None, opts)


def test_bad_config_files_are_clear_errors(tmp_path):
    from vidnl.errors import ConfigError

    (tmp_path / "base5.yaml").write_text("_BASE_: 5\n")
    with pytest.raises(ConfigError, match="_BASE_ in .*base5.yaml: expected the path"):
        load_config(str(tmp_path / "base5.yaml"))
    (tmp_path / "latin.yaml").write_bytes("# caf\xe9\nRNG_SEED: 1\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin.yaml:\d+: not UTF-8 text"):
        load_config(str(tmp_path / "latin.yaml"))


def test_checkpoint_whose_model_state_is_not_a_dict_is_refused(tmp_path):
    import torch

    from vidnl.models.weights import CheckpointError, load_weights
    from vidnl.models.resnet import video_resnet

    torch.save({"model_state": [torch.zeros(1)]}, tmp_path / "odd.pyth")
    with pytest.raises(CheckpointError, match="odd.pyth: no model state dict found"):
        load_weights(video_resnet("c2d_8x8", depth=18, base_width=4), str(tmp_path / "odd.pyth"))


def test_global_batch_not_divisible_by_the_processes_is_a_config_error():
    from vidnl.data.samplers import GlobalBatchSampler
    from vidnl.errors import ConfigError

    with pytest.raises(ConfigError, match="TRAIN.BATCH_SIZE=5"):
        GlobalBatchSampler(10, 5, 0, rank=0, world_size=2)


def test_auto_resume_refuses_another_experiment_and_allows_harmless_changes(tiny_dataset, tmp_path):
    import json

    out = tmp_path / "out"
    base = {"SOLVER.MAX_EPOCH": 1, "TRAIN.EVAL_PERIOD": 0, "TEST.ENABLE": False}
    proc = _run_net(tiny_opts(tiny_dataset, str(out), **base), tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = json.load(open(out / "run_manifest.json"))
    assert "res3.nonlocal_blocks.1.theta.weight" in manifest["model_signature"] and "NONLOCAL" in manifest["config"]
    proc = _run_net(tiny_opts(tiny_dataset, str(out), **base, **{"NONLOCAL.LOCATION": "[[], [0], [], []]",
                                                                  "SOLVER.BASE_LR": 0.1}), tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "NONLOCAL.LOCATION: [[], [1], [], []] in the checkpoint, [[], [0], [], []] now" in proc.stderr
    assert "SOLVER.BASE_LR: 0.05 in the checkpoint, 0.1 now" in proc.stderr and "TRAIN.AUTO_RESUME False" in proc.stderr
    proc = _run_net(tiny_opts(tiny_dataset, str(out), **base, **{"TEST.NUM_ENSEMBLE_VIEWS": 3, "LOG_PERIOD": 5}),
                    tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _truncated_avi(path) -> str:
    """An MPEG-4 AVI whose header promises 40 frames of which only the first few decode."""
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    with av.open(str(path) + ".full.avi", "w") as c:
        s = c.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for _ in range(40):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), format="rgb24")
            for packet in s.encode(frame):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    data = open(str(path) + ".full.avi", "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 3])
    return str(path)


@pytest.mark.parametrize("backend", BACKENDS)
def test_truncated_video_is_detected_and_no_frame_is_invented(tmp_path, backend):
    import numpy as np

    from vidnl.data.decoding import read_frames

    path = _truncated_avi(tmp_path / "cut.avi")
    d = read_frames(path, lambda n: np.arange(n), backend)
    assert d.header_frames == 40 and 0 < d.num_frames < 40 and len(d.frames) == d.num_frames
    assert d.truncation_note.startswith(f"truncated: the container promises 40 frames, {d.num_frames} decode")
    assert d.indices.tolist() == list(range(d.num_frames))  # chosen among the frames that decode: none invented


def test_truncated_videos_are_listed_in_decode_failures_and_predictions(tiny_dataset, tmp_path):
    import json

    data = _copy(tiny_dataset, tmp_path)
    _truncated_avi(data / "videos" / "cut.avi")
    with open(data / "train.csv", "a") as f:
        f.write("videos/cut.avi 1\n")
    with open(data / "test.csv", "a") as f:
        f.write("videos/cut.avi 1\n")
    out = tmp_path / "out"
    proc = _run_net(tiny_opts(str(data), str(out), **{"SOLVER.MAX_EPOCH": 1, "TRAIN.EVAL_PERIOD": 0,
                                                      "DATA.DECODING_BACKEND": "pyav"}), tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.load(open(out / "decode_failures.json"))
    entry = report[str(data / "videos" / "cut.avi")]
    assert entry["kind"] == "truncated" and "promises 40 frames" in entry["reason"]
    preds = json.load(open(out / "predictions_test.json"))
    assert [os.path.basename(n["path"]) for n in preds["truncated_videos"]] == ["cut.avi"]


def test_decode_failures_file_exists_when_nothing_failed(tiny_dataset, tmp_path):
    import json

    out = tmp_path / "out"
    proc = _run_net(tiny_opts(tiny_dataset, str(out), **{"SOLVER.MAX_EPOCH": 1, "TRAIN.EVAL_PERIOD": 0,
                                                         "TEST.ENABLE": False}), tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.load(open(out / "decode_failures.json")) == {}
