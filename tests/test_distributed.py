"""Real multi-process runs (torchrun, gloo, 2 processes on the CPU)."""

import json
import os
import shutil
import sys

import pytest
import torch

from vidnl.data.samplers import GlobalBatchSampler, shard_indices
from vidnl.engine.checkpoint import list_checkpoints
from vidnl.models.weights import load_checkpoint_file

from conftest import ROOT, run, run_two_nodes, tiny_opts


def test_global_batch_sampler_splits_each_global_batch():
    one = list(GlobalBatchSampler(10, 4, seed=3))
    assert len(one) == 8 and len(set(one)) == 8  # drop-last, no repeats
    r0, r1 = (list(GlobalBatchSampler(10, 4, seed=3, rank=r, world_size=2)) for r in (0, 1))
    assert [r0[0:2] + r1[0:2], r0[2:4] + r1[2:4]] == [one[0:4], one[4:8]]
    s = GlobalBatchSampler(10, 4, seed=3)
    s.set_epoch(1)
    assert list(s) != one
    with pytest.raises(ValueError, match="divisible"):
        GlobalBatchSampler(10, 5, seed=0, world_size=2)


def test_eval_shards_cover_every_video_once():
    shards = [shard_indices(7, r, 3) for r in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(7))


def test_two_processes_match_one(tiny_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    lines = open(data / "test.csv").read().splitlines()
    (data / "test.csv").write_text("\n".join(lines + lines[:1]) + "\n")  # 5 videos: not divisible by 2
    # BN in training mode and dropout on: BN statistics over the global batch (GlobalBatchNorm,
    # all-reduce over gloo) and dropout masks drawn per global step make 2 processes train as 1.
    extra = {"SOLVER.MAX_EPOCH": 1, "BN.FROZEN": False, "MODEL.DROPOUT_RATE": 0.5, "TRAIN.EVAL_PERIOD": 0,
             "SOLVER.OPTIMIZING_METHOD": "sgd", "SOLVER.LR_POLICY": "constant", "LOG_PERIOD": 1}
    script = os.path.join(ROOT, "tools", "run_net.py")
    single, double = str(tmp_path / "one"), str(tmp_path / "two")
    run([sys.executable, script] + tiny_opts(str(data), single, **extra))
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", script]
        + tiny_opts(str(data), double, **extra))
    log = open(os.path.join(double, "log.txt")).read()
    assert "x 2 processes" in log and "global batch 4 = 2 x 2" in log and "GlobalBatchNorm" in log
    # The logged training statistics cover both processes' shards: equal to one process's.
    def stats(run, kind):
        lines = [l.split("json_stats: ", 1)[1] for l in open(os.path.join(run, "log.txt")) if "json_stats" in l]
        return [json.loads(l) for l in lines if json.loads(l)["_type"] == kind]
    for kind, keys in (("train_iter", ("loss", "top1_err")), ("train_epoch", ("loss", "top1_acc", "clips"))):
        one, two = stats(single, kind), stats(double, kind)
        assert len(one) == len(two) > 0
        for x, y in zip(one, two):
            for key in keys:
                assert abs(x[key] - y[key]) <= 1e-4 * max(1.0, abs(x[key])), (kind, key, x, y)
    a = load_checkpoint_file(list_checkpoints(single)[-1])["model_state"]
    b = load_checkpoint_file(list_checkpoints(double)[-1])["model_state"]
    # Same data in every global step, gradients averaged over the processes instead of over one
    # batch: equal up to float32 summation order (~1e-7 relative per step, 2 steps here).
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)

    # Distributed test of the same weights: every video scored once, metrics equal to one process.
    ckpt = list_checkpoints(single)[-1]
    test_opts = {**extra, "TRAIN.ENABLE": False, "TEST.CHECKPOINT_FILE_PATH": ckpt}
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", script]
        + tiny_opts(str(data), str(tmp_path / "two_test"), **test_opts))
    p1 = json.load(open(os.path.join(single, "predictions_test.json")))
    p2 = json.load(open(os.path.join(tmp_path / "two_test", "predictions_test.json")))
    assert p2["num_videos"] == p1["num_videos"] == 5 and p2["num_clips"] == p1["num_clips"] == 30
    assert [p["index"] for p in p2["predictions"]] == list(range(5))
    for key in ("video_top1", "video_top5", "clip_top1", "video_top1_mean_logits"):
        assert p1[key] == p2[key]
    for x, y in zip(p1["predictions"], p2["predictions"]):
        assert x["pred"] == y["pred"]
        torch.testing.assert_close(torch.tensor(x["scores"]), torch.tensor(y["scores"]), rtol=0, atol=1e-5)


