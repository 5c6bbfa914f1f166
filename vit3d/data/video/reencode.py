"""Re-encode a video once at the size its training crops need, so that every later clip decodes a small file.

Decoding dominates a clip's cost, and an H.264 decoder cannot decode at reduced size: a 16-frame clip of a
1080p video decodes some 45 full-size frames (from the keyframe before it), whatever size the crops take.
Scaling the video down once is a deterministic step like any other preprocessing, so it is cached: the small
file keeps every decodable frame and its timestamp (variable frame rates and start offsets included), is in
display orientation, has a keyframe every second, and is keyed by the source's path, size, mtime and the
target size. Re-encoding costs one pass over the whole video; ``benchmarks/data_bench.py`` measures what a
clip costs from a 1080p source and from the small file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from .decoders import PyAVDecoder
from .meta import VideoMeta

__all__ = ["reencode", "reencoded_path"]

logger = logging.getLogger("vit3d.data")

_FORMAT = 1  # bump when the encoding settings change, so that old files are not reused


def reencoded_path(meta: VideoMeta, folder: str | os.PathLike, size: tuple[int, int]) -> Path:
    """Where the ``size = (H, W)`` copy of ``meta``'s video lives in ``folder`` (keyed by path, size, mtime)."""
    key = f"{_FORMAT}|{os.path.abspath(meta.path)}|{meta.size}|{meta.mtime_ns}|{size[0]}x{size[1]}"
    return Path(folder) / f"{hashlib.sha1(key.encode()).hexdigest()}.mp4"


def reencode(meta: VideoMeta, dst: str | os.PathLike, size: tuple[int, int], *, crf: int = 18,
             chunk: int = 64) -> Path:
    """Write every decodable frame of ``meta``'s video, scaled to ``size = (H, W)`` (even sizes for yuv420p) and in
    display orientation, with its own timestamp, as H.264 (``crf``, keyframe every second) to ``dst``.

    Frames are decoded ``chunk`` at a time, so memory stays small for long videos; the file appears atomically
    (written beside ``dst``, then renamed), so parallel loader workers can race on it.
    """
    from vit3d.data.synthetic import write_mp4

    decoder = PyAVDecoder()
    n = meta.num_frames

    def frames():  # noqa: ANN202 - a generator of (H, W, 3) uint8
        for start in range(0, n, chunk):
            yield from decoder.frames(meta, range(start, min(n, start + chunk)), size)

    duration = float(meta.timestamps[-1] - meta.timestamps[0]) if n > 1 else 0.0
    fps = (n - 1) / duration if duration > 0 else 25.0
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".mp4", dir=dst.parent)
    os.close(fd)
    try:
        write_mp4(tmp, frames(), fps=fps, crf=crf, gop=max(1, int(round(fps))), pts=np.asarray(meta.pts),
                  time_base=meta.time_base, low_latency=False)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dst
