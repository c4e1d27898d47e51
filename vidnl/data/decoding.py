"""Video decoding: decord first (fast random access), PyAV as fallback or by choice.

decord is optional (``pip install 'vidnl[decord]'``; wheels exist for Linux and Windows on
x86_64 only): backend ``"auto"`` (DATA.DECODING_BACKEND's default) is decord when it imports,
else PyAV, and decord is only imported when a video is decoded with it.

``read_frames(path, choose_indices, backend)`` opens a video once, asks ``choose_indices`` for
the frame indices it wants given the frame count, decodes each distinct frame once and returns
them in the requested order (repeats allowed). A test video's K×S views are all cut from one
such call ("decode once").

A "video" may also be a folder of frames ``img_00001.jpg, img_00002.jpg, ...`` (numbered from 1,
name template configurable): ``read_frames`` reads such a folder with Pillow when the path is a
directory or ``source="frames"``.

Display rotation: a video whose stream carries a display matrix (a phone video filmed upright is
stored landscape with "rotate 90") is returned as players show it, with either backend and at
any ``short_side``: the frames are decoded as stored, then turned by exact 90°/180°/270°
rotations and mirrors (numpy, no resampling), and sizes (``short_side``) refer to the displayed
frame. The matrix is read with PyAV from the first decoded frame (``frame_orientation``;
``orient`` applies it). decord applies such a matrix itself, inconsistently (decord 0.6 at 90°:
squashed into the stored aspect when scaling while decoding, a failed decode at full size), so a
rotated video is always decoded with PyAV, also when DATA.DECODING_BACKEND is decord. A matrix
that is not a multiple of 90° is ignored (the frames stay as stored; logged once).

A file without a video stream (audio only) raises :class:`DecodeError` "no video stream ..."
with either backend.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from ..errors import ConfigError

logger = logging.getLogger(__name__)

BACKENDS = ("decord", "pyav")  # the decoders
BACKEND_CHOICES = ("auto",) + BACKENDS  # the values of DATA.DECODING_BACKEND
DECORD_INSTALL_HINT = "pip install 'vidnl[decord]'"
SOURCES = ("video", "frames")
DEFAULT_FRAME_TEMPLATE = "img_{:05d}.jpg"


class DecodeError(RuntimeError):
    """A video could not be read; the message names the file and every backend's reason."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


@dataclass
class DecodedFrames:
    """frames: len(indices)×H×W×3 uint8, as displayed (the display rotation applied); indices:
    the frame indices they came from; num_frames: frames that decode; backend: which decoder
    delivered them; header_frames: the count the container promised when fewer decode (a
    truncated file), else None."""

    frames: np.ndarray
    indices: np.ndarray
    num_frames: int
    backend: str
    header_frames: int | None = None

    @property
    def truncation_note(self) -> str | None:
        """"truncated: ..." for a file whose container promises more frames than decode."""
        if self.header_frames is None:
            return None
        return (f"truncated: the container promises {self.header_frames} frames, {self.num_frames} decode; "
                f"the frames are chosen among those")


_DECORD_IMPORT: list = []  # [None] when decord imports, else [reason]; filled on first use
_AUTO_LOGGED: list = []


def decord_import_error() -> str | None:
    """None when ``import decord`` works, else why not (e.g. "ModuleNotFoundError: No module
    named 'decord'"); tried once per process."""
    if not _DECORD_IMPORT:
        try:
            import decord  # noqa: F401
            _DECORD_IMPORT.append(None)
        except Exception as e:  # ImportError, or OSError from a broken shared library
            _DECORD_IMPORT.append(f"{type(e).__name__}: {e}")
    return _DECORD_IMPORT[0]


def decord_available() -> bool:
    return decord_import_error() is None


def check_backend(backend: str) -> None:
    """An explicit DATA.DECODING_BACKEND ``"decord"`` must import: otherwise the user's
    ConfigError naming the key (checked here, where the decoder is chosen, not in the config
    package); ``"auto"`` falls back to PyAV. No logging, no other effect."""
    if backend == "decord" and decord_import_error() is not None:
        raise ConfigError(
            f"DATA.DECODING_BACKEND: 'decord' is set but decord cannot be imported ({decord_import_error()}). Install "
            f"it with {DECORD_INSTALL_HINT} (wheels for Linux and Windows on x86_64), or set DATA.DECODING_BACKEND "
            f"pyav (or auto: decord when installed, else PyAV)."
        )