def test_two_nodes_match_one(tiny_dataset, tmp_path):
    """Two machines simulated on this one (torchrun --nnodes 2, c10d rendezvous at 127.0.0.1, one
    gloo process per node): training and test give the one-process weights and metrics."""
    extra = {"SOLVER.MAX_EPOCH": 1, "BN.FROZEN": False, "MODEL.DROPOUT_RATE": 0.5, "TRAIN.EVAL_PERIOD": 0,
             "SOLVER.OPTIMIZING_METHOD": "sgd", "SOLVER.LR_POLICY": "constant"}
    script = os.path.join(ROOT, "tools", "run_net.py")
    single, nodes = str(tmp_path / "one"), str(tmp_path / "nodes")
    run([sys.executable, script] + tiny_opts(tiny_dataset, single, **extra))
    run_two_nodes([script] + tiny_opts(tiny_dataset, nodes, **extra))
    assert "x 2 processes" in open(os.path.join(nodes, "log.txt")).read()
    a = load_checkpoint_file(list_checkpoints(single)[-1])["model_state"]
    b = load_checkpoint_file(list_checkpoints(nodes)[-1])["model_state"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    p1 = json.load(open(os.path.join(single, "predictions_test.json")))
    p2 = json.load(open(os.path.join(nodes, "predictions_test.json")))
    assert p1["num_videos"] == p2["num_videos"] > 0
    for key in ("video_top1", "clip_top1", "video_top1_mean_logits"):
        assert abs(p1[key] - p2[key]) < 1e-9, key
    for x, y in zip(p1["predictions"], p2["predictions"]):
        torch.testing.assert_close(torch.tensor(x["scores"]), torch.tensor(y["scores"]), rtol=0, atol=1e-4)


def _torchrun_workers(agent_pid: int) -> dict[int, int]:
    """LOCAL_RANK -> pid of the worker processes torchrun's agent ``agent_pid`` started (/proc)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
            env = open(f"/proc/{entry}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if ppid == agent_pid:
            values = dict(kv.split(b"=", 1) for kv in env if b"=" in kv)
            if b"LOCAL_RANK" in values:
                found[int(values[b"LOCAL_RANK"])] = int(entry)
    return found


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds torchrun's workers through /proc")
def test_elastic_restart_after_a_killed_worker_finishes_as_the_uninterrupted_run(tiny_dataset, tmp_path):
    """torchrun --max-restarts 1, worker 1 SIGKILLed after the first mid-epoch checkpoint: the
    agent restarts both workers, they join a fresh process group (keys prefixed per restart
    round; the dead round's keys made gloo connect to dead addresses), resume from the checkpoint
    and end with the uninterrupted 2-process run's weights."""
    import glob
    import signal
    import subprocess
    import time

    extra = {"SOLVER.MAX_EPOCH": 4, "TRAIN.EVAL_PERIOD": 0, "TEST.ENABLE": False, "TRAIN.CHECKPOINT_PERIOD_ITERS": 1,
             "SOLVER.LR_POLICY": "constant", "MODEL.DROPOUT_RATE": 0.5, "BN.FROZEN": False}
    script = os.path.join(ROOT, "tools", "run_net.py")
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    run(launch + [script] + tiny_opts(tiny_dataset, straight, **extra))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(launch + ["--max-restarts", "1", script] + tiny_opts(tiny_dataset, killed, **extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    victim, start = None, time.time()
    while victim is None and proc.poll() is None and time.time() - start < 300:
        if glob.glob(os.path.join(killed, "checkpoints", "checkpoint_epoch_*_iter_*.pyth")):
            victim = _torchrun_workers(proc.pid).get(1)
            if victim:
                os.kill(victim, signal.SIGKILL)
        time.sleep(0.005)
    out, err = proc.communicate(timeout=600)
    assert victim is not None, "the job ended before a worker could be killed"
    assert proc.returncode == 0, out[-2000:] + err[-3000:]
    log = open(os.path.join(killed, "log.txt")).read()
    assert "resumed from" in log and "_iter_" in log.split("resumed from", 1)[1].splitlines()[0]
    a = load_checkpoint_file(list_checkpoints(straight)[-1])["model_state"]
    b = load_checkpoint_file(list_checkpoints(killed)[-1])["model_state"]
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_each_restart_round_gets_its_own_store_keys(monkeypatch):
    """What makes restarts reliable, on its own: init_distributed joins the group through a store
    whose keys are prefixed with the restart round (TORCHELASTIC_RESTART_COUNT), so a restarted
    round never reads the dead round's addresses."""
    import torch.distributed as dist

    from vidnl.engine import distributed as D

    base, seen = dist.HashStore(), {}
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "3")
    monkeypatch.setattr(D, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "rendezvous", lambda url, **kw: (x for x in [(base, 1, 2)]))
    monkeypatch.setattr(D.atexit, "register", lambda fn: None)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: seen.update(kw, backend=backend))
    D.init_distributed(use_cuda=False)
    assert seen["backend"] == "gloo" and seen["rank"] == 1 and seen["world_size"] == 2
    seen["store"].set("rank_0_address", "127.0.0.1:1234")
    assert base.get("/vidnl/restart_3/rank_0_address") == b"127.0.0.1:1234"
    assert not base.check(["rank_0_address"])
