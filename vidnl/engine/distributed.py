"""torch.distributed helpers. Launch with torchrun; each process reads RANK / WORLD_SIZE /
LOCAL_RANK from the environment. Backend: nccl on GPU, gloo on CPU.

    torchrun --nproc_per_node 2 tools/run_net.py --cfg X.yaml
    torchrun --nnodes 2 --node_rank R --nproc_per_node 8 --rdzv_endpoint HOST:29500 tools/run_net.py --cfg X.yaml

``TRAIN.BATCH_SIZE`` is the global batch (split evenly over the processes). What is identical
across process counts and what is not: docs/distributed.md. Scale ``SOLVER.BASE_LR`` linearly
with the global batch when you change it.

This module holds the process-group functions only; which indices each process reads is
``vidnl.data.samplers``.
"""

from __future__ import annotations

import atexit
import os

import torch
import torch.distributed as dist

# The samplers live in vidnl.data.samplers (data never imports the engine); re-exported here for
# user code written against this module.
from ..data.samplers import GlobalBatchSampler, shard_indices  # noqa: F401


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def init_distributed(use_cuda: bool) -> None:
    """Join the process group when started by torchrun (no-op otherwise or if already joined).

    The group's keys live under a prefix of the restart round (``TORCHELASTIC_RESTART_COUNT``):
    after ``torchrun --max-restarts N`` restarts the workers, the elastic agent's store still
    holds the dead round's keys, and gloo then tried to connect to the dead processes' addresses
    (measured: the restarted round failed in 1 of 5 restarts with "connectFullMesh failed ...
    Connection refused")."""
    if not launched_by_torchrun() or is_initialized():
        return
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    handler = dist.rendezvous("env://")
    store, rank, world_size = next(handler)
    handler.close()
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    dist.init_process_group(backend="nccl" if use_cuda else "gloo",
                            store=dist.PrefixStore(f"/vidnl/restart_{attempt}", store), rank=rank,
                            world_size=world_size)
    atexit.register(_leave_group)


def _leave_group() -> None:
    """Destroy the process group at exit, before the interpreter tears down the store and the
    backend's threads (left alone, a worker sometimes aborted at exit: "terminate called without
    an active exception")."""
    if is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - exiting anyway
            pass


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over all processes (``values`` itself without distribution).
    float64 on ``device`` (the backend's device: CUDA for nccl)."""
    if not is_initialized():
        return list(values)
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def all_gather_objects(obj) -> list:
    """Every process's ``obj``, in rank order (a one-element list without distribution)."""
    if not is_initialized():
        return [obj]
    out = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
