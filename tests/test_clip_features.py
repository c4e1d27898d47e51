"""Clip features of whole datasets (vidnl.clip_features, tools/extract_clip_features.py): the
features of a window are the backbone features of the same clip through the test path; a
stopped run resumes to the same outputs; torchrun shards give what one process gives."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, SHARED_VIDEOS, tiny_opts, write_video
from vidnl import clip_features as cf
from vidnl.config import ConfigError, load_config
from vidnl.data.datasets import video_csv
from vidnl.data.datasets.video_csv import VideoCSVDataset, VideoRecord
from vidnl.models import build_model
from vidnl.models.build import IMAGE_ARCHS, MODEL_REGISTRY
from vidnl.predict import test_clip_config

TOOL = os.path.join(ROOT, "tools", "extract_clip_features.py")
LENGTHS = {"a": 30, "b": 37, "c": 44, "short": 5}  # frames; "short" is shorter than one span (7)


def _tool_main(args: list[str]) -> int:
    import importlib.util

    spec = importlib.util.spec_from_file_location("tool_extract_clip_features", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(args)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Four tiny videos (48×64, 25 fps; two of noise, two of the demo's moving textures), a broken
    one, a tiny I3D-R18 checkpoint and its config."""
    from data_prep.make_synthetic_motion import render_video

    tmp = tmp_path_factory.mktemp("clip_features")
    videos = tmp / "videos"
    videos.mkdir()
    rng = np.random.default_rng(0)
    for k, (name, n) in enumerate(LENGTHS.items()):
        frames = (rng.integers(0, 256, (n, 48, 64, 3), dtype=np.uint8) if k % 2 == 0
                  else render_video(rng, k % 4, n, 48, 64))
        write_video(str(videos / f"{name}.mp4"), frames)
    broken = tmp / "broken"
    broken.mkdir()
    (broken / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(rng.integers(0, 256, 500, np.uint8)))
    cfg = load_config(None, tiny_opts(str(videos), str(tmp / "run"), **{"TEST.BATCH_SIZE": 3, "TRAIN.ENABLE": False}))
    torch.manual_seed(0)
    model = build_model(cfg)
    weights = str(tmp / "tiny.pyth")
    torch.save({"model_state": model.state_dict(), "epoch": 1}, weights)
    cfg_file = tmp / "tiny.yaml"
    cfg_file.write_text(cfg.dump())
    return {"tmp": tmp, "videos": str(videos), "broken": str(broken / "broken.mp4"), "cfg_file": str(cfg_file),
            "cfg": cfg, "weights": weights, "model": model.eval()}


def _video_paths(setup) -> list[str]:
    return [os.path.join(setup["videos"], f"{n}.mp4") for n in sorted(LENGTHS)]


def _pooled_last_stage(model, x: torch.Tensor) -> torch.Tensor:
    """Independent reference of a ResNet's backbone features: the res5 output averaged over T, H, W."""
    with torch.no_grad():
        return model.forward_features(x).mean((2, 3, 4))


def _test_path_clip(cfg, path: str, indices: np.ndarray, monkeypatch) -> torch.Tensor:
    """The single-view test item (decode at the test scale, one centre crop) of the frames
    ``indices``, normalised as the test normalises it: 1×C×T×H×W."""
    clip = dataclasses.replace(test_clip_config(cfg), num_ensemble_views=1, num_spatial_crops=1)
    ds = VideoCSVDataset([VideoRecord(path, 0)], "test", clip)
    with monkeypatch.context() as m:
        m.setattr(video_csv.sampling, "test_clip_indices", lambda *a, **k: np.asarray(indices)[None])
        item = ds[0]
    assert item["inputs"] is not None, item["failures"]
    return ds.normalizer(item["inputs"])


