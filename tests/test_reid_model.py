"""ResNet50tp (torchvision ResNet-50 per frame + temporal pooling), nonlocal placement, REID config."""

from __future__ import annotations

import glob
import os

import pytest
import torch
import torchvision

from vidnl.config import ConfigError, load_config
from vidnl.models import build_model
from vidnl.models.reid import ResNet50TP

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REID = ["MODEL.TASK", "reid", "MODEL.ARCH", "resnet50tp", "TRAIN.BATCH_SIZE", "8"]


def reid_cfg(*opts):
    return load_config(None, REID + [str(o) for o in opts])


def test_full_width_backbone_is_torchvision_resnet50(tmp_path):
    torch.manual_seed(0)
    model = build_model(reid_cfg("MODEL.NUM_CLASSES", 10, "RESNET.ZERO_INIT_FINAL_BN", False)).eval()
    tv = torchvision.models.resnet50(weights=None).eval()
    own = {k: v.shape for k, v in model.backbone.state_dict().items()}
    ref = {k: v.shape for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    assert own == ref
    assert sum(p.numel() for p in model.backbone.parameters()) == 25_557_032 - 2048 * 1000 - 1000
    # a torchvision state dict saved to a file loads into the backbone; fc.* (ImageNet classifier) is skipped
    path = str(tmp_path / "r50.pth")
    torch.save(tv.state_dict(), path)
    report = model.load_backbone_weights(path)
    assert report["skipped"] == ["fc.bias", "fc.weight"] and report["missing"] == report["unexpected"] == []
    # per-clip features = the mean over frames of torchvision's pooled per-frame features
    x = torch.randn(2, 3, 3, 64, 32)
    tv.fc = torch.nn.Identity()
    frames = x.transpose(1, 2).reshape(6, 3, 64, 32)
    with torch.no_grad():
        ref_feat = tv(frames).view(2, 3, -1).mean(1)
        torch.testing.assert_close(model(x), ref_feat, rtol=1e-4, atol=1e-5)


def test_train_and_eval_outputs_and_heads():
    x = torch.randn(4, 3, 4, 64, 32)
    for opts, dim in ((("RESNET.BASE_WIDTH", 4), 128), (("RESNET.BASE_WIDTH", 4, "REID.EMBED_DIM", 24), 24),
                      (("RESNET.BASE_WIDTH", 8, "REID.BNNECK", True), 256)):
        model = build_model(reid_cfg("MODEL.NUM_CLASSES", 7, *opts))
        assert isinstance(model, ResNet50TP) and model.feature_dim == dim
        model.train()
        logits, feats = model(x)
        assert logits.shape == (4, 7) and feats.shape == (4, dim)
        model.eval()
        assert model(x).shape == (4, dim)
    assert model.classifier.bias is None and not model.neck.bias.requires_grad  # BN-neck: no shift, no bias


def test_nonlocal_block_before_last_res4_block_mixes_frames():
    cfg = reid_cfg("RESNET.BASE_WIDTH", 4, "NONLOCAL.LOCATION", "[[], [], [4], []]", "NONLOCAL.TYPE", "snl",
                   "NONLOCAL.ZERO_INIT_FINAL_BN", False, "MODEL.NUM_CLASSES", 3)
    model = build_model(cfg).eval()
    blocks = {name: list(s.nonlocal_blocks) for name, s in zip(model.stage_names, model.stages)}
    assert blocks == {"res2": [], "res3": [], "res4": ["4"], "res5": []}
    assert model.backbone.layer3.num_blocks == 6 and model.backbone.layer3.nonlocal_blocks["4"].dim == 64
    # torchvision names of the residual blocks are kept beside the nonlocal block
    assert "backbone.layer3.5.conv1.weight" in model.state_dict()
    assert any(k.startswith("backbone.layer3.nonlocal_blocks.4.") for k in model.state_dict())
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 64, 32)
    y = x.clone()
    y[:, :, 3] += 1.0  # change only the last frame of each clip
    with torch.no_grad():
        fx = model.backbone.forward_maps(x).view(2, 4, -1)
        fy = model.backbone.forward_maps(y).view(2, 4, -1)
        assert not torch.allclose(fx[:, 0], fy[:, 0])  # frame 0 sees frame 3 through the block
        plain = build_model(reid_cfg("RESNET.BASE_WIDTH", 4, "MODEL.NUM_CLASSES", 3)).eval()
        px = plain.backbone.forward_maps(x).view(2, 4, -1)
        py = plain.backbone.forward_maps(y).view(2, 4, -1)
        torch.testing.assert_close(px[:, :3], py[:, :3])  # without it frames are independent
        # clips in a batch stay separate: changing clip 1 leaves clip 0 unchanged
        z = x.clone()
        z[1] += 1.0
        torch.testing.assert_close(model.backbone.forward_maps(z).view(2, 4, -1)[0], fx[0])


