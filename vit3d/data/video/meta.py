"""What a video holds before any clip is decoded: real frame timestamps, size, rotation, the last decodable frame.

:func:`probe` reads it with PyAV (FFmpeg) from the container's packets, without decoding the whole stream:

- every video packet is demuxed (cheap: no decoding), giving the presentation timestamps of all frames, the
  keyframes, and the frames an MP4/MOV edit list discards (``AV_PKT_FLAG_DISCARD``);
- the first frame is decoded: it proves the stream decodes and carries the display matrix (rotation);
- the last group of pictures is decoded with the same tolerant loop the decoders use, so a file whose tail is
  damaged or truncated ends at its last frame that really decodes.

Frame ``i`` of a video is the ``i``-th decodable frame in presentation order; decoders fetch frames by these
timestamps, so variable frame rates, start offsets and edit lists need no frame-rate arithmetic.

:class:`MetadataCache` keeps probes keyed by ``(path, size, mtime)``, in memory and optionally in a folder of
JSON files, so a dataset's ``validate()`` fills it once (in parallel) and sample loading never re-reads metadata.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ..common import SampleError

__all__ = ["MetadataCache", "VideoMeta", "VideoProbeError", "probe", "probe_many"]

logger = logging.getLogger("vit3d.data")
_CACHE_FORMAT = 1
_TAIL_GOPS = 4  # keyframes stepped back from the end while looking for the last decodable frame


class VideoProbeError(SampleError):
    """A file that holds no decodable video stream (empty, not a container, audio only, undecodable)."""


@dataclass(frozen=True, eq=False)
class VideoMeta:
    """A video's frame table and geometry, as the decoders and samplers use it.

    Attributes:
        path: the file.
        size: file size in bytes (part of the cache key).
        mtime_ns: modification time in ns (part of the cache key).
        pts: ``(N,)`` int64 presentation timestamps of the decodable frames, ascending, in ``time_base`` units.
        time_base: the stream's time base ``(numerator, denominator)`` in seconds.
        height: displayed frame height (after rotation).
        width: displayed frame width (after rotation).
        rotation: counter-clockwise rotation in degrees (0, 90, 180, 270) from the display matrix, applied by
            every decoder so frames come out as a player shows them.
        codec: FFmpeg codec name.
        keyframes: ``(K,)`` frame indices of keyframes.
        declared_frames: frames the container lists (more than ``num_frames`` when the tail is damaged).
    """

    path: str
    size: int
    mtime_ns: int
    pts: np.ndarray
    time_base: tuple[int, int]
    height: int
    width: int
    rotation: int
    codec: str
    keyframes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    declared_frames: int = 0

    @property
    def num_frames(self) -> int:
        """Decodable frames."""
        return len(self.pts)

    @property
    def timestamps(self) -> np.ndarray:
        """``(N,)`` float64 presentation times in seconds (the stream's clock: may start after 0)."""
        num, den = self.time_base
        return self.pts.astype(np.float64) * num / den

    @property
    def times(self) -> np.ndarray:
        """``(N,)`` float64 seconds since the first frame: what clip samplers and CSV ``start``/``end`` use."""
        ts = self.timestamps
        return ts - ts[0] if len(ts) else ts

    @property
    def start_time(self) -> float:
        """Presentation time of the first frame in seconds (non-zero for MPEG-TS, offsets, some edit lists)."""
        return float(self.timestamps[0]) if self.num_frames else 0.0

    @property
    def duration(self) -> float:
        """Seconds from the first to the last frame's timestamp."""
        return float(self.times[-1]) if self.num_frames else 0.0

    @property
    def fps(self) -> float:
        """Average frame rate over the decodable frames (0 for a single frame)."""
        return (self.num_frames - 1) / self.duration if self.num_frames > 1 and self.duration > 0 else 0.0

    @property
    def coded_size(self) -> tuple[int, int]:
        """``(H, W)`` as stored in the stream, before rotation."""
        return (self.width, self.height) if self.rotation in (90, 270) else (self.height, self.width)

    def to_json(self) -> dict[str, Any]:
        return {"format": _CACHE_FORMAT, "path": self.path, "size": self.size, "mtime_ns": self.mtime_ns,
                "pts": self.pts.tolist(), "time_base": list(self.time_base), "height": self.height,
                "width": self.width, "rotation": self.rotation, "codec": self.codec,
                "keyframes": self.keyframes.tolist(), "declared_frames": self.declared_frames}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> VideoMeta:
        return cls(path=str(d["path"]), size=int(d["size"]), mtime_ns=int(d["mtime_ns"]),
                   pts=np.asarray(d["pts"], dtype=np.int64), time_base=(int(d["time_base"][0]), int(d["time_base"][1])),
                   height=int(d["height"]), width=int(d["width"]), rotation=int(d["rotation"]), codec=str(d["codec"]),
                   keyframes=np.asarray(d["keyframes"], dtype=np.int64), declared_frames=int(d["declared_frames"]))


def file_key(path: str | os.PathLike) -> tuple[str, int, int]:
    """``(absolute path, size, mtime_ns)``: a cached probe is reused only while all three are unchanged."""
    st = os.stat(path)
    return os.path.abspath(path), int(st.st_size), int(st.st_mtime_ns)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def normalise_rotation(degrees: float | None) -> int:
    """A display-matrix angle as 0, 90, 180 or 270 degrees counter-clockwise (nearest quarter turn)."""
    return int(round((degrees or 0) / 90.0)) % 4 * 90


def decode_tolerant(container: Any, stream: Any, *, stop_pts: int | None = None) -> Iterator[Any]:
    """Yield decoded frames of ``stream`` from the container's current position, skipping packets FFmpeg rejects.

    A damaged packet (``InvalidDataError``) is dropped and decoding goes on, as players do; frames are yielded
    in presentation order. Stops after the first frame whose ``pts >= stop_pts`` (when given). Used by both the
    probe and :class:`~vit3d.data.video.decoders.PyAVDecoder`, so that the probe's "last decodable frame" is
    exactly what decoding will deliver.
    """
    import av

    def frames_of(packet: Any) -> list[Any]:
        try:
            return list(packet.decode())
        except av.error.FFmpegError:  # a damaged packet: players drop it too
            return []

    try:
        packets = container.demux(stream)
        for packet in packets:
            for frame in frames_of(packet):  # packet.dts None: the flush packet at the end of the stream
                yield frame
                if stop_pts is not None and frame.pts is not None and frame.pts >= stop_pts:
                    return
    except av.error.FFmpegError:  # truncated or damaged container: stop here
        pass
    try:
        for frame in stream.codec_context.decode(None):  # drain frames the decoder still holds
            yield frame
    except av.error.FFmpegError:
        pass


def decode_from(path: str, target: int, keyframes: Sequence[int], *, stop_pts: int | None = None,
                num_threads: int = 1) -> Iterator[Any]:
    """Decoded frames of ``path``'s first video stream in presentation order, from a frame at or before
    pts ``target`` on (up to ``stop_pts``), skipping damaged packets.

    Seeking lands on the keyframe before ``target`` in MP4, MKV and most containers; MPEG-TS and some others seek
    by byte position and can land after it, so when the first frame comes too late the seek is retried from
    earlier keyframes, and finally the stream is decoded from its start.
    """
    import av

    earlier = [int(k) for k in sorted(keyframes) if k < target][::-1][:2]
    with av.open(path, metadata_errors="ignore") as container:
        stream = container.streams.video[0]
        stream.thread_type = "SLICE" if num_threads == 1 else "AUTO"
        stream.codec_context.thread_count = num_threads
        for seek_to in [int(target), *earlier]:
            container.seek(seek_to, stream=stream, backward=True, any_frame=False)
            frames = decode_tolerant(container, stream, stop_pts=stop_pts)
            first = next((f for f in frames if f.pts is not None), None)
            if first is not None and first.pts <= target:
                yield first
                yield from frames
                return
    with av.open(path, metadata_errors="ignore") as container:  # decode from the start, no seeking
        stream = container.streams.video[0]
        stream.thread_type = "SLICE" if num_threads == 1 else "AUTO"
        stream.codec_context.thread_count = num_threads
        yield from decode_tolerant(container, stream, stop_pts=stop_pts)


def probe(path: str | os.PathLike) -> VideoMeta:
    """Read a video's frame table, size, rotation and last decodable frame (see the module docstring).

    Raises:
        VideoProbeError: empty file, not a media container, no video stream, or no decodable frame.
        MissingFileError: the file does not exist.
    """
    import av

    from ..common import MissingFileError

    path = str(path)
    if not os.path.exists(path):
        raise MissingFileError(path, "video not found; check the path (relative paths are resolved against the "
                                     "CSV's folder or root=)")
    if not os.path.isfile(path):
        raise VideoProbeError(path, "not a regular file (a folder, FIFO or device); give a video file")
    _, size, mtime_ns = file_key(path)
    if size == 0:
        raise VideoProbeError(path, "empty file (0 bytes); re-copy or re-encode it, or remove it from the dataset")
    try:
        container = av.open(path, metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise VideoProbeError(path, f"not a video container FFmpeg can read ({_short(exc)}); the file is "
                                    "truncated before its index or is not a video") from exc
    with container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            why = ("an audio-only file cannot be a clip" if "audio" in kinds else
                   "the file is truncated before its video index, or is not a video")
            raise VideoProbeError(path, f"no video stream (streams: {', '.join(kinds)}); {why}")
        stream = container.streams.video[0]
        time_base = stream.time_base or Fraction(1, 1000000)
        table = _packet_table(container, stream)
        if not len(table["pts"]):
            raise VideoProbeError(path, f"video stream ({stream.codec_context.name}) holds no frames")
        pts = table["pts"]
        # decode the first frame: the stream decodes at all, and its display matrix gives the rotation
        first = next(iter(decode_from(path, int(pts[0]), table["keyframes"], stop_pts=int(pts[0]))), None)
        if first is None:
            raise VideoProbeError(path, f"no frame of the {stream.codec_context.name} stream decodes; the file is "
                                        "corrupt or its codec is not supported by this FFmpeg build")
        rotation = normalise_rotation(getattr(first, "rotation", 0))
        coded_h, coded_w = int(first.height), int(first.width)
        last = _last_decodable(path, pts, table["keyframes"])
        if last is None:
            raise VideoProbeError(path, "no frame decodes after the last keyframes; the file is corrupt")
        usable = pts[pts <= last]
        keyframes = np.searchsorted(usable, table["keyframes"][table["keyframes"] <= last]).astype(np.int64)
        h, w = (coded_w, coded_h) if rotation in (90, 270) else (coded_h, coded_w)
        return VideoMeta(path=path, size=size, mtime_ns=mtime_ns, pts=usable.astype(np.int64),
                         time_base=(time_base.numerator, time_base.denominator), height=h, width=w, rotation=rotation,
                         codec=str(stream.codec_context.name), keyframes=keyframes, declared_frames=len(pts))


def _packet_table(container: Any, stream: Any) -> dict[str, np.ndarray]:
    """Presentation timestamps (sorted) of the frames the stream's packets will show, and those of keyframes.

    Packets an edit list discards are left out; packets without a pts use their dts, then their position.
    """
    import av

    pts, keys = [], []
    try:
        for i, packet in enumerate(container.demux(stream)):
            if packet.size == 0 or packet.is_discard:
                continue
            t = packet.pts if packet.pts is not None else packet.dts
            t = int(t) if t is not None else (pts[-1] + 1 if pts else i)
            pts.append(t)
            if packet.is_keyframe:
                keys.append(t)
    except av.error.FFmpegError:
        pass  # truncated: the frames read so far are the table; the tail check below confirms them
    arr = np.unique(np.asarray(pts, dtype=np.int64))
    keys_arr = np.unique(np.asarray(keys, dtype=np.int64)) if keys else arr[:1]
    return {"pts": arr, "keyframes": keys_arr}


def _last_decodable(path: str, pts: np.ndarray, keyframes: np.ndarray) -> int | None:
    """The pts of the last frame that decodes: decode from the last keyframes to the end of the stream, and take
    the frames up to the first one that does not come out."""
    for key in list(keyframes[::-1][:_TAIL_GOPS]) + [int(pts[0])]:
        got = {int(f.pts) for f in decode_from(path, int(key), keyframes) if f.pts is not None}
        last = None
        for p in pts[pts >= key]:
            if int(p) not in got:
                break
            last = int(p)
        if last is not None:
            return last
    return None


class MetadataCache:
    """Probes keyed by ``(path, size, mtime_ns)``, in memory and, with ``folder``, as JSON files on disk.

    Thread-safe. Failures are remembered in memory (not on disk), so a broken file is probed once per process.

    Args:
        folder: where to keep the probes between runs (created on first write); None keeps them in memory only.
    """

    def __init__(self, folder: str | os.PathLike | None = None) -> None:
        self.folder = Path(folder) if folder is not None else None
        self._mem: dict[tuple[str, int, int], VideoMeta | VideoProbeError] = {}
        self._lock = threading.Lock()
        self.probes = 0  # probes actually run (cache misses), for tests and benchmarks
        # (path, size, mtime_ns, backend) -> None when the backend returns PyAV's frames, else why not
        self.checks: dict[tuple[str, int, int, str], str | None] = {}

    def __len__(self) -> int:
        return len(self._mem)

    def _file(self, key: tuple[str, int, int]) -> Path | None:
        if self.folder is None:
            return None
        digest = hashlib.sha1(json.dumps(list(key)).encode()).hexdigest()
        return self.folder / f"{digest}.json"

    def get(self, path: str | os.PathLike) -> VideoMeta:
        """The metadata of ``path``, probing it on a miss; raises what :func:`probe` raises."""
        if not os.path.exists(path):
            return probe(path)  # raises the missing-file error
        key = file_key(path)
        with self._lock:
            hit = self._mem.get(key)
        if hit is None:
            hit = self._load(key)
        if hit is None:
            try:
                hit = probe(path)
            except VideoProbeError as err:
                hit = err
            with self._lock:
                self.probes += 1
            if isinstance(hit, VideoMeta):
                self._store(key, hit)
        with self._lock:
            self._mem[key] = hit
        if isinstance(hit, VideoProbeError):
            raise hit
        return hit

    def _load(self, key: tuple[str, int, int]) -> VideoMeta | None:
        f = self._file(key)
        if f is None or not f.is_file():
            return None
        try:
            d = json.loads(f.read_text())
            if d.get("format") != _CACHE_FORMAT or [d["path"], d["size"], d["mtime_ns"]] != [os.path.abspath(key[0]),
                                                                                            key[1], key[2]]:
                return None
            meta = VideoMeta.from_json(d)
        except (OSError, ValueError, KeyError, TypeError):
            return None  # a stale or damaged cache entry is re-probed
        return meta

    def _store(self, key: tuple[str, int, int], meta: VideoMeta) -> None:
        f = self._file(key)
        if f is None:
            return
        f.parent.mkdir(parents=True, exist_ok=True)
        d = meta.to_json()
        d["path"] = key[0]
        tmp = f.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(d))
        os.replace(tmp, f)  # atomic: concurrent writers never leave a half-written entry


_DEFAULT_CACHE = MetadataCache()


def default_cache() -> MetadataCache:
    """The process-wide in-memory cache shared by datasets that are given no cache of their own."""
    return _DEFAULT_CACHE


def probe_many(paths: Sequence[str], cache: MetadataCache | None = None, num_workers: int | None = None
               ) -> dict[str, VideoMeta | SampleError]:
    """Probe ``paths`` in parallel threads (FFmpeg releases the GIL while demuxing and decoding).

    Returns:
        ``{path: VideoMeta}`` or ``{path: SampleError}`` for each distinct path.
    """
    cache = cache or default_cache()
    unique = list(dict.fromkeys(str(p) for p in paths))
    workers = max(1, min(num_workers or min(8, os.cpu_count() or 1), len(unique) or 1))

    def one(p: str) -> VideoMeta | SampleError:
        try:
            return cache.get(p)
        except SampleError as err:
            return err

    if workers == 1:
        return {p: one(p) for p in unique}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vit3d-probe") as pool:
        return dict(zip(unique, pool.map(one, unique), strict=True))
