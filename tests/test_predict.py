"""Prediction on your own videos (vidnl.predict, tools/predict.py) and re-ID features of your own
tracklets (vidnl.reid_features, tools/extract_features.py): the same numbers as the tests."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, SHARED_VIDEOS, tiny_opts, write_video
from vidnl.config import load_config
from vidnl.data.datasets.reid import Tracklet
from vidnl.data.datasets.video_csv import VideoCSVDataset, VideoRecord
from vidnl.data.decoding import read_frames
from vidnl.data.model_input import InputNormalizer
from vidnl.engine import reid as reid_engine
from vidnl.engine import test as run_test
from vidnl.models import build_model
from vidnl.predict import (PredictInputError, build_predictor, expand_inputs, predict, predict_from_config,
                           read_class_names, test_clip_config)
from vidnl.reid_features import extract_features_from_config

CLASSES = ["right", "left"]  # data_prep/make_synthetic_motion.py's classes.txt of a 2-class dataset
REID_CFG = os.path.join(ROOT, "configs", "MARS", "R50tp_SNL.yaml")


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(tool: str, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", tool)] + args, capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


@pytest.fixture(scope="module")
def classifier(tiny_dataset, tmp_path_factory):
    """A tiny I3D-R18 + SNL (random, with a head of std 1 so the views' scores differ clearly), its
    checkpoint, and the predictions_test.json of a test run of that checkpoint."""
    tmp = tmp_path_factory.mktemp("predict")
    weights = str(tmp / "tiny.pyth")
    opts = tiny_opts(tiny_dataset, str(tmp / "run"), **{"TRAIN.ENABLE": False, "TEST.CHECKPOINT_FILE_PATH": weights,
                                                         "TEST.BATCH_SIZE": 4})
    cfg = load_config(None, opts)
    torch.manual_seed(0)
    model = build_model(cfg)
    torch.nn.init.normal_(model.head.fc.weight, std=1.0)
    torch.save({"model_state": model.state_dict(), "epoch": 1}, weights)
    res = run_test(cfg)
    preds = {p["path"]: p["scores"] for p in res["predictions"]}
    assert len(preds) == 4
    return {"cfg": cfg, "opts": opts, "weights": weights, "preds": preds, "tmp": tmp}


def test_predict_gives_the_scores_of_the_test(classifier):
    cfg, preds = classifier["cfg"], classifier["preds"]
    videos = sorted(preds)
    results = predict_from_config(cfg, classifier["weights"], videos)  # topk 5 clipped to 2 classes
    assert [r["path"] for r in results] == videos
    for r in results:
        assert "error" not in r and r["views"] == 6 and r["ensemble"] == "sum_softmax"
        np.testing.assert_allclose(r["scores"], preds[r["path"]], rtol=0, atol=1e-5)
        assert [t["name"] for t in r["topk"]] == [CLASSES[i] for i in np.argsort(r["scores"])[::-1]]
        assert [t["score"] for t in r["topk"]] == sorted(r["scores"], reverse=True)
        assert sum(t["prob"] for t in r["topk"]) == pytest.approx(1.0, abs=1e-5)
    # the views differ: a single centre view would give other scores
    model = build_predictor(cfg, classifier["weights"])
    one_view = dataclasses.replace(test_clip_config(cfg), num_ensemble_views=1, num_spatial_crops=1)
    other = predict(videos, model, clip=one_view, ensemble="sum_softmax")
    assert max(abs(o["scores"][0] - preds[o["path"]][0]) for o in other) > 1e-2
    # explicit settings = the config's; mean_logits is the mean of the view logits
    explicit = predict(videos[:1], model, clip=test_clip_config(cfg), ensemble="sum_softmax", batch_size=5,
                       class_names=["a", "b"], topk=1)
    np.testing.assert_allclose(explicit[0]["scores"], preds[videos[0]], atol=1e-5)
    assert len(explicit[0]["topk"]) == 1 and explicit[0]["topk"][0]["name"] in ("a", "b")
    mean = predict(videos[:1], model, clip=test_clip_config(cfg), ensemble="mean_logits")[0]
    item = VideoCSVDataset([VideoRecord(videos[0], 0)], "test", test_clip_config(cfg))[0]
    with torch.no_grad():
        logits = model(InputNormalizer(cfg.DATA.MEAN, cfg.DATA.STD)(item["inputs"]))  # V×K
    np.testing.assert_allclose(mean["scores"], logits.mean(0).numpy(), atol=1e-5)
    np.testing.assert_allclose(torch.softmax(logits, 1).sum(0).numpy(), preds[videos[0]], atol=1e-5)


def test_corrupt_file_is_reported_and_the_rest_scored(classifier, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_text("not a video\n" * 20)
    videos = sorted(classifier["preds"])
    results = predict_from_config(classifier["cfg"], classifier["weights"], [str(bad), videos[0], "nothere.avi"])
    assert results[0]["path"] == str(bad) and "cannot decode" in results[0]["error"]
    assert "does not exist" in results[2]["error"]
    np.testing.assert_allclose(results[1]["scores"], classifier["preds"][videos[0]], atol=1e-5)


def test_predict_tool_prints_names_and_writes_json(classifier, tiny_dataset, tmp_path):
    bad = tmp_path / "broken.avi"
    bad.write_bytes(b"\x00" * 1000)
    out = str(tmp_path / "p.json")
    args = [os.path.join(tiny_dataset, "test.csv"), str(bad), "--cfg", os.path.join(ROOT, "configs", "Synthetic",
            "I3D_R18_SNL.yaml"), "--weights", classifier["weights"], "--json", out, "--topk", "1"]
    proc = _run("predict.py", args + classifier["opts"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "broken.avi" in proc.stderr and "cannot decode" in proc.stderr
    doc = json.load(open(out))
    assert doc["num_scored"] == 4 and doc["num_failed"] == 1 and doc["failed_videos"][0]["path"] == str(bad)
    for r in doc["videos"][:4]:
        np.testing.assert_allclose(r["scores"], classifier["preds"][r["path"]], atol=1e-5)
        assert f"1. {r['topk'][0]['name']}" in proc.stdout and r["topk"][0]["name"] in CLASSES
    assert "scored 4 of 5 videos" in proc.stdout


def test_predict_tool_folder_and_class_file(classifier, tiny_dataset, tmp_path, capsys):
    classes = tmp_path / "names.txt"
    classes.write_text("towards the right\ntowards the left\n")
    main = _tool("predict").main
    rc = main([os.path.join(tiny_dataset, "videos", "test"), "--cfg", os.path.join(ROOT, "configs", "Synthetic",
               "I3D_R18_SNL.yaml"), "--weights", classifier["weights"], "--classes", str(classes)] + classifier["opts"])
    out = capsys.readouterr().out
    assert rc == 0 and out.count("towards the ") == 8 and "scored 4 of 4 videos" in out
    classes.write_text("only one\n")
    rc = main([os.path.join(tiny_dataset, "videos", "test"), "--cfg", os.path.join(ROOT, "configs", "Synthetic",
               "I3D_R18_SNL.yaml"), "--weights", classifier["weights"], "--classes", str(classes)] + classifier["opts"])
    err = capsys.readouterr().err
    assert rc == 2 and "lists 1 class names but the model has 2" in err


@pytest.mark.skipif(not os.path.isdir(SHARED_VIDEOS), reason="../shared/data/videos is absent")
def test_real_mp4_and_avi(classifier, capsys):
    videos = [os.path.join(SHARED_VIDEOS, f) for f in ("real_armwrestling_340x256_28fps.mp4", "real_320x240_25fps.avi")]
    videos = [v for v in videos if os.path.isfile(v)]
    if len(videos) < 2:
        pytest.skip("real mp4 / avi not in ../shared/data/videos")
    rc = _tool("predict").main(videos + ["--cfg", os.path.join(ROOT, "configs", "Synthetic", "I3D_R18_SNL.yaml"),
                                         "--weights", classifier["weights"], "--topk", "2"] + classifier["opts"])
    out = capsys.readouterr().out
    assert rc == 0 and "scored 2 of 2 videos" in out
    for v in videos:
        block = out.split(v, 1)[1]
        assert "1. right" in block.split("\n  2.")[0] or "1. left" in block.split("\n  2.")[0]
        assert "score " in block


def test_user_errors_exit_2_without_traceback(classifier, tiny_dataset, tmp_path, capsys):
    cfg_file = os.path.join(ROOT, "configs", "Synthetic", "I3D_R18_SNL.yaml")
    video = sorted(classifier["preds"])[0]
    main = _tool("predict").main
    assert main([video, "--cfg", cfg_file, "--weights", str(tmp_path / "missing.pyth")] + classifier["opts"]) == 2
    err = capsys.readouterr().err
    assert "weights file not found" in err and "missing.pyth" in err and "Traceback" not in err
    common = ["--cfg", cfg_file, "--weights", classifier["weights"]] + classifier["opts"]
    assert main([str(tmp_path / "nothere.mp4")] + common) == 2
    assert "input not found" in capsys.readouterr().err
    assert main([video, "--cfg", str(tmp_path / "none.yaml"), "--weights", classifier["weights"]]) == 2
    assert "Config file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"")
    assert main([str(bad)] + common) == 2
    err = capsys.readouterr().err
    assert "none of the 1 videos could be scored" in err and "empty" in err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")] + common) == 2  # a folder with no videos
    assert "no videos in this folder" in capsys.readouterr().err


def test_inputs_and_class_names(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("a/x.MP4", "a/y.avi", "a/notes.txt", "b.mkv"):
        (tmp_path / name).write_bytes(b"0")
    (tmp_path / "list.csv").write_text("a/x.MP4 3\n/abs/z.webm\n\nwith space.mp4 1\n")
    got = expand_inputs([str(tmp_path / "a"), str(tmp_path / "list.csv"), str(tmp_path / "b.mkv")])
    assert got == [str(tmp_path / "a" / "x.MP4"), str(tmp_path / "a" / "y.avi"), str(tmp_path / "a" / "x.MP4"),
                   "/abs/z.webm", str(tmp_path / "with space.mp4"), str(tmp_path / "b.mkv")]
    assert _tool("predict").split_overrides(["v.mp4", "d", "TEST.NUM_SPATIAL_CROPS", "1", "NUM_GPUS", "0"]) == (
        ["v.mp4", "d"], ["TEST.NUM_SPATIAL_CROPS", "1", "NUM_GPUS", "0"])
    f = tmp_path / "c.txt"
    f.write_text("1 right\n0 left side\n")
    assert read_class_names(str(f)) == ["left side", "right"]
    f.write_text("1 ApplyEyeMakeup\n2 ApplyLipstick\n")  # UCF-101's classInd.txt, 1-based
    assert read_class_names(str(f)) == ["ApplyEyeMakeup", "ApplyLipstick"]
    f.write_text("abseiling\nair drumming\n")
    assert read_class_names(str(f)) == ["abseiling", "air drumming"]
    f.write_text("0 a\n0 b\n")
    with pytest.raises(PredictInputError, match="0..1"):
        read_class_names(str(f))


# ------------------------------------------------------------------------------------------------
# Re-ID features
# ------------------------------------------------------------------------------------------------
REID_OPTS = ["NUM_GPUS", "0", "NUM_THREADS", "1", "RESNET.BASE_WIDTH", "4", "REID.HEIGHT", "32", "REID.WIDTH", "16",
             "TEST.BATCH_SIZE", "2", "DATA_LOADER.NUM_WORKERS", "0"]


@pytest.fixture(scope="module")
def reid_model(tmp_path_factory):
    """A tiny ResNet50tp + SNL (7 training identities) saved as a checkpoint; a frame folder of 10
    frames 40×20 and a video of 9 frames 64×48 (neither a multiple of REID.SEQ_LEN 4)."""
    tmp = tmp_path_factory.mktemp("reid_features")
    cfg = load_config(REID_CFG, REID_OPTS + ["MODEL.NUM_CLASSES", "7"])
    torch.manual_seed(1)
    model = build_model(cfg).eval()
    weights = str(tmp / "reid.pyth")
    torch.save({"model_state": model.state_dict()}, weights)
    rng = np.random.default_rng(0)
    folder = tmp / "person_0001"
    folder.mkdir()
    for i in range(10):
        Image.fromarray(rng.integers(0, 255, (40, 20, 3), dtype=np.uint8)).save(folder / f"frame_{i:03d}.png")
    video = write_video(str(tmp / "person_0002.mp4"), rng.integers(0, 255, (9, 48, 64, 3), dtype=np.uint8))
    return {"cfg": cfg, "model": model, "weights": weights, "folder": str(folder), "video": video, "tmp": tmp}


def test_extract_features_equal_the_reid_test_features(reid_model, tmp_path, capsys):
    folder, video = reid_model["folder"], reid_model["video"]
    bad_video = tmp_path / "broken.mp4"
    bad_video.write_text("nothing here")
    bad_folder = tmp_path / "broken_frames"
    bad_folder.mkdir()
    (bad_folder / "0001.jpg").write_text("not an image")
    out, js = str(tmp_path / "f.npz"), str(tmp_path / "f.json")
    rc = _tool("extract_features").main(["--cfg", REID_CFG, "--weights", reid_model["weights"], folder, str(bad_video),
                                         video, str(bad_folder), "--out", out, "--json", js] + REID_OPTS)
    captured = capsys.readouterr()
    assert rc == 0, captured.err[-3000:]
    assert "broken.mp4" in captured.err and "broken_frames" in captured.err
    assert "2 of 4 tracklets embedded (128-d" in captured.out
    data = np.load(out)
    assert list(data["names"]) == [folder, video] and list(data["num_frames"]) == [10, 9]
    feats = data["features"]
    assert feats.dtype == np.float32 and feats.shape == (2, 128)
    doc = json.load(open(js))
    assert [f["name"] for f in doc["failed"]] == [str(bad_video), str(bad_folder)]
    np.testing.assert_allclose(np.array(doc["features"], np.float32), feats)

    # the re-ID test's features of the same tracklets: the folder's frames, and the video's frames as PNG files
    frames_dir = tmp_path / "video_frames"
    frames_dir.mkdir()
    decoded = read_frames(video, lambda n: np.arange(n))
    for i, f in enumerate(decoded.frames):
        Image.fromarray(f).save(frames_dir / f"{i:04d}.png")
    tracklets = [Tracklet(tuple(sorted(os.path.join(d, f) for f in os.listdir(d))), 0, 0)
                 for d in (folder, str(frames_dir))]
    ref = reid_engine.extract_features(reid_model["model"], tracklets, reid_model["cfg"], torch.device("cpu"))
    assert ref.shape == (2, 128)
    np.testing.assert_allclose(feats, ref.numpy(), rtol=1e-5, atol=1e-5)
    assert not np.allclose(feats[0], feats[1], atol=1e-3)  # two different tracklets


def test_extract_features_folder_of_tracklets_and_errors(reid_model, tmp_path, capsys):
    cfg = load_config(REID_CFG, REID_OPTS)  # MODEL.NUM_CLASSES is taken from the checkpoint
    res = extract_features_from_config(cfg, reid_model["weights"], [str(reid_model["tmp"])])
    assert res["names"] == [reid_model["folder"], reid_model["video"]] and res["features"].shape == (2, 128)
    main = _tool("extract_features").main
    out = str(tmp_path / "x.npz")
    assert main(["--cfg", REID_CFG, "--weights", str(tmp_path / "no.pyth"), reid_model["folder"], "--out", out]
                + REID_OPTS) == 2
    assert "weights file not found" in capsys.readouterr().err
    assert main(["--cfg", REID_CFG, "--weights", reid_model["weights"], str(tmp_path / "gone"), "--out", out]
                + REID_OPTS) == 2
    assert "input not found" in capsys.readouterr().err
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    assert main(["--cfg", REID_CFG, "--weights", reid_model["weights"], str(empty), "--out", out] + REID_OPTS) == 2
    assert "none of the 1 tracklets" in capsys.readouterr().err and not os.path.exists(out)
    assert main(["--cfg", os.path.join(ROOT, "configs", "Synthetic", "I3D_R18_SNL.yaml"), "--weights",
                 reid_model["weights"], reid_model["folder"], "--out", out]) == 2
    assert "MODEL.TASK" in capsys.readouterr().err


def test_extract_features_under_test_compile(reid_model, caplog):
    """TEST.COMPILE (graph capture) embeds the tracklets as eager mode does."""
    import logging

    tracklets = [reid_model["folder"], reid_model["video"]]
    eager = extract_features_from_config(reid_model["cfg"], reid_model["weights"], tracklets)
    cfg = load_config(REID_CFG, REID_OPTS + ["TEST.COMPILE", "True", "TEST.COMPILE_BACKEND", "aot_eager"])
    torch._dynamo.reset()
    with caplog.at_level(logging.INFO):
        compiled = extract_features_from_config(cfg, reid_model["weights"], tracklets)
    assert "TEST.COMPILE: compiled the model (backend aot_eager) for forward passes of 2 clips" in caplog.text
    assert compiled["names"] == eager["names"] == tracklets
    np.testing.assert_allclose(compiled["features"], eager["features"], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Faults of the user's: folders where files are expected, non-finite weights and scores, one path
# given as a string
# ------------------------------------------------------------------------------------------------
def test_predict_tool_folders_where_files_are_expected(classifier, tmp_path, capsys):
    cfg_file = os.path.join(ROOT, "configs", "Synthetic", "I3D_R18_SNL.yaml")
    video = sorted(classifier["preds"])[0]
    (tmp_path / "out.json").mkdir()
    (tmp_path / "file").write_text("x")
    main = _tool("predict").main
    common = ["--weights", classifier["weights"], "--cfg", cfg_file]
    cases = [(["--json", str(tmp_path / "out.json")] + common, "--json .*out.json is a folder; expected the path"),
             (["--json", str(tmp_path / "file" / "p.json")] + common, "file is a file, not a folder"),
             (["--classes", str(tmp_path)] + common, "--classes .* is a folder; expected a class names file"),
             (["--weights", str(tmp_path), "--cfg", cfg_file], "--weights .* is a folder; expected a checkpoint file"),
             (["--weights", classifier["weights"], "--cfg", str(tmp_path)], "--cfg .* is a folder")]
    for args, message in cases:
        assert main([video] + args + classifier["opts"]) == 2, args
        captured = capsys.readouterr()
        assert re.search(message, captured.err), captured.err
        assert "Traceback" not in captured.err and len(captured.err.strip().splitlines()) == 1, captured.err
        assert "scored" not in captured.out  # refused before any video was scored
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "out.json"]
    assert not list((tmp_path / "out.json").iterdir())


def _strict_json(path: str):
    def refuse(constant):
        raise ValueError(f"{path} holds {constant}: not valid JSON")
    with open(path) as f:
        return json.load(f, parse_constant=refuse)


def test_non_finite_weights_and_scores(classifier, tmp_path, capsys):
    cfg_file = os.path.join(ROOT, "configs", "Synthetic", "I3D_R18_SNL.yaml")
    videos = sorted(classifier["preds"])[:2]
    state = torch.load(classifier["weights"], weights_only=True)["model_state"]
    main = _tool("predict").main
    # a NaN head: refused at load, naming the checkpoint and the tensor; no JSON written
    nan = dict(state, **{"head.fc.weight": state["head.fc.weight"].clone().fill_(float("nan"))})
    torch.save({"model_state": nan}, tmp_path / "nan.pyth")
    out = tmp_path / "p.json"
    assert main(videos + ["--cfg", cfg_file, "--weights", str(tmp_path / "nan.pyth"), "--json", str(out)]
                + classifier["opts"]) == 2
    err = capsys.readouterr().err
    assert "nan.pyth" in err and "NaN or infinite" in err and "head.fc.weight" in err and "Traceback" not in err
    assert not out.exists()
    # finite weights whose logits overflow to inf: each video is an error, not scored, and the JSON is strict
    huge = dict(state, **{"head.fc.weight": torch.full_like(state["head.fc.weight"], 3e38)})  # 3e38 × Σ features
    torch.save({"model_state": huge}, tmp_path / "huge.pyth")
    assert main(videos + ["--cfg", cfg_file, "--weights", str(tmp_path / "huge.pyth"), "--json", str(out)]
                + classifier["opts"]) == 2
    err = capsys.readouterr().err
    assert "none of the 2 videos could be scored" in err and "not finite" in err and "Traceback" not in err
    doc = _strict_json(str(out))
    assert doc["num_scored"] == 0 and all("not finite" in v["error"] for v in doc["videos"])
    # the library: the same error entry for a model in hand, for both ensembles
    model = build_predictor(classifier["cfg"], classifier["weights"])
    with torch.no_grad():
        model.head.fc.bias[0] = float("inf")
    for ensemble in ("sum_softmax", "mean_logits"):
        res = predict(videos[:1], model, clip=test_clip_config(classifier["cfg"]), ensemble=ensemble)
        assert set(res[0]) == {"path", "error", "time_s"} and "not finite" in res[0]["error"], res
        json.dumps(res, allow_nan=False)
    with pytest.raises(ValueError, match="JSON"):
        _tool("predict").write_json(str(tmp_path / "nan.json"), {"x": float("nan")})
    assert not (tmp_path / "nan.json").exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


def test_one_path_as_a_string_is_one_path(classifier, tiny_dataset):
    video = sorted(classifier["preds"])[0]
    model = build_predictor(classifier["cfg"], classifier["weights"])
    res = predict(video, model, cfg=classifier["cfg"], topk=1)
    assert [r["path"] for r in res] == [video]
    np.testing.assert_allclose(res[0]["scores"], classifier["preds"][video], atol=1e-5)
    res = predict_from_config(classifier["cfg"], classifier["weights"], video, topk=1)
    assert [r["path"] for r in res] == [video]
    folder = os.path.join(tiny_dataset, "videos", "test")
    assert expand_inputs(folder) == expand_inputs([folder]) and len(expand_inputs(folder)) == 4
    with pytest.raises(TypeError, match="class_names: expected a list of names"):
        predict([video], model, cfg=classifier["cfg"], class_names="classes.txt")
    with pytest.raises(TypeError, match="videos: expected a path or a list of paths"):
        predict([video, 3], model, cfg=classifier["cfg"])
