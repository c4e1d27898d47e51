"""Helpers shared by the data_prep scripts: progress bars, process pools, CSV lines, PyAV
re-encoding (trim + short-side resize).

Display rotation: what the tools write follows the frames as vidnl's decoders return them
(``vidnl.data.decoding``): a video whose stream carries a display matrix (a phone video filmed
upright, stored landscape with "rotate 90") is turned as players show it (exact 90°/180°/270°
rotations and mirrors of the decoded frames, the first frame's matrix), and sizes (short sides)
refer to the displayed frame. A re-encoded video is written turned, without a display matrix."""

from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from typing import Callable, Iterable, Iterator

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".flv", ".mpg", ".mpeg", ".3gp", ".ogv")


def progress(iterable: Iterable, total: int, desc: str):
    """A tqdm bar on stderr, shown only when stderr is a terminal."""
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=not sys.stderr.isatty())


def parallel_map(fn: Callable, jobs: list, workers: int, desc: str) -> Iterator:
    """``fn(job)`` for every job, in order, over ``workers`` processes (<= 1: in this process),
    with a progress bar. ``fn`` must be a module-level function.

    The workers are started with "spawn", not Linux's default "fork": a process forked after
    the parent has used FFmpeg (PyAV probing a video, its codec threads) can inherit locked
    mutexes and crash or hang in its first decode."""
    if workers <= 1 or len(jobs) <= 1:
        yield from progress(map(fn, jobs), len(jobs), desc)
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from progress(pool.map(fn, jobs, chunksize=max(1, min(16, len(jobs) // (4 * workers)))),
                            len(jobs), desc)


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def csv_path_for(video_path: str, csv_dir: str, absolute: bool) -> str:
    """How a video is written in a CSV in ``csv_dir``: absolute, or relative to the CSV's folder
    (vidnl resolves relative paths against the CSV's folder when DATA.PATH_PREFIX is empty)."""
    video_path = os.path.abspath(video_path)
    return video_path if absolute else os.path.relpath(video_path, os.path.abspath(csv_dir))


def write_lines(path: str, lines: Iterable[str]) -> int:
    """Write lines (newline added) atomically; returns how many."""
    from vidnl.engine.output_dir import write_text_atomic

    lines = list(lines)
    write_text_atomic(path, "".join(line + "\n" for line in lines))
    return len(lines)


def scaled_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(w, h) with the shorter side ``short_side`` (0: unchanged), aspect kept, both even (H.264)."""
    if short_side <= 0:
        w, h = width, height
    elif width <= height:
        w, h = short_side, height * short_side / width
    else:
        w, h = width * short_side / height, short_side
    return max(2, int(round(w / 2)) * 2), max(2, int(round(h / 2)) * 2)


def display_sizes(width: int, height: int, orientation, short_side: int | None = 0
                  ) -> tuple[tuple[int, int], tuple[int, int]]:
    """((w, h) to scale a stored ``width``×``height`` frame to, (w, h) it has once ``orientation``
    (``vidnl.data.decoding.frame_orientation``) is applied): the displayed frame's shorter side
    ``short_side`` via :func:`scaled_size` (0: kept, both sides even; None: exactly as displayed)."""
    turned = orientation[0]
    w, h = (height, width) if turned else (width, height)
    shown = (w, h) if short_side is None else scaled_size(w, h, short_side)
    return ((shown[1], shown[0]) if turned else shown), shown


def orient_yuv420p(frame, orientation):
    """A new yuv420p PyAV frame: ``frame`` (yuv420p, even width and height) turned by
    ``orientation``, each plane exactly (no resampling, no colour conversion)."""
    import av
    import numpy as np

    from vidnl.data.decoding import orient

    planes = frame.to_ndarray(format="yuv420p")  # Y (h rows), then U and V (h/4 rows of w each)
    h, w = frame.height, frame.width
    luma = orient(planes[:h, :, None], orientation)[..., 0]
    chroma = orient(planes[h:].reshape(2, h // 2, w // 2, 1), orientation)[..., 0]
    out = av.VideoFrame.from_ndarray(np.concatenate([luma.ravel(), chroma.ravel()]).reshape(-1, luma.shape[1]),
                                     format="yuv420p")
    for name in ("colorspace", "color_range"):
        try:
            setattr(out, name, getattr(frame, name))
        except (AttributeError, ValueError):  # older PyAV: read-only
            pass
    return out


def video_stream(container):
    """The first video stream of a PyAV ``container``; RuntimeError "no video stream (the file
    holds ...)" otherwise, the wording of vidnl's decoders."""
    from vidnl.data.decoding import _video_stream

    return _video_stream(container)  # raises NoVideoStream, a RuntimeError


def reencode_video(src: str, dst: str, short_side: int = 0, start: float | None = None,
                   end: float | None = None, crf: int = 23, preset: str = "veryfast") -> dict:
    """Re-encode ``src`` as H.264 MP4 ``dst`` with PyAV: frames with timestamps in
    [start, end) seconds (all when None), short side scaled to ``short_side`` (0: kept),
    no audio. Every decoded frame is written once, with the source's timestamps (shifted so the
    first written frame is at 0, see :class:`FrameTimes`), so frame rate and duration are the
    source's. A video with a display rotation is written as displayed (the frames turned
    exactly, the short side that of the displayed frame) and without a display matrix, so every
    decoder shows it as vidnl decodes the source. Written to a temporary file then renamed, so
    ``dst`` exists only when complete. Returns {"frames", "width", "height"} (the written, i.e.
    displayed, size); raises RuntimeError on failure ("no video stream ..." for a file without
    one, the decoders' words)."""
    import av

    from vidnl.data.decoding import IDENTITY, frame_orientation

    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    tmp = dst + ".part.mp4"
    count, size = 0, None
    try:
        with av.open(src) as inp:
            ist = video_stream(inp)
            ist.thread_type = "AUTO"
            rate = Fraction(ist.average_rate or ist.guessed_rate or 25).limit_denominator(1001 * 1000)
            times = FrameTimes(ist.time_base, rate)
            if start and ist.time_base:
                try:
                    inp.seek(int(start / ist.time_base) + (ist.start_time or 0), stream=ist)
                except av.error.FFmpegError:
                    inp.seek(0)
            with av.open(tmp, mode="w", format="mp4") as out:
                ost = out.add_stream("libx264", rate=rate, time_base=times.time_base)
                ost.pix_fmt = "yuv420p"
                ost.options = {"crf": str(crf), "preset": preset}
                for frame in inp.decode(ist):
                    t = frame.time
                    if t is not None and ist.start_time is not None and ist.time_base:
                        t -= float(ist.start_time * ist.time_base)  # seconds from the start of the video
                    if start is not None and t is not None and t < start - 1e-6:
                        continue
                    if end is not None and t is not None and t >= end - 1e-6:
                        break
                    if size is None:  # the display rotation and the output size, from the first frame
                        orientation = frame_orientation(frame)
                        stored, size = display_sizes(frame.width, frame.height, orientation, short_side)
                        ost.width, ost.height = size
                    img = frame.reformat(width=stored[0], height=stored[1], format="yuv420p")
                    if orientation != IDENTITY:
                        img = orient_yuv420p(img, orientation)
                    img.pts, img.time_base = times.next(frame.pts), times.time_base
                    for packet in ost.encode(img):
                        out.mux(packet)
                    count += 1
                if count:
                    for packet in ost.encode():
                        out.mux(packet)
        if not count:
            raise RuntimeError("no frames" + (f" between {start} s and {end} s" if start is not None or end is not None
                                              else ""))
        os.replace(tmp, dst)
    except Exception as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, RuntimeError):
            raise
        raise RuntimeError(f"{type(e).__name__}: {e}") from None
    return {"frames": count, "width": size[0], "height": size[1]}


class FrameTimes:
    """Output timestamps of re-encoded frames, in ``time_base`` (the source stream's; 1/rate
    when it has none): the source frame's pts minus the first written frame's, so a trimmed clip
    starts at 0 and variable or odd frame rates are kept. A frame without a pts, or one that
    does not come after the previous frame, is put one frame interval (1/``rate``) after it:
    the output's timestamps always increase."""

    def __init__(self, time_base: Fraction | None, rate: Fraction):
        self.time_base = Fraction(time_base) if time_base else 1 / Fraction(rate)
        self.step = max(1, round(1 / (Fraction(rate) * self.time_base)))  # one frame, in time_base units
        self.first: int | None = None
        self.last: int | None = None

    def next(self, src_pts: int | None) -> int:
        """The output pts of the next frame, given its pts in the source (None: unknown)."""
        if src_pts is not None and self.first is None:
            self.first = src_pts - (0 if self.last is None else self.last + self.step)
        pts = None if src_pts is None else src_pts - self.first
        if self.last is None:
            pts = 0 if pts is None else pts
        elif pts is None or pts <= self.last:
            pts = self.last + self.step
        self.last = pts
        return pts


def list_files(root: str, extensions: tuple[str, ...] = VIDEO_EXTENSIONS, exclude: str = "") -> list[str]:
    """Every file below ``root`` with one of the extensions (any case), in sorted walk order;
    unfinished re-encodes (``*.part.mp4``) and the folder ``exclude`` (outputs of a previous run)
    are left out."""
    skip = os.path.abspath(exclude) if exclude else None
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if os.path.abspath(os.path.join(dirpath, d)) != skip)
        found += [os.path.join(dirpath, name) for name in sorted(filenames)
                  if os.path.splitext(name)[1].lower() in extensions and not name.endswith(".part.mp4")]
    return found