def test_reid_config_errors_name_the_key():
    cases = [
        (["REID.SEQLEN", "4"], ["REID.SEQLEN", "REID.SEQ_LEN"]),
        (["REID.SAMPLE_MODE", "dense"], ["REID.SAMPLE_MODE", "'dense'", "'restricted_random'"]),
        (["REID.DISTANCE", "l1"], ["REID.DISTANCE", "'cosine'"]),
        (["REID.SEQ_LEN", "0"], ["REID.SEQ_LEN", ">= 1"]),
        (["REID.TRIPLET_MARGIN", "-0.1"], ["REID.TRIPLET_MARGIN", ">= 0"]),
        (["REID.NUM_INSTANCES", "3"], ["TRAIN.BATCH_SIZE", "8", "REID.NUM_INSTANCES 3"]),
        (["TRAIN.BATCH_SIZE", "4"], ["TRAIN.BATCH_SIZE", "at least 2"]),
        (["REID.SPLIT_ID", "3"], ["REID.SPLIT_ID", "MARS"]),
        (["REID.MEAN", "[0.5, 0.5]"], ["REID.MEAN", "3 numbers"]),
        (["REID.BNNECK", "maybe"], ["REID.BNNECK", "bool"]),
        (["MODEL.ARCH", "i3d"], ["MODEL.ARCH", "'i3d'", "resnet50tp"]),
    ]
    # what the models know is checked when the model is built
    built = [
        (["RESNET.DEPTH", "101"], ["RESNET.DEPTH", "resnet50tp"]),
        (["NONLOCAL.LOCATION", "[[], [], [6], []]"], ["NONLOCAL.LOCATION", "res4", "0..5"]),
    ]
    # the re-ID dataset names come from their registry: checked where the data is built
    from vidnl.data.datasets.reid import build_reid_data

    with pytest.raises(ConfigError) as e:
        build_reid_data(load_config(None, REID + ["REID.DATASET", "market"]))
    for p in ("REID.DATASET", "'market'", "'mars'", "'ilidsvid'", "'prid'"):
        assert p in str(e.value), (p, str(e.value))
    for opts, pieces in cases + built:
        with pytest.raises(ConfigError) as e:
            cfg = load_config(None, REID + opts)
            assert (opts, pieces) in built, f"{opts}: load_config should have refused it"
            build_model(cfg)
        for p in pieces:
            assert p in str(e.value), (opts, p, str(e.value))
    with pytest.raises(ConfigError, match="MODEL.TASK"):
        load_config(None, ["MODEL.ARCH", "resnet50tp"])


def test_table9_configs():
    files = sorted(glob.glob(os.path.join(ROOT, "configs", "*", "R50tp*.yaml")))
    assert len(files) == 9
    for f in files:
        cfg = load_config(f, ["RESNET.BASE_WIDTH", "4"])
        s = cfg.SOLVER
        assert (cfg.MODEL.TASK, cfg.MODEL.ARCH) == ("reid", "resnet50tp")
        assert (s.OPTIMIZING_METHOD, s.BASE_LR, s.WEIGHT_DECAY, s.MAX_EPOCH) == ("adam", 3e-4, 5e-4, 500)
        assert (s.LR_POLICY, list(s.STEPS), list(s.LRS)) == ("steps_with_relative_lrs", [0, 400], [1.0, 0.1])
        assert cfg.REID.TRIPLET_MARGIN == 0.3
        name = os.path.basename(f)
        loc = [[], [], [4], []] if name != "R50tp.yaml" else [[], [], [], []]
        assert [list(x) for x in cfg.NONLOCAL.LOCATION] == loc
        if loc != [[], [], [], []]:
            assert cfg.NONLOCAL.TYPE == ("snl" if "SNL" in name else "nl")
        build_model(cfg)
