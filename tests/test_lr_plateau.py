"""SOLVER.LR_POLICY plateau: ReduceLROnPlateau's rules over validations, its checkpointed state
and exact resume through real (tiny) training runs."""

import math
import os
import random

import pytest
import torch

from vidnl.config import ConfigError, load_config
from vidnl.engine import train
from vidnl.engine.checkpoint import list_checkpoints
from vidnl.engine.optim import PlateauSchedule, lr_at_epoch
from vidnl.models.weights import load_checkpoint_file

from conftest import tiny_opts


def reference_lrs(metrics, lr, factor, patience, threshold, threshold_mode, cooldown, min_lr, mode, eps=1e-8):
    """The lr after each metric, written from ReduceLROnPlateau's documentation: "Reduce learning
    rate when a metric has stopped improving ... if no improvement is seen for a 'patience'
    number of epochs, the learning rate is reduced", new_lr = max(lr * factor, min_lr) applied
    only if the change exceeds eps; rel: best * (1 ± threshold), abs: best ± threshold; cooldown:
    epochs to wait before resuming normal operation after the lr has been reduced."""
    best = None  # None: nothing seen yet (any number improves on it)
    bad, wait, out = 0, 0, []
    for m in metrics:
        if best is None:
            better = not math.isnan(m)
        else:  # the documented dynamic thresholds
            if mode == "max":
                bar = best + threshold if threshold_mode == "abs" else best * (1 + threshold)
                better = m > bar
            else:
                bar = best - threshold if threshold_mode == "abs" else best * (1 - threshold)
                better = m < bar
        if better:
            best, bad = m, 0
        else:
            bad = bad + 1
        if wait:
            wait, bad = wait - 1, 0
        if bad == patience + 1:
            reduced = max(lr * factor, min_lr)
            if lr - reduced > eps:
                lr = reduced
            wait, bad = cooldown, 0
        out.append(lr)
    return out


def torch_lrs(metrics, lr, **kw):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **kw)
    out = []
    for m in metrics:
        sched.step(m)
        out.append(opt.param_groups[0]["lr"])
    return out


def ours(metrics, lr, **kw):
    s = PlateauSchedule(lr, **kw)
    out = []
    for m in metrics:
        s.step(m)
        out.append(s.lr)
    return out


def metric_sequence(rng, n, mode):
    """Accuracy-like values in percent: noisy rises, flat stretches, exact repeats and small steps
    near the threshold (mode "min": the same, negated into a loss-like falling curve)."""
    vals, v = [], rng.uniform(5, 30)
    for _ in range(n):
        r = rng.random()
        if r < 0.3:
            v += rng.uniform(0.5, 5)
        elif r < 0.5:
            v += rng.choice([0.0, 0.5, 1.0, 1.5])  # ties and steps around threshold 1.0
        else:
            v -= rng.uniform(0, 3)
        v = min(max(v, 0.0), 100.0)
        vals.append(round(v, 2))
    return vals if mode == "max" else [100.0 - x for x in vals]


SETTINGS = [
    dict(factor=0.1, patience=10, threshold=1.0, threshold_mode="abs", cooldown=0, min_lr=0.0, mode="max"),
    dict(factor=0.1, patience=0, threshold=1.0, threshold_mode="abs", cooldown=0, min_lr=0.0, mode="max"),
    dict(factor=0.5, patience=2, threshold=0.01, threshold_mode="rel", cooldown=0, min_lr=0.0, mode="max"),
    dict(factor=0.3, patience=1, threshold=0.5, threshold_mode="abs", cooldown=2, min_lr=1e-4, mode="max"),
    dict(factor=0.2, patience=3, threshold=1e-4, threshold_mode="rel", cooldown=1, min_lr=2e-3, mode="min"),
    dict(factor=0.5, patience=1, threshold=0.0, threshold_mode="abs", cooldown=3, min_lr=0.0, mode="min"),
]


