"""MODEL.ARCH vtn: the VTN of Kozlov et al. 2019 as the official code builds it (vidnl/models/vtn.py).

The references below are written from the description of the official network (torch ops on
tensors, nothing shared with the implementation): their LayerNorm (unbiased std, ε = 1e-3 added
to the std, the identity for one frame), the position table (row 0 zeros, sinusoids from row 1),
multi-head attention with per-head bias-free q/k/v, temperature √dim, no output projection,
post-norm blocks, a classifier on every frame and logits averaged over the frames; and the
official checkpoint's parameter names (torchvision ResNet children as ``resnet.N``).
"""

import math

import pytest
import torch
import torchvision

import vidnl
from vidnl.models.vtn import VTN
from vidnl.config import ConfigError
from vidnl.models.weights import CheckpointError

DIM, HEADS = 512, 8


def ref_layer_norm(z, a, b, eps=1e-3):
    if z.shape[1] == 1:
        return z
    n = z.shape[-1]
    mean = z.sum(-1, keepdim=True) / n
    std = (((z - mean) ** 2).sum(-1, keepdim=True) / (n - 1)).sqrt()
    return (z - mean) / (std + eps) * a + b


def ref_position_table(rows, dim):
    table = torch.zeros(rows, dim, dtype=torch.float64)
    for p in range(1, rows):
        for j in range(dim):
            angle = p / 10000 ** (2 * (j // 2) / dim)
            table[p, j] = math.sin(angle) if j % 2 == 0 else math.cos(angle)
    return table


def ref_logits(sd, feats, layers):
    """Eval-mode VTN decoder + per-frame classifier + mean over frames, on B×T×DIM features,
    from the official parameter names of ``sd``."""
    t = feats.shape[1]
    x = feats + ref_position_table(t, DIM).float().to(feats.dtype)  # the table is stored in float32
    for i in range(layers):
        p = f"self_attention_decoder.layers.{i}."
        heads = []
        for h in range(HEADS):
            q, k, v = (x @ sd[p + f"slf_attn.w_{n}s"][h] for n in "qkv")
            w = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(DIM), dim=-1)
            heads.append(w @ v)
        x = ref_layer_norm(torch.cat(heads, -1) + x, sd[p + "slf_attn.layer_norm.a_2"],
                           sd[p + "slf_attn.layer_norm.b_2"])
        hid = torch.relu(x @ sd[p + "pos_ffn.w_1.weight"][:, :, 0].T + sd[p + "pos_ffn.w_1.bias"])
        y = hid @ sd[p + "pos_ffn.w_2.weight"][:, :, 0].T + sd[p + "pos_ffn.w_2.bias"]
        x = ref_layer_norm(y + x, sd[p + "pos_ffn.layer_norm.a_2"], sd[p + "pos_ffn.layer_norm.b_2"])
    per_frame = x @ sd["fc.weight"].T + sd["fc.bias"]
    return sum(per_frame[:, i] for i in range(t)) / t


def official_names(depth=34, layers=4, rows=16, classes=101, dim=DIM):
    """{name: shape} of the official VideoTransformer's state dict: the torchvision ResNet's
    children as resnet.0 (conv1), resnet.1 (bn1), resnet.4-7 (layer1-4), then the decoder and fc."""
    names = {}
    for k, v in getattr(torchvision.models, f"resnet{depth}")(weights=None).state_dict().items():
        head, rest = k.split(".", 1)
        if head == "fc":
            continue
        idx = {"conv1": 0, "bn1": 1}.get(head) if not head.startswith("layer") else int(head[5:]) + 3
        names[f"resnet.{idx}.{rest}"] = tuple(v.shape)
    names["self_attention_decoder.position_encoding.enc.weight"] = (rows, dim)
    for i in range(layers):
        p = f"self_attention_decoder.layers.{i}."
        for n in "qkv":
            names[p + f"slf_attn.w_{n}s"] = (HEADS, dim, dim // HEADS)
        for part in ("slf_attn", "pos_ffn"):
            names[p + part + ".layer_norm.a_2"] = names[p + part + ".layer_norm.b_2"] = (dim,)
        names[p + "pos_ffn.w_1.weight"], names[p + "pos_ffn.w_1.bias"] = (2 * dim, dim, 1), (2 * dim,)
        names[p + "pos_ffn.w_2.weight"], names[p + "pos_ffn.w_2.bias"] = (dim, 2 * dim, 1), (dim,)
    names["fc.weight"], names["fc.bias"] = (classes, dim), (classes,)
    return names


@pytest.fixture(scope="module")
def small():
    """ResNet-18 per frame (same layout as 34, faster), 4 frames, float64, LN affine randomised."""
    torch.manual_seed(0)
    model = VTN(num_classes=5, depth=18, max_frames=4).double().eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith(("a_2", "b_2")):
                p.add_(0.3 * torch.randn_like(p))
            if n == "fc.weight":
                p.normal_(0, 0.5)
    return model


def test_stage_shapes():
    model = VTN(num_classes=7, depth=34, max_frames=16).eval()
    with torch.no_grad():
        assert model.resnet(torch.randn(1, 3, 224, 224)).shape == (1, 512, 7, 7)
        x = torch.randn(1, 3, 2, 64, 64)
        assert model.frame_features(x).shape == (1, 2, 512)
        assert model(x).shape == (1, 7)
    assert isinstance(model.reduce_conv, torch.nn.Identity)
    r50 = VTN(num_classes=7, depth=50, max_frames=4)
    assert isinstance(r50.reduce_conv, torch.nn.Conv2d) and r50.reduce_conv.weight.shape == (512, 2048, 1, 1)
    with pytest.raises(ValueError, match="more than its position table's 16 rows"):
        model(torch.randn(1, 3, 17, 32, 32))


def test_pooling_is_the_official_7x7_window():
    model = VTN(num_classes=3, depth=18, max_frames=4).double().eval()
    model.resnet = torch.nn.Identity()  # feed "feature maps" straight to the pooling
    for size, window in ((7, 7), (8, 7), (2, 2)):
        f = torch.randn(2, DIM, 3, size, size, dtype=torch.float64)
        expected = f[..., :window, :window].mean((-1, -2)).transpose(1, 2)  # B×T×DIM
        torch.testing.assert_close(model.frame_features(f), expected)


def test_layer_norm_matches_reference_and_skips_one_frame(small):
    ln = small.self_attention_decoder.layers[0].slf_attn.layer_norm
    z = 0.01 * torch.randn(2, 4, DIM, dtype=torch.float64) + 3.0  # std ≈ ε: where ε's placement matters
    torch.testing.assert_close(ln(z), ref_layer_norm(z, ln.a_2, ln.b_2), rtol=1e-10, atol=1e-10)
    one = torch.randn(2, 1, DIM, dtype=torch.float64)
    assert torch.equal(ln(one), one)


def test_position_table_and_its_row_zero():
    model = VTN(num_classes=3, depth=18, max_frames=16)
    table = model.self_attention_decoder.position_encoding.enc.weight
    torch.testing.assert_close(table.double(), ref_position_table(16, DIM), rtol=0, atol=1e-6)
    assert torch.equal(table[0], torch.zeros(DIM))
    # trainable, except row 0 (the official nn.Embedding's padding_idx 0)
    model.self_attention_decoder(torch.randn(2, 16, DIM)).sum().backward()
    assert torch.equal(table.grad[0], torch.zeros(DIM)) and table.grad[1:].abs().sum() > 0


def test_decoder_temperature_and_frame_average_match_reference(small):
    x = torch.randn(2, 3, 4, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        feats = small.frame_features(x)
        expected = ref_logits(small.state_dict(), feats, layers=4)
        torch.testing.assert_close(small(x), expected, rtol=1e-9, atol=1e-9)
        # a one-frame clip: LayerNorm is the identity, the mean is that frame's logits
        one = x[:, :, :1]
        torch.testing.assert_close(small(one), ref_logits(small.state_dict(), small.frame_features(one), 4),
                                   rtol=1e-9, atol=1e-9)


def test_train_mode_dropout_is_active():
    model = VTN(num_classes=3, depth=18, max_frames=4).train()
    feats = torch.randn(2, 4, DIM)
    dec = model.self_attention_decoder
    assert not torch.equal(dec(feats), dec(feats))
    assert [m.p for m in dec.modules() if isinstance(m, torch.nn.Dropout)] == [0.1] * 12


@pytest.mark.parametrize("prefix", ["", "module."])
def test_official_checkpoint_loads_strictly(tmp_path, prefix):
    names = official_names()
    assert len(names) == 263  # the official VideoTransformer(resnet34, 16 frames): 263 tensors
    torch.manual_seed(1)
    state = {prefix + k: (torch.randint(0, 9, s) if k.endswith("num_batches_tracked") else torch.randn(s))
             for k, s in names.items()}
    path = str(tmp_path / "vtn_official.pth")
    torch.save({"state_dict": state, "epoch": 3, "arch": "resnet34_vtn"}, path)
    model = vidnl.create_model("vtn_r34", num_classes=101, pretrained=path)
    own = model.state_dict()
    assert set(own) == set(names)
    assert all(torch.equal(own[k].float(), state[prefix + k].float()) for k in names)
    # a missing tensor is an error (strict)
    del state[prefix + "self_attention_decoder.layers.3.slf_attn.w_vs"]
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError, match="not in the file"):
        vidnl.create_model("vtn_r34", num_classes=101, pretrained=path)


def test_config_and_names():
    assert vidnl.describe_model("vtn_r34").startswith("Kozlov et al. 2019 VTN")
    assert "not Kozlov" in vidnl.describe_model("vtn_vit_r50")
    model = vidnl.create_model("vtn_r34", num_classes=101)
    assert sum(p.numel() for p in model.parameters()) == 28_699_045  # the official count, 101 classes
    with pytest.raises(ConfigError, match="VTN.ATTENTION: 'ns' is not available for MODEL.ARCH vtn_vit"):
        vidnl.create_model("vtn_vit_r50", config={"VTN.ATTENTION": "ns"})
    with pytest.raises(ConfigError, match="RESNET.BASE_WIDTH"):
        vidnl.create_model("vtn_r34", config={"RESNET.BASE_WIDTH": 4})


# ------------------------------------------------------------------------------------------------
# VTN.ATTENTION: a nonlocal block in place of each multi-head self-attention (Zhu et al. 2021 (SNL),
# Appendix C.1). The reading (docs/nonlocal.md): LN(x + Dropout(block(x) - x)), the frames as a
# B×D×T×1×1 graph; the references below are written from the papers' formulas.
# ------------------------------------------------------------------------------------------------
CS = 64  # inner width of the small blocks


def ref_snl_branch(x, sd, p, eps=1e-5):
    """BN(Z W1 + A Z W2) of Zhu et al. 2021, Eq. 5, per clip: x T×D; A = D^-½ ((M + Mᵀ)/2) D^-½,
    M = relu(θ) relu(φ)ᵀ; BN in eval mode with the block's statistics."""
    w = lambda n: sd[p + n][:, :, 0, 0, 0]  # 1×1×1 conv weights, out×in
    theta, phi, z = x @ w("theta.weight").T, x @ w("phi.weight").T, x @ w("g.weight").T
    m = torch.relu(theta) @ torch.relu(phi).T
    s = (m + m.T) / 2
    d = torch.diag(s.sum(1) ** -0.5)
    a = d @ s @ d
    f = z @ w("out_proj.0.weight").T + a @ z @ w("out_proj.1.weight").T
    return (f - sd[p + "bn.running_mean"]) / torch.sqrt(sd[p + "bn.running_var"] + eps) * sd[p + "bn.weight"] \
        + sd[p + "bn.bias"]


def ref_nl_branch(x, sd, p, eps=1e-5):
    """BN(softmax(θ φᵀ) g W) of Wang et al. 2018 (embedded Gaussian, no scale), per clip: x T×D."""
    w = lambda n: sd[p + n][:, :, 0, 0, 0]
    attn = torch.softmax((x @ w("theta.weight").T) @ (x @ w("phi.weight").T).T, dim=-1)
    f = attn @ (x @ w("g.weight").T) @ w("out_proj.0.weight").T
    return (f - sd[p + "bn.running_mean"]) / torch.sqrt(sd[p + "bn.running_var"] + eps) * sd[p + "bn.weight"] \
        + sd[p + "bn.bias"]


def ref_nonlocal_logits(sd, feats, layers, branch, residuals=1, layer_norm=True):
    """Eval-mode VTN with ``branch`` in place of the attention: per layer
    x <- LN(residuals·x + branch(x)), then the official FFN sublayer, classifier, mean over frames.
    ``residuals`` 2 / ``layer_norm`` False are the wrong readings the tests must tell apart."""
    t = feats.shape[1]
    x = feats + ref_position_table(t, DIM).float().to(feats.dtype)
    ln = (lambda z, a, b: ref_layer_norm(z, a, b)) if layer_norm else (lambda z, a, b: z)
    for i in range(layers):
        p = f"self_attention_decoder.layers.{i}."
        out = torch.stack([branch(x[b], sd, p + "slf_attn.nonlocal_block.") for b in range(x.shape[0])])
        x = ln(residuals * x + out, sd[p + "slf_attn.layer_norm.a_2"], sd[p + "slf_attn.layer_norm.b_2"])
        hid = torch.relu(x @ sd[p + "pos_ffn.w_1.weight"][:, :, 0].T + sd[p + "pos_ffn.w_1.bias"])
        y = hid @ sd[p + "pos_ffn.w_2.weight"][:, :, 0].T + sd[p + "pos_ffn.w_2.bias"]
        x = ref_layer_norm(y + x, sd[p + "pos_ffn.layer_norm.a_2"], sd[p + "pos_ffn.layer_norm.b_2"])
    return (x @ sd["fc.weight"].T + sd["fc.bias"]).mean(1)


def small_nonlocal(attention, layers=2):
    """ResNet-18 VTN with ``attention`` blocks of width CS, float64, eval, every BN / LN / block
    parameter randomised (a zero-initialised output BN would hide the block)."""
    torch.manual_seed(3)
    model = VTN(num_classes=5, depth=18, max_frames=4, layers=layers, attention=attention,
                nonlocal_options=dict(dim_inner=CS)).double().eval()
    with torch.no_grad():
        for n, t in model.state_dict().items():
            if "self_attention_decoder" not in n and n != "fc.weight" or n.endswith("num_batches_tracked"):
                continue
            if n.endswith("running_var"):
                t.uniform_(0.5, 2.0)
            elif n.endswith(("running_mean", "bn.bias", "b_2")):
                t.normal_(0, 0.3)
            elif n.endswith(("bn.weight", "a_2")):
                t.uniform_(0.5, 1.5)
            elif n == "fc.weight":
                t.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("attention, branch", [("snl", ref_snl_branch), ("nl", ref_nl_branch)])
def test_nonlocal_attention_decoder_matches_reference(attention, branch):
    model = small_nonlocal(attention)
    sd = model.state_dict()
    assert not any(".w_qs" in k or ".w_ks" in k or ".w_vs" in k for k in sd)
    x = torch.randn(2, 3, 4, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        feats = model.frame_features(x)
        out = model(x)
        assert out.shape == (2, 5)
        torch.testing.assert_close(out, ref_nonlocal_logits(sd, feats, 2, branch), rtol=1e-9, atol=1e-9)
        # the readings it is not: the block's own residual kept (two residuals), no LayerNorm
        for wrong in (dict(residuals=2), dict(layer_norm=False)):
            assert (out - ref_nonlocal_logits(sd, feats, 2, branch, **wrong)).abs().max() > 1e-3


def test_nonlocal_attention_shapes_names_and_start():
    model = VTN(num_classes=7, depth=18, max_frames=16, attention="snl", nonlocal_options=dict(dim_inner=256))
    layer = model.self_attention_decoder.layers[0].slf_attn
    assert type(layer).__name__ == "NonlocalAttention" and type(layer.nonlocal_block).__name__ == "SNL"
    names = {k for k in model.state_dict() if ".layers.0.slf_attn." in k}
    p = "self_attention_decoder.layers.0.slf_attn."
    assert names == {p + "layer_norm.a_2", p + "layer_norm.b_2"} | {
        p + "nonlocal_block." + n for n in ("theta.weight", "phi.weight", "g.weight", "out_proj.0.weight",
                                            "out_proj.1.weight", "bn.weight", "bn.bias", "bn.running_mean",
                                            "bn.running_var", "bn.num_batches_tracked")}
    # a new block's output BN scale is zero: the sublayer starts as LN(x)
    model.eval()
    x = torch.randn(2, 16, DIM)
    torch.testing.assert_close(layer(x), ref_layer_norm(x, layer.layer_norm.a_2, layer.layer_norm.b_2))
    with torch.no_grad():
        assert model(torch.randn(1, 3, 16, 32, 32)).shape == (1, 7)
    # train mode: dropout 0.1 on the block's output and the FFN's, no attention weights to drop
    assert [m.p for m in model.self_attention_decoder.modules() if isinstance(m, torch.nn.Dropout)] == [0.1] * 8


def test_nonlocal_attention_config_keys():
    model = vidnl.create_model("vtn_r34", num_classes=101, config={"VTN.ATTENTION": "snl"})
    block = model.self_attention_decoder.layers[3].slf_attn.nonlocal_block
    assert block.dim_inner == 256 and block.bn.weight.abs().sum() == 0  # INNER_RATIO 0.5, zero-init output BN
    # 4 × (5 · 512 · 256 + BN 2 · 512) in place of 4 × 3 · 8 · 512 · 64
    assert sum(p.numel() for p in model.parameters()) == 28_699_045 - 4 * 3 * 512 * 512 + 4 * (5 * 512 * 256 + 1024)
    ns = vidnl.create_model("vtn_r34", config={"VTN.ATTENTION": "ns", "NONLOCAL.NS_STAGES": 2,
                                                "NONLOCAL.INNER_CHANNELS": 32})
    assert ns.self_attention_decoder.layers[0].slf_attn.nonlocal_block.num_stages == 2
    for config, message in (({"NONLOCAL.MODE": "space"}, "VTN.ATTENTION 'snl': NONLOCAL.MODE='space'"),
                            ({"NONLOCAL.POOL": [1, 2, 2]}, "NONLOCAL.POOL=\\[1, 2, 2\\] pools in space"),
                            ({"NONLOCAL.RECURRENCE": 3}, "does not take NONLOCAL.RECURRENCE")):
        with pytest.raises(ConfigError, match=message):
            vidnl.create_model("vtn_r34", config={"VTN.ATTENTION": "snl", **config})
    with pytest.raises(ConfigError, match="VTN.ATTENTION: 'snll' is not allowed"):
        vidnl.create_model("vtn_r34", config={"VTN.ATTENTION": "snll"})


def test_attention_values_are_the_block_registry():
    from vidnl.config.validate import ALLOWED_VALUES
    from vidnl.models.vtn import ATTENTIONS
    from vidnl.nonlocal_blocks import list_blocks

    assert set(ALLOWED_VALUES["VTN.ATTENTION"]) == set(ATTENTIONS) == {"mha", *list_blocks()}


# ------------------------------------------------------------------------------------------------
# Loading an official checkpoint through every documented path, with a tiny VTN (ResNet-18, 4
# frames, 32² crops) written in the official key names and wrapper by our own code.
# ------------------------------------------------------------------------------------------------
TINY = ["RESNET.DEPTH", "18", "DATA.NUM_FRAMES", "4", "DATA.SAMPLING_RATE", "2", "DATA.TRAIN_CROP_SIZE", "32",
        "DATA.TRAIN_JITTER_SCALES", "[32, 40]", "DATA.TEST_CROP_SIZE", "32", "NUM_GPUS", "0", "NUM_THREADS", "1",
        "DATA_LOADER.NUM_WORKERS", "0", "TENSORBOARD.ENABLE", "False", "TRAIN.DATASET", "csv", "TEST.DATASET", "csv"]


def official_file(path, classes, prefix="module.", seed=5):
    """A randomly initialised tiny VTN (randomised BN statistics) saved as the official code saves
    (``{"state_dict", "epoch", "optimizer"}``, DataParallel names); returns its state."""
    torch.manual_seed(seed)
    model = VTN(num_classes=classes, depth=18, max_frames=4)
    with torch.no_grad():
        for n, t in model.state_dict().items():
            if n.endswith("running_var"):
                t.uniform_(0.5, 2.0)
            elif n.endswith("running_mean"):
                t.normal_(0, 0.2)
    state = {prefix + k: v.clone() for k, v in model.state_dict().items()}
    torch.save({"epoch": 11, "state_dict": state, "optimizer": {"state": {}, "param_groups": []}}, path)
    return {k: v.clone() for k, v in model.state_dict().items()}


def load_tool(name):
    import importlib.util
    import os

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(f"tool_{name}", os.path.join(root, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, root


def test_official_checkpoint_through_run_net_test(tiny_dataset, tmp_path, prefix="module."):
    """run_net's test path (TEST.CHECKPOINT_FILE_PATH) scores every video with the official
    weights: its scores equal the logits of the config's model loaded with the same file on the
    test loader's clips."""
    import json
    import os

    from vidnl.config import load_config
    from vidnl.data.loader import build_test_loader
    from vidnl.models import build_model
    from vidnl.models.weights import load_weights

    path = str(tmp_path / "resnet18_vtn.pth")
    official_file(path, classes=2, prefix=prefix)
    run_net, root = load_tool("run_net")
    opts = TINY + ["MODEL.NUM_CLASSES", "2", "DATA.PATH_TO_DATA_DIR", tiny_dataset, "OUTPUT_DIR", str(tmp_path / "out"),
                   "TRAIN.ENABLE", "False", "TEST.CHECKPOINT_FILE_PATH", path, "TEST.NUM_ENSEMBLE_VIEWS", "1",
                   "TEST.NUM_SPATIAL_CROPS", "1", "TEST.BATCH_SIZE", "4"]
    cfg_file = os.path.join(root, "configs", "UCF101", "VTN_R34.yaml")
    assert run_net.main(["--cfg", cfg_file] + opts) == 0
    with open(tmp_path / "out" / "predictions_test.json") as f:
        predictions = {p["index"]: p["scores"] for p in json.load(f)["predictions"]}
    cfg = load_config(cfg_file, opts)
    model = build_model(cfg)  # loaded as create_model(pretrained=) loads (vtn_r34 is ResNet-34: tested above)
    load_weights(model, path, fmt=cfg.MODEL.WEIGHTS_FORMAT)
    model.eval()
    loader = build_test_loader(cfg, "test")
    seen = 0
    with torch.no_grad():
        for batch in loader:
            logits = model(loader.dataset.normalizer(batch["inputs"], torch.device("cpu")))
            for i, row in zip(batch["indices"].tolist(), logits):
                torch.testing.assert_close(torch.tensor(predictions[i]), row, rtol=0, atol=2e-6)
                seen += 1
    assert seen == len(predictions) == 4


def test_official_checkpoint_fine_tunes_and_converts(tiny_dataset, tmp_path):
    """TRAIN.CHECKPOINT_FILE_PATH of a 5-class official VTN into the 2-class UCF config (fc.* not
    loaded, the rest strictly) and of the SNL config (q/k/v not used, new blocks), a short run
    through run_net, and tools/convert_checkpoint.py."""
    import os

    from vidnl.config import load_config
    from vidnl.models import build_model
    from vidnl.models.weights import load_weights

    path = str(tmp_path / "kinetics_vtn.pth")
    state = official_file(path, classes=5)
    run_net, root = load_tool("run_net")
    ucf = os.path.join(root, "configs", "UCF101", "VTN_R34.yaml")
    snl = os.path.join(root, "configs", "UCF101", "VTN_R34_SNL.yaml")
    opts = TINY + ["MODEL.NUM_CLASSES", "2", "DATA.PATH_TO_DATA_DIR", tiny_dataset]
    for cfg_file, not_loaded in ((ucf, {"fc.weight", "fc.bias"}),
                                 (snl, {"fc.weight", "fc.bias"} | {k for k in state if ".slf_attn.w_" in k})):
        cfg = load_config(cfg_file, opts)
        model = build_model(cfg)
        report = load_weights(model, path, fmt=cfg.MODEL.WEIGHTS_FORMAT, skip=cfg.TRAIN.CHECKPOINT_SKIP)
        own = model.state_dict()
        assert {k for k in report["skipped"] if k in state} == not_loaded
        assert all(torch.equal(own[k], state[k]) for k in state if k not in not_loaded)
    # the whole run: one epoch from the official file
    assert run_net.main(["--cfg", ucf] + opts + [
        "OUTPUT_DIR", str(tmp_path / "ft"), "TRAIN.CHECKPOINT_FILE_PATH", path, "SOLVER.MAX_EPOCH", "1",
        "TRAIN.BATCH_SIZE", "4", "TEST.ENABLE", "False", "TRAIN.EVAL_PERIOD", "1"]) == 0
    # without the skip, the 5-way classifier does not fit: exit 2
    assert run_net.main(["--cfg", ucf] + opts + [
        "OUTPUT_DIR", str(tmp_path / "ft2"), "TRAIN.CHECKPOINT_FILE_PATH", path, "TRAIN.CHECKPOINT_SKIP", "[]",
        "TEST.ENABLE", "False"]) == 2
    # convert_checkpoint.py writes a vidnl checkpoint that loads strictly and holds the same tensors
    convert, _ = load_tool("convert_checkpoint")
    out = str(tmp_path / "vtn_vidnl.pyth")
    assert convert.main([path, out, "--cfg", ucf] + TINY[:4] + ["MODEL.NUM_CLASSES", "5", "--skip"]) == 0
    cfg = load_config(ucf, TINY[:4] + ["MODEL.NUM_CLASSES", "5"])
    model = build_model(cfg)
    load_weights(model, out, fmt=cfg.MODEL.WEIGHTS_FORMAT)
    converted = model.state_dict()
    assert set(converted) == set(state) and all(torch.equal(converted[k], state[k]) for k in state)


def test_torchvision_imagenet_weights_load_into_the_encoder(tmp_path):
    """A torchvision ResNet file (MODEL.WEIGHTS_FORMAT torchvision, detected) loads into resnet.N
    (conv1 0, bn1 1, layer1-4 4-7), its ImageNet fc dropped; the Kinetics config skips the new
    decoder and classifier."""
    import os

    from vidnl.config import load_config
    from vidnl.models import build_model
    from vidnl.models.weights import load_weights

    torch.manual_seed(2)
    net = torchvision.models.resnet18(weights=None)
    path = str(tmp_path / "resnet18-imagenet.pth")
    torch.save(net.state_dict(), path)  # what torchvision's download holds: a plain state dict
    _, root = load_tool("run_net")
    cfg = load_config(os.path.join(root, "configs", "Kinetics", "VTN_R34.yaml"), TINY[:4])
    model = build_model(cfg)
    report = load_weights(model, path, fmt=cfg.MODEL.WEIGHTS_FORMAT, skip=cfg.TRAIN.CHECKPOINT_SKIP)
    assert all(k.startswith(("fc.", "self_attention_decoder.")) for k in report["skipped"])
    own, theirs = model.state_dict(), net.state_dict()
    for k, v in theirs.items():
        head, rest = k.split(".", 1)
        if head != "fc":
            idx = {"conv1": 0, "bn1": 1}.get(head, None if not head.startswith("layer") else int(head[5:]) + 3)
            assert torch.equal(own[f"resnet.{idx}.{rest}"], v), k
    assert not torch.equal(own["fc.weight"][:5], theirs["fc.weight"][:5, :])  # the ImageNet classifier is not used
    with torch.no_grad():
        x = torch.randn(1, 3, 2, 64, 64)
        frames = x.transpose(1, 2).reshape(2, 3, 64, 64)
        expected = torch.nn.Sequential(*list(net.eval().children())[:-2])(frames).mean((2, 3))
        torch.testing.assert_close(model.eval().frame_features(x)[0], expected, rtol=1e-5, atol=1e-5)


def test_convert_checkpoint_skip_patterns_stop_at_the_config_overrides():
    """``--skip`` takes any number of patterns; KEY VALUE overrides written after them are
    overrides, not patterns (they were eaten as patterns before)."""
    convert, _ = load_tool("convert_checkpoint")
    args = convert.parse_args(["in.pth", "out.pyth", "--cfg", "c.yaml", "--skip", "fc.*", "*.slf_attn.w_?s",
                               "MODEL.NUM_CLASSES", "5", "RESNET.DEPTH", "18"])
    assert args.skip == ["fc.*", "*.slf_attn.w_?s"]
    assert args.opts == ["MODEL.NUM_CLASSES", "5", "RESNET.DEPTH", "18"]
    args = convert.parse_args(["in.pth", "out.pyth", "--cfg", "c.yaml", "MODEL.NUM_CLASSES", "5", "--skip"])
    assert args.skip == [] and args.opts == ["MODEL.NUM_CLASSES", "5"]
    assert convert.parse_args(["in.pth", "out.pyth", "--cfg", "c.yaml"]).skip is None  # TRAIN.CHECKPOINT_SKIP