# ------------------------------------------------------------------------------------------------
# Which features: the classifier's input, for every registered classification architecture
# ------------------------------------------------------------------------------------------------
TINY = {  # arch: overrides of a tiny model of it (input 4×32×32)
    "c2d": ["RESNET.DEPTH", "18", "RESNET.BASE_WIDTH", "4"],
    "i3d": ["RESNET.DEPTH", "18", "RESNET.BASE_WIDTH", "4", "NONLOCAL.LOCATION", "[[], [1], [], []]",
            "NONLOCAL.TYPE", "snl"],
    "resnet3d": ["RESNET.DEPTH", "10", "RESNET.BASE_WIDTH", "4"],
    "p3d": ["RESNET.DEPTH", "63", "RESNET.BASE_WIDTH", "4"],
    "mars": ["RESNET.DEPTH", "10", "RESNET.BASE_WIDTH", "4", "RESNET.CARDINALITY", "1"],
    "vtn": ["RESNET.DEPTH", "18", "VTN.DIM", "16", "VTN.NUM_HEADS", "2", "VTN.NUM_LAYERS", "1", "DATA.NUM_FRAMES", "4"],
    "vtn_vit": ["RESNET.DEPTH", "18", "RESNET.BASE_WIDTH", "4", "VTN.DIM", "16", "VTN.NUM_HEADS", "2",
                "VTN.NUM_LAYERS", "1"],
}


def test_tiny_table_covers_every_registered_architecture():
    video = {a for a in MODEL_REGISTRY.names() if a not in IMAGE_ARCHS and a != "resnet50tp"}
    assert video == set(TINY)


@pytest.mark.parametrize("arch", sorted(TINY))
def test_features_are_the_classifier_input(arch):
    cfg = load_config(None, ["MODEL.ARCH", arch, "MODEL.NUM_CLASSES", "3", "DATA.NUM_FRAMES", "4",
                             "DATA.TEST_CROP_SIZE", "32", "MODEL.DROPOUT_RATE", "0.5"] + TINY[arch])
    cf.check_feature_model_config(cfg)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    path = cf.classifier_path(model)
    fc = model.get_submodule(path)
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        logits = model(x)
        feats = cf.feature_model(model)(x)
    assert feats.shape == (2, fc.in_features)
    # the logits are the classifier applied to the features (VTN averages per-frame logits:
    # the average of a linear map is the map of the average)
    torch.testing.assert_close(feats @ fc.weight.T + fc.bias, logits, rtol=1e-4, atol=1e-5)
    assert model.get_submodule(path) is fc  # the model itself keeps its classifier
    torch.testing.assert_close(model(x), logits)
    if arch in ("c2d", "i3d", "resnet3d", "p3d"):
        torch.testing.assert_close(feats, _pooled_last_stage(model, x), rtol=1e-5, atol=1e-6)
    if arch == "mars":
        torch.testing.assert_close(feats, _pooled_last_stage(model.rgb, x), rtol=1e-5, atol=1e-6)
    if arch == "vtn":
        with torch.no_grad():
            ref = model.self_attention_decoder(model.frame_features(x)).mean(1)
        torch.testing.assert_close(feats, ref, rtol=1e-5, atol=1e-6)


def test_fully_convolutional_test_head_gives_the_global_pool():
    from vidnl.models.heads import ClassificationHead

    if not hasattr(ClassificationHead, "set_test_pool_kernel"):
        pytest.skip("no fully convolutional test head in this version")
    torch.manual_seed(0)
    model = build_model(load_config(None, ["MODEL.NUM_CLASSES", "3", "DATA.NUM_FRAMES", "4"] + TINY["i3d"])).eval()
    model.head.set_test_pool_kernel((1, 1, 1))
    x = torch.randn(2, 3, 4, 64, 64)  # res5 map 2x2x2: 8 positions, whose softmax the head averages
    feats = cf.feature_model(model)(x)
    torch.testing.assert_close(feats, _pooled_last_stage(model, x), rtol=1e-5, atol=1e-6)
    assert model.head.test_pool_kernel == (1, 1, 1)  # the model keeps its head