@pytest.mark.parametrize("setting", SETTINGS)
def test_lr_sequence_matches_reference_and_torch(setting):
    rng = random.Random(7)
    checked_reductions = 0
    for trial in range(40):
        metrics = metric_sequence(rng, 60, setting["mode"])
        ref = reference_lrs(metrics, 0.1, **setting)
        got = ours(metrics, 0.1, **setting)
        tor = torch_lrs(metrics, 0.1, **setting)
        assert got == pytest.approx(ref, rel=1e-12, abs=0), (trial, metrics)
        assert got == pytest.approx(tor, rel=1e-12, abs=0), (trial, metrics)
        checked_reductions += sum(b < a for a, b in zip([0.1] + ref, ref))
    assert checked_reductions >= 20  # the sequences do exercise reductions


def test_hand_checked_sequence():
    """Official defaults (patience 10, threshold 1.0 point abs, factor 0.1), worked by hand."""
    s = PlateauSchedule(1e-4, factor=0.1, patience=10, threshold=1.0, threshold_mode="abs")
    seq = [10.0, 20.0, 20.9] + [20.5] * 9   # 20.9 is not > 20 + 1: bad validations 1..10
    for m in seq:
        assert not s.step(m)
    assert (s.best, s.num_bad, s.lr) == (20.0, 10, 1e-4)
    assert s.step(21.0)                       # the 11th bad validation (21.0 is not > 21.0) reduces
    assert s.lr == pytest.approx(1e-5) and s.num_bad == 0
    assert not s.step(21.01)                  # > 20 + 1: improves, best 21.01
    assert s.best == 21.01 and s.num_bad == 0
    assert not s.step(float("nan")) and s.num_bad == 1  # NaN never improves


def test_min_lr_and_eps():
    s = PlateauSchedule(1e-3, factor=0.1, patience=0, threshold=0.0, threshold_mode="abs", min_lr=5e-5)
    s.step(1.0)
    assert s.step(1.0) and s.lr == pytest.approx(1e-4)
    assert s.step(1.0) and s.lr == pytest.approx(5e-5)   # clipped to min_lr
    assert not s.step(1.0) and s.lr == pytest.approx(5e-5)
    t = PlateauSchedule(1e-8, factor=0.1, patience=0, threshold=0.0, threshold_mode="abs")
    t.step(1.0)
    assert not t.step(1.0) and t.lr == 1e-8             # a change of <= eps is not applied


def test_state_dict_round_trip_continues_identically():
    rng = random.Random(3)
    metrics = metric_sequence(rng, 50, "max")
    kw = SETTINGS[3]
    whole = ours(metrics, 0.1, **kw)
    for cut in (1, 7, 20, 33):
        a = PlateauSchedule(0.1, **kw)
        for m in metrics[:cut]:
            a.step(m)
        state = a.state_dict()
        assert all(isinstance(v, (int, float, str)) for v in state.values())
        b = PlateauSchedule(0.1, **kw)
        b.load_state_dict(state)
        rest = []
        for m in metrics[cut:]:
            b.step(m)
            rest.append(b.lr)
        assert rest == pytest.approx(whole[cut:], rel=1e-12)
        assert (b.best, b.num_bad, b.cooldown_counter, b.steps) == (
            reference_state(metrics, **kw))


def reference_state(metrics, **kw):
    s = PlateauSchedule(0.1, **kw)
    for m in metrics:
        s.step(m)
    return s.best, s.num_bad, s.cooldown_counter, s.steps


def test_load_state_dict_rejects_other_states():
    s = PlateauSchedule(0.1)
    with pytest.raises(ValueError, match="plateau"):
        s.load_state_dict({"policy": "cosine"})
    with pytest.raises(ValueError, match="missing"):
        s.load_state_dict({"policy": "plateau", "lr": 0.1})


def test_lr_at_epoch_with_plateau_and_warmup():
    cfg = load_config(None, ["SOLVER.LR_POLICY", "plateau", "SOLVER.BASE_LR", "0.2", "SOLVER.WARMUP_EPOCHS", "2",
                             "SOLVER.WARMUP_START_LR", "0.0"])
    s = PlateauSchedule.from_cfg(cfg)
    assert (s.factor, s.patience, s.threshold, s.threshold_mode, s.cooldown, s.min_lr, s.mode) == (
        0.1, 10, 1.0, "abs", 0, 0.0, "max")
    assert lr_at_epoch(cfg, 0.5, s) == pytest.approx(0.05)
    assert lr_at_epoch(cfg, 3.0, s) == pytest.approx(0.2)
    s.lr = 0.02  # after a reduction the warm-up (if still running) ramps towards the new lr
    assert lr_at_epoch(cfg, 1.0, s) == pytest.approx(0.01)
    assert lr_at_epoch(cfg, 7.5, s) == pytest.approx(0.02)
    with pytest.raises(ValueError, match="PlateauSchedule"):
        lr_at_epoch(cfg, 3.0)