def resolve_backend(backend: str) -> str:
    """The decoder a backend choice means: ``"auto"`` is ``"decord"`` when decord imports, else
    ``"pyav"`` (logged once per process: the main one, or the first data-loader worker);
    ``"decord"`` and ``"pyav"`` are themselves; an explicit ``"decord"`` that cannot be imported
    raises ConfigError (``check_backend``)."""
    if backend not in BACKEND_CHOICES:
        raise ValueError(f"decoding backend must be one of {BACKEND_CHOICES}, got {backend!r}")
    check_backend(backend)
    if backend != "auto":
        return backend
    resolved = "decord" if decord_available() else "pyav"
    if not _AUTO_LOGGED:
        _AUTO_LOGGED.append(resolved)
        from torch.utils.data import get_worker_info

        worker = get_worker_info()
        if worker is None or worker.id == 0:
            if resolved == "decord":
                logger.info("DATA.DECODING_BACKEND auto: decoding with decord (PyAV for a file decord cannot read)")
            else:
                logger.info("DATA.DECODING_BACKEND auto: decoding with pyav (decord is not available: %s; "
                            "%s for faster random access)", decord_import_error(), DECORD_INSTALL_HINT)
    return resolved


def scaled_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(h, w) with the shorter side ``short_side`` and the aspect kept (the rounding of
    ``transforms.resize_short_side``)."""
    if height <= width:
        return short_side, max(short_side, int(round(width * short_side / height)))
    return max(short_side, int(round(height * short_side / width))), short_side


def _target_size(height: int, width: int, short_side: int | None) -> tuple[int, int] | None:
    """The size to decode at: only ever smaller than the file (upscaling is left to the transforms)."""
    if not short_side or min(height, width) <= short_side:
        return None
    return scaled_size(height, width, short_side)


class NoVideoStream(RuntimeError):
    """The file holds no video stream (e.g. audio only): a property of the file, whichever decoder
    reads it, so no other backend is tried."""


def _video_stream(container):
    """The container's first video stream; NoVideoStream naming what the file holds otherwise."""
    if not container.streams.video:
        kinds: dict[str, int] = {}
        for s in container.streams:
            kinds[s.type] = kinds.get(s.type, 0) + 1
        held = ", ".join(f"{n} {k} stream{'s' if n > 1 else ''}" for k, n in kinds.items()) or "no streams"
        raise NoVideoStream(f"no video stream (the file holds {held})")
    return container.streams.video[0]


# How stored frames become displayed ones: (transpose, flip rows, flip columns), in that order
Orientation = tuple[bool, bool, bool]
IDENTITY: Orientation = (False, False, False)
_ODD_ANGLE_LOGGED: list = []


def display_orientation(matrix: np.ndarray | None) -> Orientation:
    """The exact transform a display matrix asks for, from FFmpeg's 3×3 matrix (9 int32, 16.16
    fixed point; None: no matrix). The matrix maps a stored pixel (u, v) to the displayed
    x = a·u + c·v, y = b·u + d·v (y pointing down; a, b, c, d = matrix[0, 1, 3, 4]), what
    FFmpeg's own autorotation (transpose / hflip / vflip) follows. A matrix that is not a multiple
    of 90° (with or without a mirror) gives IDENTITY (logged once)."""
    if matrix is None:
        return IDENTITY
    a, b, _, c, d = (np.asarray(matrix[:5], dtype=np.float64) / 65536.0).tolist()
    straight, swapped = abs(a) + abs(d), abs(b) + abs(c)
    if min(straight, swapped) > 0.02 * max(straight, swapped) or max(straight, swapped) == 0:
        if not _ODD_ANGLE_LOGGED:
            _ODD_ANGLE_LOGGED.append(True)
            logger.warning("a video's display matrix %s is not a multiple of 90 degrees: its frames are used as "
                           "stored (unrotated)", list(map(int, matrix)))
        return IDENTITY
    if straight > swapped:  # x = a·u, y = d·v
        return False, d < 0, a < 0
    return True, b < 0, c < 0  # x = c·v, y = b·u: rows come from u (a transpose)


def orient(frames: np.ndarray, orientation: Orientation) -> np.ndarray:
    """Apply ``orientation`` to ...×H×W×C frames -> ...×H'×W'×C (H' = W when it transposes);
    exact (no resampling), contiguous."""
    transpose, flip_rows, flip_cols = orientation
    if transpose:
        frames = np.swapaxes(frames, -3, -2)
    if flip_rows:
        frames = np.flip(frames, -3)
    if flip_cols:
        frames = np.flip(frames, -2)
    return np.ascontiguousarray(frames)


