"""Helpers shared by the data_prep scripts: progress bars, process pools, CSV lines, PyAV
re-encoding (trim + short-side resize)."""

from __future__ import annotations

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
    with a progress bar. ``fn`` must be a module-level function."""
    if workers <= 1 or len(jobs) <= 1:
        yield from progress(map(fn, jobs), len(jobs), desc)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
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
    lines = list(lines)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(line + "\n" for line in lines)
    os.replace(tmp, path)
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


def reencode_video(src: str, dst: str, short_side: int = 0, start: float | None = None,
                   end: float | None = None, crf: int = 23, preset: str = "veryfast") -> dict:
    """Re-encode ``src`` as H.264 MP4 ``dst`` with PyAV: frames with timestamps in
    [start, end) seconds (all when None), short side scaled to ``short_side`` (0: kept),
    same frame rate, no audio. Written to a temporary file then renamed, so ``dst`` exists only
    when complete. Returns {"frames", "width", "height"}; raises RuntimeError on failure."""
    import av

    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    tmp = dst + ".part.mp4"
    count, size = 0, None
    try:
        with av.open(src) as inp:
            if not inp.streams.video:
                raise RuntimeError("no video stream")
            ist = inp.streams.video[0]
            ist.thread_type = "AUTO"
            rate = ist.average_rate or ist.guessed_rate or Fraction(25)
            if start and ist.time_base:
                try:
                    inp.seek(int(start / ist.time_base) + (ist.start_time or 0), stream=ist)
                except av.error.FFmpegError:
                    inp.seek(0)
            with av.open(tmp, mode="w", format="mp4") as out:
                ost = out.add_stream("libx264", rate=Fraction(rate).limit_denominator(1001 * 1000))
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
                    if size is None:
                        size = scaled_size(frame.width, frame.height, short_side)
                        ost.width, ost.height = size
                    img = frame.reformat(width=size[0], height=size[1], format="yuv420p")
                    img.pts = None
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


def index_files(root: str, extensions: tuple[str, ...] = VIDEO_EXTENSIONS) -> dict[str, str]:
    """{file name without extension: path} of all files below ``root`` with one of the
    extensions (the first in sorted walk order wins when a name repeats)."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            stem, ext = os.path.splitext(name)
            if ext.lower() in extensions and not name.endswith(".part.mp4"):
                found.setdefault(stem, os.path.join(dirpath, name))
    return found