@pytest.mark.parametrize("opts, message", [
    (["TRAIN.EVAL_PERIOD", "0"], "SOLVER.LR_POLICY plateau lowers the lr when the validation metric stops "
                                 "improving, but TRAIN.EVAL_PERIOD is 0"),
    (["SOLVER.PLATEAU_FACTOR", "1.0"], "SOLVER.PLATEAU_FACTOR: must be in (0, 1), got 1.0"),
    (["SOLVER.PLATEAU_FACTOR", "0.0"], "SOLVER.PLATEAU_FACTOR: must be in (0, 1), got 0.0"),
    (["SOLVER.PLATEAU_PATIENCE", "-1"], "SOLVER.PLATEAU_PATIENCE: must be >= 0, got -1"),
    (["SOLVER.PLATEAU_COOLDOWN", "-2"], "SOLVER.PLATEAU_COOLDOWN: must be >= 0, got -2"),
    (["SOLVER.PLATEAU_THRESHOLD", "-0.5"], "SOLVER.PLATEAU_THRESHOLD: must be >= 0, got -0.5"),
    (["SOLVER.PLATEAU_MIN_LR", "-1e-5"], "SOLVER.PLATEAU_MIN_LR: must be >= 0"),
    (["SOLVER.PLATEAU_THRESHOLD_MODE", "relative"], "SOLVER.PLATEAU_THRESHOLD_MODE: 'relative' is not allowed"),
])
def test_config_errors(opts, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, ["SOLVER.LR_POLICY", "plateau"] + opts)
    assert message in str(info.value)


def test_plateau_without_validation_is_fine_when_not_training():
    cfg = load_config(None, ["SOLVER.LR_POLICY", "plateau", "TRAIN.EVAL_PERIOD", "0", "TRAIN.ENABLE", "False"])
    assert cfg.SOLVER.LR_POLICY == "plateau"


# -- real runs ---------------------------------------------------------------------------------
# threshold 1000 points: only the first validation improves (on -inf), so the lr sequence does not
# depend on the accuracies of the tiny model. Patience 0, cooldown 1, factor 0.5: validation 1
# improves, 2 reduces (cooldown 1 starts), 3 is ignored by the cooldown, 4 reduces.
PLATEAU = {"SOLVER.LR_POLICY": "plateau", "SOLVER.PLATEAU_PATIENCE": 0, "SOLVER.PLATEAU_COOLDOWN": 1,
           "SOLVER.PLATEAU_THRESHOLD": 1000.0, "SOLVER.PLATEAU_FACTOR": 0.5, "SOLVER.BASE_LR": 0.05,
           "TRAIN.EVAL_PERIOD": 1, "TEST.ENABLE": False, "TEST.NUM_ENSEMBLE_VIEWS": 1, "TEST.NUM_SPATIAL_CROPS": 1,
           "SOLVER.OPTIMIZING_METHOD": "sgd", "TRAIN.KEEP_CHECKPOINTS": 0}


def run_lrs(out_dir):
    """(lr of each finished epoch's last step, schedule state) from the run's epoch checkpoints."""
    lrs, states = [], []
    for p in list_checkpoints(out_dir):
        ck = load_checkpoint_file(p)
        lrs.append(ck["optimizer_state"]["param_groups"][0]["lr"])
        states.append(ck["lr_scheduler_state"])
    return lrs, states


