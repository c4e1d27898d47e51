"""Re-ID embeddings of your own tracklets, computed as the re-ID test computes them.

A tracklet is a folder of frame images (sorted by file name = temporal order, as the re-ID
datasets list them) or a video file (every decoded frame). As in the test
(``vidnl.engine.reid.extract_features``): every frame is resized to REID.HEIGHT × REID.WIDTH
(``FrameTransform``), the frames are cut into chunks of REID.SEQ_LEN (the last one padded by
repeating its own frames cyclically, ``test_chunks``), normalised with REID.MEAN / REID.STD, each chunk is embedded
by the model in eval mode (forward passes of TEST.BATCH_SIZE clips, autocast when
TRAIN.MIXED_PRECISION) and the tracklet's embedding is the mean of its chunks' embeddings.

    from vidnl.reid_features import extract_features_from_config
    out = extract_features_from_config(cfg, "checkpoint.pyth", ["person1/", "person2.mp4"])
    out["names"], out["features"]  # N names, N×D float32 numpy

A video tracklet is decoded whole at its own resolution (tracklets are short person crops; a
long full-frame video needs frames × height × width × 3 bytes).
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from .data.datasets.reid import FrameTransform, ReIDTestClips, Tracklet
from .data.decoding import DecodeError, read_frames
from .data.reid_sampling import test_chunks
from .errors import ConfigError, VidnlUserError
from .predict import VIDEO_EXTENSIONS

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class TrackletInputError(VidnlUserError, ValueError):
    """A tracklet input named by the user does not exist or holds no frames / videos."""


def _frame_files(folder: str) -> list[str]:
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, f)))


def expand_tracklets(items: Iterable[str]) -> list[str]:
    """Tracklet paths from the inputs: a video file is one tracklet; a folder holding images is
    one tracklet; any other folder stands for the tracklets inside it (its video files and its
    sub-folders, sorted, recursively). A named path that does not exist, or a folder with no
    tracklet in it, is a TrackletInputError."""
    out = []

    def walk(folder: str) -> list[str]:
        if _frame_files(folder):
            return [folder]
        found = []
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if os.path.isdir(path):
                found += walk(path)
            elif name.lower().endswith(VIDEO_EXTENSIONS):
                found.append(path)
        return found

    for item in items:
        if os.path.isdir(item):
            found = walk(item)
            if not found:
                raise TrackletInputError(f"{item}: no frames ({', '.join(IMAGE_EXTENSIONS)}), videos or folders "
                                         f"of frames in this folder")
            out += found
        elif os.path.exists(item):
            out.append(item)
        else:
            raise TrackletInputError(f"input not found: {item} (expected a folder of frames or a video file)")
    return out


def _resize_frame(frame: np.ndarray, transform: FrameTransform) -> np.ndarray:
    """H×W×3 uint8 -> height×width×3 uint8, resized as ``FrameTransform.load`` resizes a frame file."""
    im = Image.fromarray(frame)
    if im.size != (transform.width, transform.height):
        im = im.resize((transform.width, transform.height), Image.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


def tracklet_chunks(path: str, transform: FrameTransform, seq_len: int, backend: str = "auto",
                    threads: int = 1) -> tuple[torch.Tensor, int]:
    """The test clips of one tracklet and its frame count: (n×seq_len×height×width×3 uint8, every
    frame once in chunks of ``seq_len``, the last padded cyclically; frames). A folder is read by
    the re-ID test dataset itself (``ReIDTestClips``); a video is decoded once (``read_frames``: decord, PyAV as fallback). Raises
    RuntimeError / DatasetError / DecodeError naming the file when it cannot be read."""
    if os.path.isdir(path):
        frames = _frame_files(path)
        if not frames:
            raise RuntimeError(f"{path}: no frame images ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
        return ReIDTestClips([Tracklet(tuple(frames), 0, 0)], transform, seq_len)[0]["inputs"], len(frames)
    decoded = read_frames(path, lambda n: np.arange(n), backend, threads)
    frames = np.stack([_resize_frame(f, transform) for f in decoded.frames])  # n×h×w×3
    chunks = test_chunks(len(frames), seq_len)
    return torch.from_numpy(frames[chunks.ravel()]).view(chunks.shape[0], seq_len, *frames.shape[1:]), len(frames)


@torch.no_grad()
def extract_tracklet_features(tracklets: Sequence[str], model: nn.Module, *, transform: FrameTransform,
                              seq_len: int, batch_size: int = 16, device: torch.device | str | None = None,
                              amp: bool | str = False, backend: str = "auto", threads: int = 1) -> dict:
    """One embedding per tracklet (folder of frames or video file), as the re-ID test computes it.

    ``model`` maps B×C×T×H×W (normalised with ``transform``'s mean/std) to B×D embeddings in
    eval mode; ``seq_len`` frames per chunk; ``batch_size`` chunks per forward pass; ``amp``
    autocast (TRAIN.MIXED_PRECISION). Returns {"names": the tracklets embedded (N), "features":
    N×D float32 numpy, "num_frames": N ints, "failed": [{"name", "reason"}] for the tracklets
    that could not be read (never raised)}.
    """
    from .engine.precision import autocast_context, resolve_amp_dtype

    device = torch.device(device) if device is not None else next(model.parameters()).device
    amp = resolve_amp_dtype(bool(amp), amp if isinstance(amp, str) else "auto", device)
    model = model.to(device).eval()
    normalize = transform.normalizer
    names, feats, frames, failed = [], [], [], []
    for path in tracklets:
        try:
            x, num_frames = tracklet_chunks(path, transform, seq_len, backend, threads)  # n×T×H×W×C
        except DecodeError as e:
            failed.append({"name": path, "reason": e.reason})
            continue
        except Exception as e:  # unreadable frame images, odd files: reported, never fatal
            failed.append({"name": path, "reason": f"{type(e).__name__}: {e}"})
            continue
        outs = []
        for i in range(0, x.shape[0], batch_size):
            with autocast_context(device, amp):
                outs.append(model(normalize(x[i:i + batch_size], device)).float().cpu())
        feats.append(torch.cat(outs).mean(0))  # mean of the chunk embeddings
        names.append(path)
        frames.append(num_frames)
    dim = feats[0].numel() if feats else 0
    return {"names": names, "features": torch.stack(feats).numpy().astype(np.float32) if feats
            else np.zeros((0, dim), np.float32), "num_frames": frames, "failed": failed}


def load_reid_model(cfg, weights: str, device: torch.device | str | None = None) -> nn.Module:
    """The re-ID model of ``cfg`` (MODEL.TASK "reid") with the weights of ``weights``, in eval
    mode. The classifier is sized from the checkpoint (its ``classifier.weight`` rows: the
    training identities), so no dataset is needed."""
    from .models.weights import CheckpointError, extract_model_state, load_checkpoint_file, load_weights
    from .engine.setup import get_device
    from .models import build_model

    if cfg.MODEL.TASK != "reid":
        raise ConfigError(f"MODEL.TASK is {cfg.MODEL.TASK!r}: feature extraction needs a re-ID model (MODEL.TASK "
                          f"reid, e.g. configs/MARS/R50tp_SNL.yaml); for class predictions use tools/predict.py")
    if not os.path.isfile(weights):
        raise CheckpointError(f"weights file not found: {weights}")
    ckpt = load_checkpoint_file(weights)
    state = extract_model_state(ckpt, weights)
    rows = [v.shape[0] for k, v in state.items() if k.endswith("classifier.weight") and v.dim() == 2]
    c = cfg.clone()
    c.defrost()
    if rows:
        c.MODEL.NUM_CLASSES = int(rows[0])
    c.freeze()
    model = build_model(c)
    load_weights(model, weights, ckpt=ckpt, fmt=cfg.MODEL.WEIGHTS_FORMAT, inflate=cfg.MODEL.INFLATE)
    return model.to(torch.device(device) if device is not None else get_device(cfg)).eval()


def extract_features_from_config(cfg, weights: str, inputs: Sequence[str],
                                 device: torch.device | str | None = None) -> dict:
    """Load the re-ID model of ``cfg`` with ``weights`` and embed the tracklets of ``inputs``
    (see :func:`expand_tracklets`) with the test settings of ``cfg`` (REID.HEIGHT/WIDTH/MEAN/STD,
    REID.SEQ_LEN, TEST.BATCH_SIZE, TRAIN.MIXED_PRECISION, DATA.DECODING_BACKEND)."""
    from .engine.inference import build_inference_model

    tracklets = expand_tracklets(inputs)
    model = build_inference_model(cfg, load_reid_model(cfg, weights, device))
    return extract_tracklet_features(tracklets, model, transform=FrameTransform.from_cfg(cfg),
                                     seq_len=cfg.REID.SEQ_LEN, batch_size=cfg.TEST.BATCH_SIZE,
                                     amp=cfg.TRAIN.MIXED_PRECISION and cfg.TRAIN.AMP_DTYPE, backend=cfg.DATA.DECODING_BACKEND,
                                     threads=cfg.DATA.DECODING_THREADS)


__all__ = ["expand_tracklets", "tracklet_chunks", "extract_tracklet_features", "load_reid_model",
           "extract_features_from_config", "TrackletInputError", "IMAGE_EXTENSIONS"]
