"""Flow items of the video datasets (``DATA.MODALITY`` "flow" or "rgb_flow").

``VideoCSVDataset`` (and the UCF-101 / Kinetics datasets built on it) hands items to
:func:`flow_item` when ``clip.modality`` is not "rgb". The flow of a video lives in
``flow_dir/flow_key(video path, video_root)`` (see :mod:`vidnl.data.flow`).

Items, with crops, scale jitter and flips shared by RGB and flow (flow values are rescaled
with the image and x changes sign when flipped), flow divided by ``clip.flow_scale``:

* "flow", train: ``inputs`` 2×T×h×w, normalised with ``clip.mean``/``clip.std`` (2 values).
* "flow", test: ``inputs`` (K·S)×2×T×h×w.
* "rgb_flow", train: ``inputs`` is exactly the RGB clip of "rgb" mode (raw uint8 pixels
  T×h×w×3, see :mod:`vidnl.data.model_input`), plus ``flow`` 2×T×h×w float of the same frames
  and crop. Test items of "rgb_flow" are the "rgb" items (MARS tests on RGB alone), so test
  videos need no flow.
"""

from __future__ import annotations

import copy
import os

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from .. import sampling, transforms
from ..decoding import DecodeError, read_frames
from ..flow import flow_key, hflip_flow, read_flow_clip, read_flow_meta, resize_flow
from .video_csv import decode_with_retries


def video_flow_dir(ds, path: str) -> str:
    """Flow folder of the video at ``path`` for dataset ``ds``."""
    c = ds.clip
    return os.path.join(c.flow_dir, flow_key(path, c.video_root or os.getcwd()))


def _short_side_size(h: int, w: int, size: int) -> tuple[int, int]:
    """The (h, w) that ``transforms.resize_short_side`` gives."""
    if min(h, w) == size:
        return h, w
    if h <= w:
        return size, max(size, int(round(w * size / h)))
    return max(size, int(round(h * size / w))), size


def _flow_tensor(flow: np.ndarray) -> torch.Tensor:
    """2×T×H×W numpy -> T×2×H×W float tensor."""
    return torch.from_numpy(flow).permute(1, 0, 2, 3).contiguous()


def _finish_flow(flow: torch.Tensor, ds, normalise: bool) -> torch.Tensor:
    """T×2×h×w pixels -> 2×T×h×w, divided by flow_scale (then mean/std in "flow" mode)."""
    c = ds.clip
    out = flow / c.flow_scale
    if normalise:
        out = TF.normalize(out, list(c.mean), list(c.std))
    return out.permute(1, 0, 2, 3).contiguous()


def _read(ds, path: str, choose, rng=None):
    """Decode RGB (rgb_flow) and read flow for the chosen frames.
    -> (rgb T×3×H×W uint8 or None, flow T×2×H×W float, num_frames)."""
    c = ds.clip
    fdir = video_flow_dir(ds, path)
    if c.modality == "flow":
        n = read_flow_meta(fdir)["num_pairs"] + 1
        idx = np.asarray(choose(n), dtype=np.int64)
        return None, _flow_tensor(read_flow_clip(fdir, idx, c.flow_format)), n
    decoded = read_frames(path, choose, c.backend, c.decoding_threads, source=c.source,
                          frame_template=c.frame_template)
    flow = _flow_tensor(read_flow_clip(fdir, decoded.indices, c.flow_format))
    return transforms.frames_to_tensor(decoded.frames), flow, decoded.num_frames


def _train_transform(ds, rgb, flow, rng):
    """The RNG draws of ``transforms.train_transform`` (scale, top, left, flip), applied to both:
    the RGB clip is exactly the "rgb" mode clip (``train_transform`` with the same RNG state)."""
    c = ds.clip
    rgb_rng = copy.deepcopy(rng)
    ref_h, ref_w = (rgb if rgb is not None else flow).shape[-2:]
    scale = int(rng.integers(c.jitter_scales[0], c.jitter_scales[1] + 1))
    h, w = _short_side_size(ref_h, ref_w, scale)
    top = int(rng.integers(0, h - c.train_crop_size + 1))
    left = int(rng.integers(0, w - c.train_crop_size + 1))
    flip = c.random_flip and rng.random() < 0.5
    s = c.train_crop_size
    flow = resize_flow(flow, (h, w))[..., top:top + s, left:left + s]
    if flip:
        flow = hflip_flow(flow)
    if rgb is not None:
        rgb = transforms.train_transform(rgb, jitter_scales=c.jitter_scales, crop_size=s, flip=c.random_flip,
                                         rng=rgb_rng)
    return rgb, _finish_flow(flow, ds, normalise=rgb is None)


def _train_item(ds, index: int) -> dict:
    c = ds.clip

    def attempt(i: int, rng: np.random.Generator) -> dict:
        record = ds.records[i]
        rgb, flow, n = _read(ds, record.path, lambda n: sampling.train_clip_indices(
            n, c.num_frames, c.sampling_rate, rng, c.short_video_mode))
        span = sampling.clip_span(c.num_frames, c.sampling_rate)
        notes = [(record.path, f"{n} frames, shorter than one clip ({span} frames)")] if n < span else []
        rgb, flow = _train_transform(ds, rgb, flow, rng)
        item = {"inputs": flow if rgb is None else rgb, "label": record.label, "notes": notes}
        if rgb is not None:
            item["flow"] = flow
        return item

    item, index, failures = decode_with_retries(ds.records, index, c.num_retries, c.seed, ds.epoch, attempt,
                                                f"Check the videos and DATA.FLOW_DIR {c.flow_dir!r}.")
    return {**item, "index": index, "failures": failures}


def _test_item(ds, index: int) -> dict:
    c = ds.clip
    record = ds.records[index]
    k, t = c.num_ensemble_views, c.num_frames
    try:
        _, flow, _ = _read(ds, record.path, lambda n: sampling.test_clip_indices(
            n, c.num_frames, c.sampling_rate, k, c.short_video_mode).reshape(-1))
    except DecodeError as e:
        why = f"{e.path}: {e.reason}" if e.path != record.path else e.reason
        return {"inputs": None, "label": record.label, "index": index, "failures": [(record.path, why)]}
    flow = resize_flow(flow, _short_side_size(*flow.shape[-2:], c.test_crop_size))
    flow_views = [_finish_flow(v, ds, normalise=True)
                  for v in transforms.uniform_crops(flow, c.test_crop_size, c.num_spatial_crops)]
    flow_out = torch.stack([v[:, i * t:(i + 1) * t] for i in range(k) for v in flow_views])
    return {"inputs": flow_out, "label": record.label, "index": index, "failures": []}


def flow_item(ds, index: int) -> dict:
    """Item ``index`` of a video dataset in "flow" mode, or a training item in "rgb_flow" mode
    (see the module doc)."""
    return _train_item(ds, index) if ds.mode == "train" else _test_item(ds, index)