def frame_orientation(frame) -> Orientation:
    """The orientation of a decoded PyAV frame's DISPLAYMATRIX side data (IDENTITY without one)."""
    for side_data in frame.side_data:
        if getattr(side_data.type, "name", str(side_data.type)).endswith("DISPLAYMATRIX"):
            return display_orientation(np.frombuffer(bytes(side_data), dtype=np.int32)[:9])
    return IDENTITY


def _stored_size(height: int, width: int, short_side: int | None, orientation: Orientation) -> tuple[int, int] | None:
    """The stored (pre-rotation) size to decode at so the displayed frame's shorter side is
    ``short_side`` (``_target_size`` of the displayed size, swapped back when it transposes)."""
    if orientation[0]:
        size = _target_size(width, height, short_side)
        return None if size is None else (size[1], size[0])
    return _target_size(height, width, short_side)


_ROTATED_LOGGED: list = []


def decord_reader(path: str, threads: int, short_side: int | None = None):
    """(decord VideoReader of ``path`` scaling while decoding so the shorter side is
    ``short_side`` (None: as stored), the frame count its header promises (0 if none)), or None
    for a video with a display rotation, which PyAV must decode (see ``_decode_decord``).
    RuntimeError when decord finds no frames; NoVideoStream for a file without video."""
    import decord

    promised, height, width, orientation = _container_header(path)
    if orientation != IDENTITY:
        return None
    size = _target_size(height, width, short_side) if height else None
    # with ``size``, decord scales while decoding: memory follows the model input, not the file
    vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=threads,
                            **({} if size is None else {"width": size[1], "height": size[0]}))
    if len(vr) <= 0:
        raise RuntimeError("decord reports 0 frames")
    if short_side and not height:  # no header to read the size from: decode one frame for it
        size = _target_size(*vr[0].shape[:2], short_side)
        if size is not None:
            vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=threads, width=size[1], height=size[0])
    return vr, promised


def _decode_decord(path: str, choose_indices: Callable[[int], np.ndarray], threads: int,
                   short_side: int | None = None) -> DecodedFrames:
    if not decord_available():
        raise RuntimeError(f"decord is not installed ({decord_import_error()}; {DECORD_INSTALL_HINT})")
    opened = decord_reader(path, threads, short_side)
    if opened is None:
        # decord turns a video with a display rotation itself, inconsistently (at 90°: squashed when
        # scaling, a failed decode at full size): PyAV decodes it as stored and ``orient`` turns it
        if not _ROTATED_LOGGED:
            _ROTATED_LOGGED.append(path)
            logger.info("%s has a display rotation: decoded with PyAV (decord does not apply it consistently); "
                        "so is every rotated video", path)
        return _decode_pyav(path, choose_indices, threads, short_side)
    vr, promised = opened
    n = len(vr)
    idx = np.asarray(choose_indices(n), dtype=np.int64)
    unique, inverse = np.unique(idx, return_inverse=True)
    frames = vr.get_batch(unique.tolist()).asnumpy()
    if frames.shape[0] != len(unique):
        raise RuntimeError(f"decord returned {frames.shape[0]} frames, expected {len(unique)}")
    # decord counts the frames it can index, so a truncated file just looks short: compare with the header
    return DecodedFrames(frames[inverse], idx, n, "decord", promised if promised > n else None)


def _container_header(path: str) -> tuple[int, int, int, Orientation]:
    """(frames, height, width, orientation): the frame count and stored size as the container's
    header states them (0 for what it does not state, or when PyAV cannot read the header), and
    the display orientation of the first frame (decoded for it; IDENTITY when it does not decode).
    Raises NoVideoStream for a file PyAV reads that has no video stream."""
    try:
        import av

        container = av.open(path)
    except Exception:  # no header to compare with or to size from
        return 0, 0, 0, IDENTITY
    with container:
        stream = _video_stream(container)
        header = int(stream.frames or 0), int(stream.codec_context.height or 0), int(stream.codec_context.width or 0)
        try:
            orientation = frame_orientation(next(iter(container.decode(stream))))
        except Exception:  # no frame decodes: the decoder reports that
            orientation = IDENTITY
    return (*header, orientation)