def index_files(root: str, extensions: tuple[str, ...] = VIDEO_EXTENSIONS, exclude: str = "") -> dict[str, list[str]]:
    """{file name without extension: [paths]} of :func:`list_files`; a name with several paths
    (``v.mp4`` and ``v.webm``, or one name in two folders) is for the caller to refuse."""
    found: dict[str, list[str]] = {}
    for path in list_files(root, extensions, exclude):
        found.setdefault(os.path.splitext(os.path.basename(path))[0], []).append(path)
    return found


def case_insensitive_fs(path: str) -> bool:
    """Whether the file system of ``path`` (or of its nearest existing parent) treats names that
    differ only in case as one file (macOS and Windows by default): probed with a temporary file."""
    import tempfile

    folder = os.path.abspath(path)
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    try:
        fd, probe = tempfile.mkstemp(prefix=".vidnl_case_probe_", dir=folder)
    except OSError:  # not writable: writing the outputs fails anyway
        return False
    os.close(fd)
    try:
        head, name = os.path.split(probe)
        return os.path.exists(os.path.join(head, name.upper()))
    finally:
        os.remove(probe)


def check_distinct_outputs(pairs: Iterable[tuple[str, str]], what: str, root: str, reserved: tuple[str, ...] = (),
                           hint: str = "rename one of them or leave it out") -> dict[str, str]:
    """{output: input} for (input, output) pairs (a pair listed twice counts once; one input may
    have several outputs). Raises DatasetError, before anything is written, when two different
    inputs would be written to one output, compared as the file system below ``root`` compares
    names (case folded where it ignores case), or when an output is one of the ``reserved`` files
    (e.g. a ``done`` marker) inside another input's output folder. The one-line message names
    both inputs and the output, then ``hint``."""
    import unicodedata

    from vidnl.errors import DatasetError

    fold = case_insensitive_fs(root)

    def key(path: str) -> str:
        path = os.path.normpath(os.path.abspath(path))
        return unicodedata.normalize("NFC", path).casefold() if fold else path

    outputs: dict[str, str] = {}
    claimed: dict[str, tuple[str, str]] = {}  # key -> (input, what that input writes there)
    clashes: list[str] = []
    clashing: set[tuple[str, str]] = set()  # each pair of inputs is reported once
    for src, out in pairs:
        if claimed.get(key(out), (None,))[0] == src:
            continue
        outputs[out] = src
        for path, use in [(out, what)] + [(os.path.join(out, r), f"{r!r} file of the {what}") for r in reserved]:
            other, other_use = claimed.setdefault(key(path), (src, use))
            if other == src or (other, src) in clashing:
                continue
            clashing.add((other, src))
            if use == other_use:
                clashes.append(f"{other} and {src} would be written to the same {what} {path}")
            else:
                clashes.append(f"{other} and {src} would share {path} (the {other_use} of the first, "
                               f"the {use} of the second)")
    if clashes:
        more = f" (and {len(clashes) - 1} more such clashes)" if len(clashes) > 1 else ""
        case = " (this file system does not tell upper from lower case in names)" if fold else ""
        raise DatasetError(f"{clashes[0]}{case}{more}; {hint}")
    return outputs
