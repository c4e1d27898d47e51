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
    with pytest.raises(ConfigError, match="VTN.ATTENTION"):
        vidnl.create_model("vtn_r34", config={"VTN.ATTENTION": "snl"})
    with pytest.raises(ConfigError, match="RESNET.BASE_WIDTH"):
        vidnl.create_model("vtn_r34", config={"RESNET.BASE_WIDTH": 4})
