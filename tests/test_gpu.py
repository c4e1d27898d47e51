"""CUDA paths: the nonlocal family on the GPU (exact, fused attention without the N×N matrix) and
mixed-precision training steps. Skipped on machines without a GPU (CI); run on one with
``pytest tests/test_gpu.py``."""

import pytest
import torch
import torch.nn as nn

from vidnl.nonlocal_blocks import NL, NS, build_nonlocal_block
from vidnl.nonlocal_blocks import functional as NF

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

BLOCKS = [("nl", {}), ("nl", {"kernel": "dot"}), ("ns", {"num_stages": 2}), ("snl", {}), ("gsnl", {}), ("a2", {}),
          ("cgnl", {}), ("cc", {})]


@pytest.mark.parametrize("block_type,opts", BLOCKS, ids=[f"{t}-{'-'.join(map(str, o.values()))}" for t, o in BLOCKS])
def test_fast_equals_dense_and_cpu_on_cuda(block_type, opts):
    """float64 on the GPU: fast = dense to 1e-10, and both = the CPU result (values and gradients)."""
    torch.manual_seed(0)
    fast = build_nonlocal_block(block_type, 8, dim_inner=4, implementation="fast", zero_init_final_bn=False, **opts)
    with torch.no_grad():
        for m in fast.modules():
            if isinstance(m, (nn.Conv3d, nn.Linear)):
                m.weight.mul_(0.5)
    dense = build_nonlocal_block(block_type, 8, dim_inner=4, implementation="dense", zero_init_final_bn=False, **opts)
    dense.load_state_dict(fast.state_dict())
    x = torch.randn(2, 8, 3, 5, 4, dtype=torch.float64)
    cpu = fast.double().eval()(x)
    xg = x.cuda().requires_grad_()
    y_fast = fast.cuda()(xg)
    y_dense = dense.double().eval().cuda()(xg)
    torch.testing.assert_close(y_fast, y_dense, rtol=0, atol=1e-10)
    torch.testing.assert_close(y_fast.cpu(), cpu, rtol=0, atol=1e-10)
    w = torch.randn_like(y_fast)
    g_fast = torch.autograd.grad((y_fast * w).sum(), xg)[0]
    g_dense = torch.autograd.grad((y_dense * w).sum(), xg)[0]
    torch.testing.assert_close(g_fast, g_dense, rtol=0, atol=1e-9)


def _fused_only():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([getattr(SDPBackend, k) for k in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION")
                        if hasattr(SDPBackend, k)])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("size", [(256, 8, 28, 28), (512, 8, 14, 14)], ids=["res3", "res4"])
def test_nl_runs_a_fused_kernel_on_cuda(monkeypatch, dtype, size):
    """NL at the I3D-R50 res3/res4 sizes (C = 2·Cs, batch 2), forward + backward with only the
    fused kernels allowed: the math kernel (which stores N×N) would raise. Cs = 512 is beyond
    flash attention's limit (256): the memory-efficient kernel must take it."""
    monkeypatch.setattr(NF, "SOFTMAX_EXPLICIT_MAX_SCORES", -1)  # res4 would take the explicit form
    cs, t, h, w = size
    block = NL(2 * cs, cs, implementation="fast").cuda().to(dtype)
    x = torch.randn(2, 2 * cs, t, h, w, device="cuda", dtype=dtype, requires_grad=True)
    with _fused_only():
        block(x).float().sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("block_type", ["nl", "ns"])
def test_softmax_blocks_store_no_nxn_on_cuda(dtype, block_type):
    """8×56×56 (N = 25088), C = 128 → Cs = 64, batch 1, forward + backward: peak memory below a
    quarter of one N×N matrix (2.5 GB in float32), which the naive form stores several times."""
    block = build_nonlocal_block(block_type, 128, dim_inner=64, implementation="auto").cuda().to(dtype)
    x = torch.randn(1, 128, 8, 56, 56, device="cuda", dtype=dtype, requires_grad=True)
    n = 8 * 56 * 56
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    with _fused_only():
        block(x).float().sum().backward()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    nxn = n * n * torch.finfo(dtype).bits // 8
    assert torch.isfinite(x.grad).all()
    assert peak < nxn / 4, f"peak {peak / 2**20:.0f} MB vs one N×N matrix {nxn / 2**20:.0f} MB"


@pytest.mark.parametrize("amp_dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("block_type", ["nl", "snl", "ns", "cgnl"])
def test_mixed_precision_training_steps_on_cuda(amp_dtype, block_type):
    """A small I3D-R18 with a nonlocal block in res3 and res4 trains under autocast (float16 with
    a gradient scaler, or bfloat16): finite losses, weights of the block updated, loss falls on a
    fixed batch."""
    from vidnl.config import load_config
    from vidnl.models import build_model
    from vidnl.nonlocal_blocks import NonLocalBase

    torch.manual_seed(0)
    cfg = load_config(None, ["MODEL.ARCH", "i3d", "RESNET.DEPTH", "18", "RESNET.BASE_WIDTH", "8", "MODEL.NUM_CLASSES",
                             "4", "MODEL.DROPOUT_RATE", "0.0", "NONLOCAL.TYPE", block_type, "NONLOCAL.LOCATION",
                             "[[], [1], [1], []]", "NONLOCAL.POOL", "[]"])
    model = build_model(cfg).cuda()
    blocks = [m for m in model.modules() if isinstance(m, NonLocalBase)]
    assert len(blocks) == 2
    before = [p.detach().clone() for b in blocks for p in b.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    x = torch.randn(4, 3, 8, 64, 64, device="cuda")
    y = torch.tensor([0, 1, 2, 3], device="cuda")
    losses = []
    for _ in range(8):
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=amp_dtype):
            loss = nn.functional.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    after = [p.detach() for b in blocks for p in b.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(after, before))
