"""Re-ID under torchrun: the sharded identity sampler, and real 2-process runs (gloo, CPU) that
train, validate and test like one process and resume exactly."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import run, run_two_nodes
from test_reid_data import write_mars
from test_reid_engine import identity_frame, tiny_opts
from vidnl.config import load_config
from vidnl.data.reid_sampling import RandomIdentitySampler
from vidnl.engine import reid as engine
from vidnl.engine.checkpoint import list_checkpoints
from vidnl.models.weights import load_checkpoint_file
from vidnl.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIDS = [p for p in range(9) for _ in range(1 + p % 3)]  # 9 identities with 1-3 tracklets


@pytest.mark.parametrize("world", [2, 3, 6])
def test_sharded_sampler_slices_make_the_one_process_batches(world):
    one = RandomIdentitySampler(PIDS, batch_size=6, num_instances=2, seed=5)
    shards = [RandomIdentitySampler(PIDS, 6, 2, seed=5, rank=r, world_size=world) for r in range(world)]
    for epoch, start in ((0, 0), (3, 1)):
        for s in [one] + shards:
            s.set_epoch(epoch, start_step=start)
        batches = [list(s) for s in shards]
        assert all(len(b) == len(one) == 3 - start for b in batches)
        # each rank's batch is its contiguous slice of the global batch, slots (clip seeds) included
        assert [sum((b[step] for b in batches), []) for step in range(len(one))] == list(one)
        assert all(len(b[0]) == 6 // world for b in batches)


def test_sharded_sampler_needs_a_divisible_global_batch():
    with pytest.raises(ConfigError, match=r"TRAIN.BATCH_SIZE=6 .* divisible by the 4 processes"):
        RandomIdentitySampler(PIDS, 6, 2, rank=0, world_size=4)


@pytest.fixture(scope="module")
def tiny_mars(tmp_path_factory):
    """MARS layout: 6 training identities (a tracklet in each of 2 cameras); 5 test identities with
    a camera-1 query and a camera-2 gallery tracklet, two with a second camera-1 tracklet, and a
    distractor: 5 queries, 8 gallery tracklets (so a query/gallery order mix-up changes the
    metrics)."""
    train = [(p, c, 8) for p in range(1, 7) for c in (1, 2)]
    test, query = [], []
    for p in range(101, 106):
        query.append(len(test))
        test += [(p, 1, 8), (p, 2, 8)] + ([(p, 1, 6)] if p < 103 else [])
    test += [(0, 3, 6)]
    return write_mars(str(tmp_path_factory.mktemp("tiny_mars")), train, test, query, identity_frame)


def stats(out_dir, kind):
    lines = [l.split("json_stats: ", 1)[1] for l in open(os.path.join(out_dir, "log.txt")) if "json_stats: " in l]
    return [s for s in map(json.loads, lines) if s["_type"] == kind]


def test_two_processes_match_one_and_resume(tiny_mars, tmp_path):
    # Global batch 6 = 3 identities x 2 tracklets, 3 per process: one identity is cut between the
    # processes (the triplet term is taken over the gathered global batch). BN in training mode
    # (GlobalBatchNorm over gloo), SGD, validation every epoch, then the test.
    extra = {"TRAIN.BATCH_SIZE": 6, "REID.NUM_INSTANCES": 2,
             "SOLVER.MAX_EPOCH": 2, "TRAIN.EVAL_PERIOD": 1, "TRAIN.CHECKPOINT_PERIOD": 1, "BN.FROZEN": False,
             "SOLVER.OPTIMIZING_METHOD": "sgd", "SOLVER.LR_POLICY": "constant", "SOLVER.BASE_LR": 0.01,
             "LOG_PERIOD": 1, "TEST.BATCH_SIZE": 4}
    script = [os.path.join(ROOT, "tools", "run_net.py"), "--cfg", os.path.join(ROOT, "configs", "MARS", "R50tp.yaml")]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    single, double = str(tmp_path / "one"), str(tmp_path / "two")
    cfg = load_config(script[2], tiny_opts(tiny_mars, single, **extra))  # one process: here, in pytest's
    engine.train(cfg)
    engine.test(cfg)
    run(torchrun + script + tiny_opts(tiny_mars, double, **extra, **{"TRAIN.CHECKPOINT_PERIOD_ITERS": 1,
                                                                   "TRAIN.KEEP_CHECKPOINTS": 0}))
    log = open(os.path.join(double, "log.txt")).read()
    assert "x 2 processes" in log and "global batch 6 = 2 x 3" in log and "GlobalBatchNorm" in log

    # logged training statistics (summed over the processes) and validation metrics equal one process's
    for kind, keys in (("train_iter", ("loss", "ce", "triplet", "id_top1_err")),
                       ("train_epoch", ("loss", "ce", "triplet", "id_top1_acc", "clips")),
                       ("val_epoch", ("rank1", "mAP", "num_queries"))):
        one, two = stats(single, kind), stats(double, kind)
        assert len(one) == len(two) > 0, kind
        for x, y in zip(one, two):
            for key in keys:
                assert abs(x[key] - y[key]) <= 1e-4 * max(1.0, abs(x[key])), (kind, key, x, y)
    assert stats(single, "train_epoch")[0]["triplet"] > 0

    # the same weights, up to float summation order
    a = load_checkpoint_file(os.path.join(single, "checkpoints", "checkpoint_epoch_00002.pyth"))["model_state"]
    b = load_checkpoint_file(os.path.join(double, "checkpoints", "checkpoint_epoch_00002.pyth"))["model_state"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)

    # the test with sharded feature extraction: the one-process CMC/mAP
    r1 = json.load(open(os.path.join(single, "reid_results_test.json")))
    r2 = json.load(open(os.path.join(double, "reid_results_test.json")))
    assert r1["num_queries"] == r2["num_queries"] == 5 and r2["num_gallery_tracklets"] == 8
    for key in ("rank1", "rank5", "mAP"):
        assert abs(r1[key] - r2[key]) <= 1e-6, key
    np.testing.assert_allclose(r1["cmc"], r2["cmc"], rtol=0, atol=1e-6)
    assert stats(double, "test_reid")[0]["world_size"] == 2

    # two machines simulated on this one (torchrun --nnodes 2, c10d rendezvous, one process per
    # node): the same validation and test metrics as one process
    nodes = str(tmp_path / "nodes")
    run_two_nodes(script + tiny_opts(tiny_mars, nodes, **extra))
    assert "x 2 processes" in open(os.path.join(nodes, "log.txt")).read()
    for x, y in zip(stats(single, "val_epoch"), stats(nodes, "val_epoch")):
        for key in ("rank1", "mAP"):
            assert abs(x[key] - y[key]) <= 1e-4 * max(1.0, abs(x[key])), (key, x, y)
    r3 = json.load(open(os.path.join(nodes, "reid_results_test.json")))
    for key in ("rank1", "rank5", "mAP"):
        assert abs(r1[key] - r3[key]) <= 1e-6, key

    # a 2-process run killed with SIGKILL (agent and workers) once its first mid-epoch checkpoint
    # exists, then started again, ends with the weights of the uninterrupted 2-process run
    import signal
    import time

    killed = str(tmp_path / "killed")
    opts = tiny_opts(tiny_mars, killed, **extra, **{"TRAIN.CHECKPOINT_PERIOD_ITERS": 1, "TEST.ENABLE": False})
    proc = subprocess.Popen(torchrun + script + opts, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    target = os.path.join(killed, "checkpoints", "checkpoint_epoch_00001_iter_000001.pyth")
    deadline = time.time() + 300
    while not os.path.exists(target) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert "checkpoint_epoch_00002.pyth" not in [os.path.basename(p) for p in list_checkpoints(killed)]
    run(torchrun + script + opts)
    assert "iterations done" in open(os.path.join(killed, "log.txt")).read()
    c = load_checkpoint_file(os.path.join(killed, "checkpoints", "checkpoint_epoch_00002.pyth"))["model_state"]
    for k in b:
        assert torch.equal(b[k], c[k]), k