def test_resume_continues_the_plateau_schedule_exactly(tiny_dataset, tmp_path):
    """4 epochs straight == 2 epochs, stop, resume, 2 more (lr of every epoch, schedule state and
    weights); the resume lands inside the cooldown after a reduction."""
    straight = str(tmp_path / "straight")
    train(load_config(None, tiny_opts(tiny_dataset, straight, **PLATEAU, **{"SOLVER.MAX_EPOCH": 4})))
    resumed = str(tmp_path / "resumed")
    train(load_config(None, tiny_opts(tiny_dataset, resumed, **PLATEAU, **{"SOLVER.MAX_EPOCH": 2})))
    _, states = run_lrs(resumed)
    assert states[-1] == {"policy": "plateau", "lr": pytest.approx(0.025), "best": states[0]["best"],
                          "num_bad": 0, "cooldown_counter": 1, "steps": 2}
    out = train(load_config(None, tiny_opts(tiny_dataset, resumed, **PLATEAU, **{"SOLVER.MAX_EPOCH": 4})))
    assert out["last_epoch"]["epoch"] == 4

    lrs_a, states_a = run_lrs(straight)
    lrs_b, states_b = run_lrs(resumed)
    # the lr of epochs 1..4: after validations (improve), (reduce), (cooldown), (reduce: epoch 5)
    assert lrs_a == pytest.approx([0.05, 0.05, 0.025, 0.025], rel=1e-12)
    assert lrs_b == pytest.approx(lrs_a, rel=1e-12)
    assert states_b == states_a and states_a[-1]["lr"] == pytest.approx(0.0125) and states_a[-1]["steps"] == 4
    a = load_checkpoint_file(list_checkpoints(straight)[-1])["model_state"]
    b = load_checkpoint_file(list_checkpoints(resumed)[-1])["model_state"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=k)
    assert os.path.isfile(os.path.join(straight, "checkpoints", "checkpoint_best.pyth"))

    # continuing another run's checkpoint (TRAIN.CHECKPOINT_LOAD_OPTIMIZER) takes its schedule too
    cont = str(tmp_path / "continued")
    train(load_config(None, tiny_opts(tiny_dataset, cont, **PLATEAU, **{
        "SOLVER.MAX_EPOCH": 4, "TRAIN.CHECKPOINT_FILE_PATH": list_checkpoints(straight)[1],
        "TRAIN.CHECKPOINT_LOAD_OPTIMIZER": True})))
    lrs_c, states_c = run_lrs(cont)
    assert lrs_c == pytest.approx(lrs_a[2:], rel=1e-12) and states_c[-1]["steps"] == 4


def test_extending_a_run_keeps_the_schedule(tiny_dataset, tmp_path):
    """EVAL_PERIOD 2: the extra validation after the last epoch of a 3-epoch run does not step the
    schedule, so extending it to 4 epochs gives the 4-epoch run's schedule."""
    opts = {**PLATEAU, "TRAIN.EVAL_PERIOD": 2, "SOLVER.PLATEAU_COOLDOWN": 0}
    straight = str(tmp_path / "straight")
    train(load_config(None, tiny_opts(tiny_dataset, straight, **opts, **{"SOLVER.MAX_EPOCH": 4})))
    extended = str(tmp_path / "extended")
    train(load_config(None, tiny_opts(tiny_dataset, extended, **opts, **{"SOLVER.MAX_EPOCH": 3})))
    assert run_lrs(extended)[1][-1]["steps"] == 1  # validations after epochs 2 and 3; only the first steps
    train(load_config(None, tiny_opts(tiny_dataset, extended, **opts, **{"SOLVER.MAX_EPOCH": 4})))
    lrs_a, states_a = run_lrs(straight)
    lrs_b, states_b = run_lrs(extended)
    assert lrs_a == pytest.approx([0.05] * 4, rel=1e-12)
    assert states_a[-1]["lr"] == pytest.approx(0.025) and states_a[-1]["steps"] == 2
    assert lrs_b == pytest.approx(lrs_a, rel=1e-12) and states_b[-1] == states_a[-1]


def test_resuming_with_another_eval_period_warns(caplog):
    from vidnl.engine.run_manifest import check_resume_config

    saved = load_config(None, ["SOLVER.LR_POLICY", "plateau", "TRAIN.EVAL_PERIOD", "1"])
    now = load_config(None, ["SOLVER.LR_POLICY", "plateau", "TRAIN.EVAL_PERIOD", "2"])
    with caplog.at_level("WARNING"):
        check_resume_config("ck.pyth", {"cfg": saved.dump()}, saved)
        assert "EVAL_PERIOD" not in caplog.text
        check_resume_config("ck.pyth", {"cfg": saved.dump()}, now)
    assert "resuming ck.pyth with TRAIN.EVAL_PERIOD 2 (the checkpoint's run had 1): the plateau" in caplog.text
