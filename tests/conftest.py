"""Shared fixtures: tiny real videos (H.264 via PyAV) and tiny configs."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from data_prep import make_synthetic_motion as synth  # noqa: E402

SHARED_VIDEOS = os.path.join(ROOT, "..", "shared", "data", "videos")


def _decord_available() -> bool:
    from vidnl.data.decoding import decord_available

    return decord_available()


# decord is an extra (wheels for x86_64 Linux/Windows only): its tests skip where it is missing
needs_decord = pytest.mark.skipif(not _decord_available(), reason="decord is not installed (pip install 'vidnl[decord]')")
BACKENDS = [pytest.param("decord", marks=needs_decord), "pyav"]


def write_video(path: str, frames: np.ndarray, fps: int = 25) -> str:
    synth.write_mp4(path, frames, fps)
    return path


def index_video(num_frames: int, height: int = 48, width: int = 64) -> np.ndarray:
    """Frames whose grey level encodes their index (4 * i), to check which frames were read."""
    return np.stack([np.full((height, width, 3), 4 * i, np.uint8) for i in range(num_frames)])


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> str:
    """A 2-class synthetic motion dataset: 8 train, 4 val, 4 test videos of 12 frames 64×48."""
    out = str(tmp_path_factory.mktemp("tiny_motion"))
    synth.main(["--out", out, "--num-classes", "2", "--train", "4", "--val", "2", "--test", "2",
                "--frames", "12", "--height", "48", "--width", "64", "--workers", "1"])
    return out


def tiny_opts(data_dir: str, out_dir: str, **extra) -> list[str]:
    """Overrides for a tiny, fast I3D-R18 + SNL run on the tiny dataset."""
    opts = {
        "OUTPUT_DIR": out_dir, "DATA.PATH_TO_DATA_DIR": data_dir, "NUM_GPUS": 0, "NUM_THREADS": 1,
        "MODEL.NUM_CLASSES": 2, "MODEL.DROPOUT_RATE": 0.3, "RESNET.DEPTH": 18, "RESNET.BASE_WIDTH": 4,
        "DATA.NUM_FRAMES": 4, "DATA.SAMPLING_RATE": 2, "DATA.TRAIN_JITTER_SCALES": "[32, 40]",
        "DATA.TRAIN_CROP_SIZE": 32, "DATA.TEST_CROP_SIZE": 32, "TRAIN.BATCH_SIZE": 4,
        "TEST.BATCH_SIZE": 8, "TEST.NUM_ENSEMBLE_VIEWS": 2, "TEST.NUM_SPATIAL_CROPS": 3,
        "DATA_LOADER.NUM_WORKERS": 0, "NONLOCAL.LOCATION": "[[], [1], [], []]", "NONLOCAL.POOL": "[]",
        "SOLVER.MAX_EPOCH": 2, "SOLVER.BASE_LR": 0.05, "SOLVER.LR_POLICY": "cosine",
        "TENSORBOARD.ENABLE": False, "LOG_PERIOD": 1,
    }
    opts.update(extra)
    flat = []
    for k, v in opts.items():
        flat += [k, str(v)]
    return flat


def run(cmd: list[str]):
    """Run ``cmd`` in the repository (one OpenMP thread); it must exit 0 (else its output tail is
    the assertion message). Returns the CompletedProcess."""
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def run_two_nodes(args: list[str], timeout: int = 600) -> None:
    """``python -m torch.distributed.run ... args`` as two nodes of one process each, rendezvous
    over c10d at 127.0.0.1 (what ``--nnodes 2`` on two machines does, simulated on this one):
    node 0 hosts the store. Both must exit 0."""
    import socket
    import subprocess

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
         "--node_rank", str(rank), "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}",
         "--rdzv_id", f"vidnl-test-{port}", "--rdzv_conf", f"is_host={int(rank == 0)}"] + list(args),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env) for rank in (0, 1)]
    outs = []
    try:
        outs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for rank, (p, (out, err)) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"node {rank}: exit {p.returncode}\n{out[-3000:]}\n{err[-3000:]}"


def write_audio_only(path: str, codec: str = "aac", rate: int = 16000, seconds: float = 0.3) -> str:
    """A real file with one mono audio stream (a 440 Hz tone) and no video stream."""
    import av

    with av.open(path, mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = "mono"
        fmt = stream.codec_context.format.name  # aac: fltp, pcm_s16le: s16
        step = 1024
        for start in range(0, int(rate * seconds), step):
            tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(start, start + step) / rate)
            samples = (tone * 32767).astype(np.int16) if fmt == "s16" else tone.astype(np.float32)
            frame = av.AudioFrame.from_ndarray(samples[None], format=fmt, layout="mono")
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(path) as container:  # the file is what the test needs: audio, no video
        assert [s.type for s in container.streams] == ["audio"]
    return path