def stream_timing(path: str):
    """The :class:`~vidnl.data.sampling.StreamTiming` of a video file from its header (PyAV):
    the average frame rate (as PySlowFast reads it, ``float(stream.average_rate)``) and the
    stream's duration / frame count in its time base. Raises DecodeError when the header cannot
    be read or states no frame rate."""
    from .sampling import StreamTiming

    try:
        import av

        with av.open(path) as container:
            stream = _video_stream(container)
            rate = stream.average_rate
            duration, frames = stream.duration, int(stream.frames or 0)
    except NoVideoStream as e:
        raise DecodeError(path, str(e)) from None
    except Exception as e:  # PyAV raises many types for unreadable files
        raise DecodeError(path, f"cannot read the header for its frame rate ({type(e).__name__}: {e})") from None
    if not rate or float(rate) <= 0:
        raise DecodeError(path, "the container states no frame rate, which DATA.TEMPORAL_SAMPLING 'pyslowfast' needs")
    return StreamTiming(float(rate), duration / frames if duration and frames > 0 else None)


def _pyav_frame_count(path: str, threads: int) -> int:
    import av

    with av.open(path) as container:
        stream = _video_stream(container)
        if stream.frames and stream.frames > 0:
            return int(stream.frames)
        return sum(1 for _ in container.decode(stream))


def _decode_pyav(path: str, choose_indices: Callable[[int], np.ndarray], threads: int,
                 short_side: int | None = None) -> DecodedFrames:
    n = _pyav_frame_count(path, threads)
    if n <= 0:
        raise RuntimeError("PyAV finds no video frames")
    idx = np.asarray(choose_indices(n), dtype=np.int64)
    got, decoded = _pyav_pass(path, set(idx.tolist()), int(idx.max()), threads, short_side)
    header = None
    if len(got) < len(set(idx.tolist())):
        # the container promised more frames than decode: choose again among those that do
        # (never invent frames), and say so
        if decoded == 0:
            raise RuntimeError("PyAV decoded no frames")
        header, n = n, decoded
        idx = np.asarray(choose_indices(n), dtype=np.int64)
        got, _ = _pyav_pass(path, set(idx.tolist()), int(idx.max()), threads, short_side)
    return DecodedFrames(np.stack([got[i] for i in idx.tolist()]), idx, n, "pyav", header)


def iter_pyav_frames(path: str, short_side: int | None = None, threads: int = 1, info: dict | None = None,
                     needed: Callable[[int], bool] | None = None) -> Iterator[tuple[int, np.ndarray | None]]:
    """Decode ``path`` with PyAV from its first frame, in order, holding one frame at a time:
    yields (index, frame H×W×3 uint8 RGB as displayed: the first frame's display orientation
    applied, scaled so the shorter displayed side is ``short_side`` (None: as stored)), or
    (index, None) for an index ``needed`` refuses (not converted). ``info``, if given, receives
    before the first frame "rate" (the stream's average rate, else its guessed rate: a Fraction,
    or None), "fps" (that as a float, 0.0 when unknown) and "frames" (the header's count, 0 when
    it states none), and with the first frame "size" (its displayed (H, W) before scaling)."""
    import av

    info = {} if info is None else info
    with av.open(path) as container:
        stream = _video_stream(container)
        stream.thread_type = "AUTO"
        if threads:
            stream.codec_context.thread_count = threads
        rate = stream.average_rate or stream.guessed_rate
        info.update(rate=rate, fps=float(rate) if rate else 0.0, frames=int(stream.frames or 0))
        orientation, kw = IDENTITY, {}
        for i, frame in enumerate(container.decode(stream)):
            if i == 0:  # the display matrix and the size to scale to, from the first frame
                orientation = frame_orientation(frame)
                info["size"] = (frame.width, frame.height) if orientation[0] else (frame.height, frame.width)
                size = _stored_size(frame.height, frame.width, short_side, orientation)
                kw = {} if size is None else {"height": size[0], "width": size[1], "interpolation": "AREA"}
            if needed is None or needed(i):
                yield i, orient(frame.to_ndarray(format="rgb24", **kw), orientation)
            else:
                yield i, None


def _pyav_pass(path: str, wanted: set, last: int, threads: int, short_side: int | None) -> tuple[dict, int]:
    """One decoding pass up to frame ``last``: the ``wanted`` frames (index -> H×W×3, as
    displayed: the first frame's display orientation applied) and how many frames decoded."""
    got: dict[int, np.ndarray] = {}
    count = 0
    with contextlib.closing(iter_pyav_frames(path, short_side, threads, needed=wanted.__contains__)) as frames:
        for i, frame in frames:
            count = i + 1
            if frame is not None:
                got[i] = frame
            if i >= last:
                break
    return got, count