@pytest.mark.parametrize("opts, match", [
    (["MODEL.ARCH", "preresnet", "RESNET.DEPTH", "20", "NONLOCAL.LOCATION", "[[], [], []]"], "an image model"),
    (["MODEL.ARCH", "resnet2d"], "an image model"),
    (["MODEL.TASK", "reid", "MODEL.ARCH", "resnet50tp"], "re-ID model"),
])
def test_models_without_clip_features_are_config_errors(opts, match):
    with pytest.raises(ConfigError, match=match):
        cf.check_feature_model_config(load_config(None, opts))


def test_a_model_without_classifier_is_a_clear_error():
    with pytest.raises(cf.ClipFeatureError, match="no final classifier found"):
        cf.classifier_path(torch.nn.Sequential(torch.nn.Conv3d(3, 4, 1)))


# ------------------------------------------------------------------------------------------------
# The features equal the test path's
# ------------------------------------------------------------------------------------------------
def test_window_features_equal_the_test_path(setup, tmp_path, monkeypatch):
    cfg, model = setup["cfg"], setup["model"]
    settings = cf.window_settings(cfg, "4f")
    out = cf.extract_clip_features(_video_paths(setup), model, str(tmp_path), settings, batch_size=3)
    assert sorted(out["done"]) == sorted(LENGTHS) and not out["failed"]
    span = settings.span_frames
    for name, n in LENGTHS.items():
        feats = np.load(tmp_path / f"{name}.npy")
        starts = list(range(0, max(0, n - span) + 1, 4))  # written from the layout, not from the code
        assert feats.shape == (len(starts), 32) and feats.dtype == np.float32
        part = json.loads((tmp_path / cf.PARTS_DIR / f"{name}.json").read_text())
        assert part["start_frames"] == starts and part["num_video_frames"] == n and part["fps"] == 25.0
        assert part["end_frames"] == [min(s + 6, n - 1) for s in starts]
        assert part["start_s"] == pytest.approx([s / 25 for s in starts])
        assert part["end_s"] == pytest.approx([(min(s + 6, n - 1) + 1) / 25 for s in starts])
        path = os.path.join(setup["videos"], f"{name}.mp4")
        for k, s in enumerate(starts):
            idx = np.minimum(s + 2 * np.arange(4), n - 1)  # "pad": the short video repeats its last frame
            ref = _pooled_last_stage(model, _test_path_clip(cfg, path, idx, monkeypatch))[0].numpy()
            np.testing.assert_allclose(feats[k], ref, rtol=1e-4, atol=1e-5, err_msg=f"{name} window {k}")
    # the plain single-view test item (its centred clip, no patching) is one of the windows
    n = LENGTHS["c"]
    clip = dataclasses.replace(test_clip_config(cfg), num_ensemble_views=1, num_spatial_crops=1)
    ds = VideoCSVDataset([VideoRecord(os.path.join(setup["videos"], "c.mp4"), 0)], "test", clip)
    centre = (n - span) // 2  # 18: a multiple of the stride 2 below
    ref = _pooled_last_stage(model, ds.normalizer(ds[0]["inputs"]))[0].numpy()
    out2 = tmp_path / "stride2"
    cf.extract_clip_features([os.path.join(setup["videos"], "c.mp4")], model, str(out2),
                             cf.window_settings(cfg, "2f"), batch_size=4)
    np.testing.assert_allclose(np.load(out2 / "c.npy")[centre // 2], ref, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not os.path.isdir(SHARED_VIDEOS), reason="../shared/data/videos is absent")
def test_real_video_features_equal_the_test_path(setup, tmp_path, monkeypatch):
    cfg, model = setup["cfg"], setup["model"]
    path = os.path.join(SHARED_VIDEOS, "real_320x240_25fps.avi")  # 164 frames at 25 fps
    out = cf.extract_clip_features([path], model, str(tmp_path), cf.window_settings(cfg, "1s"), batch_size=4)
    assert out["done"] == ["real_320x240_25fps"]
    feats = np.load(tmp_path / "real_320x240_25fps.npy")
    part = json.loads((tmp_path / cf.PARTS_DIR / "real_320x240_25fps.json").read_text())
    assert part["stride_frames"] == 25 and part["start_frames"] == list(range(0, 164 - 7 + 1, 25))
    assert feats.shape == (7, 32)
    for k in (0, 3, 6):
        idx = part["start_frames"][k] + 2 * np.arange(4)
        ref = _pooled_last_stage(model, _test_path_clip(cfg, path, idx, monkeypatch))[0].numpy()
        np.testing.assert_allclose(feats[k], ref, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Resuming, failures, the index
# ------------------------------------------------------------------------------------------------
def _outputs(folder) -> tuple[dict, dict, str]:
    arrays = {f[:-4]: np.load(os.path.join(folder, f)) for f in os.listdir(folder) if f.endswith(".npy")}
    with open(os.path.join(folder, "index.json")) as f:
        index = json.load(f)
    with open(os.path.join(folder, "index.csv")) as f:
        return arrays, index, f.read()


def _same_outputs(a, b) -> None:
    (fa, ia, ca), (fb, ib, cb) = _outputs(a), _outputs(b)
    assert sorted(fa) == sorted(fb)
    for k in fa:
        np.testing.assert_allclose(fa[k], fb[k], rtol=1e-5, atol=1e-6, err_msg=k)
    assert ia == ib and ca == cb


def test_killed_run_resumes_to_the_uninterrupted_outputs(setup, tmp_path, monkeypatch):
    cfg = setup["cfg"]
    inputs = [setup["videos"], setup["broken"]]
    whole = tmp_path / "whole"
    workers = cfg.clone()
    workers.defrost()
    workers.DATA_LOADER.NUM_WORKERS = 2  # two decoding processes give the same outputs as none
    done = cf.extract_clip_features_from_config(workers, setup["weights"], inputs, str(whole), stride="4f")
    assert sorted(done["done"]) == sorted(LENGTHS) and [f["id"] for f in done["failed"]] == ["broken"]
    _, index, csv_text = _outputs(whole)
    assert index["num_done"] == 4 and index["num_failed"] == 1 and index["feature_dim"] == 32
    assert "broken,%s,failed" % setup["broken"] in csv_text

    # a run killed while writing its third video: the .npy writes go through write_bytes_atomic
    from vidnl.engine import output_dir

    real, calls = output_dir.write_bytes_atomic, []

    def dying(path, data, durable=False):
        if path.endswith(".npy"):
            calls.append(path)
            if len(calls) == 3:
                raise KeyboardInterrupt("killed")
        return real(path, data, durable)

    killed = tmp_path / "killed"
    with monkeypatch.context() as m:
        m.setattr(output_dir, "write_bytes_atomic", dying)
        with pytest.raises(KeyboardInterrupt):
            cf.extract_clip_features_from_config(cfg, setup["weights"], inputs, str(killed), stride="4f")
    left = sorted(os.listdir(killed))
    assert len([f for f in left if f.endswith(".npy")]) == 2 and "index.json" not in left
    assert not [f for f in left if f.startswith(".tmp_")]
    resumed = cf.extract_clip_features_from_config(cfg, setup["weights"], inputs, str(killed), stride="4f")
    assert len(resumed["skipped"]) == 2 and len(resumed["done"]) == 2
    _same_outputs(whole, killed)

    # --max-videos stops early; the index lists the rest as pending; running again completes it
    stopped = tmp_path / "stopped"
    cf.extract_clip_features_from_config(cfg, setup["weights"], inputs, str(stopped), stride="4f", max_videos=2)
    _, index, _ = _outputs(stopped)
    assert (index["num_done"], index["num_pending"]) == (2, 3)
    cf.extract_clip_features_from_config(cfg, setup["weights"], inputs, str(stopped), stride="4f")
    _same_outputs(whole, stopped)


def test_test_compile_compiles_the_feature_model(setup, tmp_path, monkeypatch):
    from vidnl.engine import inference

    seen = []

    def record(model, batch_size, backend):
        seen.append((type(model).__name__, cf.classifier_path(setup["model"]), batch_size, backend))
        assert isinstance(model.get_submodule("head.fc"), torch.nn.Identity)
        return model

    monkeypatch.setattr(inference, "compile_for_inference", record)
    cfg = setup["cfg"].clone()
    cfg.defrost()
    cfg.TEST.COMPILE, cfg.TEST.COMPILE_BACKEND = True, "aot_eager"
    cf.extract_clip_features_from_config(cfg, setup["weights"], [_video_paths(setup)[0]], str(tmp_path))
    assert seen == [("VideoResNet", "head.fc", 3, "aot_eager")]  # TEST.BATCH_SIZE 3


def test_a_folder_of_frames_is_a_video_without_a_frame_rate(setup, tmp_path):
    from PIL import Image

    frames = tmp_path / "frames_of_x"
    frames.mkdir()
    rng = np.random.default_rng(1)
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(frames / f"img_{i + 1:05d}.jpg")
    out = cf.extract_clip_features_from_config(setup["cfg"], setup["weights"], [str(frames)], str(tmp_path / "f"),
                                               stride="2f")
    row = out["index"]["videos"][0]
    assert row["id"] == "frames_of_x" and row["start_frames"] == [0, 2] and row["num_video_frames"] == 10
    assert row["fps"] is None and row["start_s"] is None
    out = cf.extract_clip_features_from_config(setup["cfg"], setup["weights"], [str(frames)], str(tmp_path / "s"),
                                               stride="1s")
    assert "frame rate is unknown" in out["failed"][0]["reason"]


def test_settings_of_an_earlier_run_must_match(setup, tmp_path):
    out = str(tmp_path / "f")
    cf.extract_clip_features_from_config(setup["cfg"], setup["weights"], [_video_paths(setup)[0]], out, stride="4f")
    with pytest.raises(cf.ClipFeatureError, match=r"other settings \(stride: '4f' then, '8f' now\)"):
        cf.extract_clip_features_from_config(setup["cfg"], setup["weights"], [_video_paths(setup)[0]], out,
                                             stride="8f")


def test_symlinked_output_is_refused(setup, tmp_path):
    from vidnl.engine.output_dir import OutputDirError

    out = tmp_path / "f"
    out.mkdir()
    target = tmp_path / "elsewhere.npy"
    target.write_bytes(b"keep")
    os.symlink(target, out / "a.npy")
    with pytest.raises(OutputDirError, match="a.npy is a symbolic link"):
        cf.extract_clip_features_from_config(setup["cfg"], setup["weights"], [_video_paths(setup)[0]], str(out))
    assert target.read_bytes() == b"keep"


def test_video_ids_and_strides(tmp_path):
    assert cf.video_ids(["x/a.mp4", "x/b.avi", "y/frames_of_c"]) == ["a", "b", "frames_of_c"]
    assert cf.video_ids(["x/1/v.mp4", "x/2/v.mp4", "x/w.mp4"]) == ["1__v", "2__v", "w"]
    assert cf.parse_stride("16f") == (16.0, "f")
    assert cf.parse_stride(8) == (8.0, "f") and cf.parse_stride("0.5s") == (0.5, "s")
    for bad in ("0f", "1.5f", "-1s", "fast", "", "16"):
        with pytest.raises(cf.ClipFeatureError, match="window stride"):
            cf.parse_stride(bad)


# ------------------------------------------------------------------------------------------------
# The tool: torchrun shards, errors
# ------------------------------------------------------------------------------------------------
def test_torchrun_two_processes_give_the_single_process_outputs(setup, tmp_path, capsys):
    args = [setup["videos"], setup["broken"], "--cfg", setup["cfg_file"], "--weights", setup["weights"],
            "--window-stride", "4f"]
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    assert _tool_main(args + ["--out", one]) == 0
    single = capsys.readouterr()
    assert "features of 4 of 5 videos" in single.out and "cannot extract" in single.err
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", TOOL] + args
    proc = subprocess.run(cmd + ["--out", two], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "rank 0/2:" in proc.stdout and "rank 1/2:" in proc.stdout
    assert proc.stdout.count("features of 4 of 5 videos") == 1  # rank 0 writes the index
    _same_outputs(one, two)


@pytest.mark.parametrize("case", ["no_weights", "out_is_file", "bad_stride", "image_model", "no_input",
                                  "max_videos", "pyslowfast_sampling", "pyslowfast_rounding"])
def test_tool_errors_are_one_line(setup, tmp_path, capsys, case):
    cfg_file = setup["cfg_file"]
    (tmp_path / "file").write_text("x")
    args = {"weights": setup["weights"], "out": str(tmp_path / "out"), "inputs": [setup["videos"]], "extra": []}
    expected = {"no_weights": "weights file not found", "out_is_file": "is a file; expected a folder",
                "bad_stride": "window stride '3x'", "image_model": "an image model",
                "no_input": "input not found", "max_videos": "--max-videos must be at least 1",
                "pyslowfast_sampling": "DATA.TEMPORAL_SAMPLING is 'pyslowfast'",
                "pyslowfast_rounding": "DATA.SPATIAL_ROUNDING is 'pyslowfast'"}[case]
    if case == "no_weights":
        args["weights"] = str(tmp_path / "missing.pyth")
    elif case == "out_is_file":
        args["out"] = str(tmp_path / "file")
    elif case == "bad_stride":
        args["extra"] = ["--window-stride", "3x"]
    elif case == "image_model":
        args["extra"] = ["MODEL.ARCH", "resnet2d"]
    elif case == "pyslowfast_sampling":
        args["extra"] = ["DATA.TEMPORAL_SAMPLING", "pyslowfast", "DATA.TARGET_FPS", "30"]
    elif case == "pyslowfast_rounding":  # its test views resize normalised float clips
        args["extra"] = ["DATA.SPATIAL_ROUNDING", "pyslowfast"]
    elif case == "no_input":
        args["inputs"] = [str(tmp_path / "nothing.mp4")]
    else:
        args["extra"] = ["--max-videos", "0"]
    code = _tool_main(args["inputs"] + ["--cfg", cfg_file, "--weights", args["weights"], "--out", args["out"]]
                      + args["extra"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_tool_exits_2_when_no_video_can_be_read(setup, tmp_path, capsys):
    out = tmp_path / "out"
    code = _tool_main([setup["broken"], "--cfg", setup["cfg_file"], "--weights", setup["weights"], "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("vidnl: error: none of the 1 videos could be read (listed in")
    index = json.loads((out / "index.json").read_text())
    assert index["failed"][0]["id"] == "broken" and index["failed"][0]["reason"]


def test_tool_resumes_and_prints_a_summary(setup, tmp_path, capsys):
    cfg_file = setup["cfg_file"]
    out = str(tmp_path / "out")
    args = [setup["videos"], "--cfg", cfg_file, "--weights", setup["weights"], "--out", out, "--window-stride",
            "0.2s"]
    assert _tool_main(args + ["--max-videos", "3"]) == 0
    assert "extracted 3 videos" in capsys.readouterr().out
    assert _tool_main(args) == 0
    text = capsys.readouterr().out
    assert "extracted 1 video (" in text and "3 done earlier" in text and "features of 4 of 4 videos" in text
    index = json.load(open(os.path.join(out, "index.json")))
    assert {v["stride_frames"] for v in index["videos"]} == {5}  # 0.2 s at 25 fps
    assert index["settings"]["stride"] == "0.2s" and index["settings"]["arch"] == "i3d"


def test_benchmark_smoke(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_clip_features", os.path.join(ROOT, "benchmarks",
                                                                                       "clip_features.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "b.json"
    assert bench.main(["--videos", "2", "--seconds", "1", "--models", "tiny", "--workers", "1", "--net-windows", "2",
                       "--dir", str(tmp_path / "v"), "--json", str(out)]) == 0
    row = json.loads(out.read_text())["rows"][0]
    assert row["videos"] == 2 and row["windows"] == 2 and row["feature_dim"] == 64  # 25 frames < one span: 1 window
    assert row["bound"] in ("network", "decoding") and row["videos_per_s"]["both"] > 0
