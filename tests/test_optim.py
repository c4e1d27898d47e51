import math

import pytest
import torch.nn as nn

from vidnl.config import load_config
from vidnl.engine.optim import build_optimizer, lr_at_epoch


def test_cosine_with_warmup():
    cfg = load_config(None, ["SOLVER.BASE_LR", "0.4", "SOLVER.MAX_EPOCH", "10", "SOLVER.WARMUP_EPOCHS", "2",
                             "SOLVER.WARMUP_START_LR", "0.0", "SOLVER.COSINE_END_LR", "0.0"])
    cos2 = 0.4 * 0.5 * (1 + math.cos(math.pi * 0.2))
    assert lr_at_epoch(cfg, 0.0) == 0.0
    assert lr_at_epoch(cfg, 1.0) == pytest.approx(cos2 / 2)
    assert lr_at_epoch(cfg, 5.0) == pytest.approx(0.2)
    assert lr_at_epoch(cfg, 10.0) == pytest.approx(0.0)


def test_steps_policy():
    cfg = load_config(None, ["SOLVER.LR_POLICY", "steps_with_relative_lrs", "SOLVER.BASE_LR", "0.01",
                             "SOLVER.STEPS", "[0, 4, 8]", "SOLVER.LRS", "[1, 0.1, 0.01]"])
    assert [lr_at_epoch(cfg, e) for e in (0, 3.99, 4, 7.5, 9)] == pytest.approx([0.01, 0.01, 0.001, 0.001, 0.0001])


def test_optimizers_and_no_decay_on_bn():
    model = nn.Sequential(nn.Conv3d(3, 4, 1), nn.BatchNorm3d(4))
    for method, cls in (("sgd", "SGD"), ("adam", "Adam"), ("adamw", "AdamW")):
        opt = build_optimizer(load_config(None, ["SOLVER.OPTIMIZING_METHOD", method]), model)
        assert type(opt).__name__ == cls
        decays = sorted((g["weight_decay"], len(g["params"])) for g in opt.param_groups)
        assert decays == [(0.0, 3), (1e-4, 1)]  # conv bias + BN weight/bias undecayed