_DECODERS = {"decord": _decode_decord, "pyav": _decode_pyav}


def count_frame_files(folder: str, template: str = DEFAULT_FRAME_TEMPLATE) -> int:
    """Number of consecutive frames ``template.format(1), template.format(2), ...`` in ``folder``."""
    names = set(os.listdir(folder))
    n = 0
    while template.format(n + 1) in names:
        n += 1
    return n


def _decode_frames(path: str, choose_indices: Callable[[int], np.ndarray], template: str) -> DecodedFrames:
    """Read the chosen frames of a frame folder (frame i is ``template.format(i + 1)``)."""
    from PIL import Image

    n = count_frame_files(path, template)
    if n <= 0:
        raise RuntimeError(f"no frame named {template.format(1)!r} in the folder (DATA.FRAME_TEMPLATE {template!r})")
    idx = np.asarray(choose_indices(n), dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise RuntimeError(f"frame index out of range 0..{n - 1}: {idx.min()}..{idx.max()}")
    unique, inverse = np.unique(idx, return_inverse=True)
    frames = []
    for i in unique.tolist():
        name = os.path.join(path, template.format(i + 1))
        try:
            with Image.open(name) as im:
                frames.append(np.asarray(im.convert("RGB")))
        except Exception as e:  # Pillow raises several types for unreadable files
            raise RuntimeError(f"{name}: {type(e).__name__}: {e}") from None
        if frames[-1].shape != frames[0].shape:
            raise RuntimeError(f"{name} is {frames[-1].shape[1]}x{frames[-1].shape[0]}, but "
                               f"{template.format(unique[0] + 1)} is {frames[0].shape[1]}x{frames[0].shape[0]}")
    return DecodedFrames(np.stack(frames)[inverse], idx, n, "frames")


def read_frames(
    path: str,
    choose_indices: Callable[[int], np.ndarray],
    backend: str = "auto",
    threads: int = 1,
    source: str = "video",
    frame_template: str = DEFAULT_FRAME_TEMPLATE,
    short_side: int | None = None,
) -> DecodedFrames:
    """Decode the frames ``choose_indices(num_frames)`` of ``path`` in one pass; with
    ``short_side``, videos larger than that are scaled while decoding so their shorter side is
    ``short_side`` (the memory of a decode then follows the model's input size, not the file's).
    Frames come as displayed: a display rotation is applied (module docstring), the same with
    every backend and ``short_side``, which refers to the displayed frame.

    ``backend``: ``"auto"`` (decord when it imports, else PyAV), ``"decord"`` or ``"pyav"``.
    With decord, PyAV is tried when decord fails on the file. A directory, or any
    path with ``source="frames"``, is read as a folder of frames named ``frame_template``
    (numbered from 1). Raises :class:`DecodeError` naming the file and the reasons when it
    cannot be read ("no video stream ..." for a file without one, e.g. audio only).
    """
    if backend not in BACKEND_CHOICES:
        raise ValueError(f"decoding backend must be one of {BACKEND_CHOICES}, got {backend!r}")
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if source == "frames" or os.path.isdir(path):
        if not os.path.isdir(path):
            raise DecodeError(path, "frame folder does not exist" if not os.path.exists(path)
                              else "not a folder of frames (DATA.SOURCE is 'frames')")
        try:
            return _decode_frames(path, choose_indices, frame_template)
        except Exception as e:
            raise DecodeError(path, f"frames: {type(e).__name__}: {e}") from None
    if not os.path.exists(path):
        raise DecodeError(path, "file does not exist")
    if os.path.getsize(path) == 0:
        raise DecodeError(path, "file is empty (0 bytes)")
    backend = resolve_backend(backend)
    order = [backend] + [b for b in BACKENDS if b != backend and backend == "decord"]
    reasons = []
    for name in order:
        try:
            return _DECODERS[name](path, choose_indices, threads, short_side)
        except NoVideoStream as e:  # the file's, not the decoder's: no other backend helps
            raise DecodeError(path, str(e)) from None
        except Exception as e:  # decoders raise many types; all mean "cannot read this file"
            reasons.append(f"{name}: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}")
    raise DecodeError(path, "cannot decode (" + "; ".join(reasons) + ")")
