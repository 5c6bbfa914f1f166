"""Frame decoders: PyAV, decord and torchcodec behind one small interface, chosen by name, imported lazily.

Every decoder returns the frames a :class:`~vit3d.data.video.meta.VideoMeta` names by index (the ``i``-th
decodable frame in presentation order, located by its real timestamp), as ``(T, H, W, 3)`` uint8 RGB in display
orientation (the container's rotation applied), optionally scaled by FFmpeg to ``size``. So the same request
gives the same frames from every backend, on variable-frame-rate files, files with start offsets and edit lists
as on plain constant-rate ones.

- :class:`PyAVDecoder` seeks to the keyframe before the first wanted timestamp and decodes, matching frames by
  their exact pts (not by ``round(pts * fps)``, which breaks on variable frame rates and start offsets).
- :class:`DecordDecoder` uses decord's frame index, which follows presentation order; decord applies the
  rotation itself. decord 0.6.0 misplaces frames in some MPEG-TS files, cannot decode AV1 or Theora and fails
  on some small frame sizes, so datasets check each file against PyAV once (:func:`frames_agree`) and report
  the files they decode with PyAV instead.
- :class:`TorchCodecDecoder` (where torchcodec imports) fetches frames by their timestamps in ``exact`` seek
  mode.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from vit3d.errors import ConfigError
from vit3d.layers.helpers import check_choice

from ..common import SampleError
from .meta import VideoMeta, decode_from

__all__ = ["DECODERS", "DecordDecoder", "PyAVDecoder", "TorchCodecDecoder", "VideoDecoder", "frames_agree",
           "get_decoder", "rotate_frames"]

DecoderName = Literal["pyav", "decord", "torchcodec"]
DECODERS: tuple[str, ...] = ("pyav", "decord", "torchcodec")


class FrameDecodeError(SampleError):
    """A decoder did not deliver frames that the file's metadata says exist (the file changed or is damaged)."""


def rotate_frames(frames: np.ndarray, rotation: int) -> np.ndarray:
    """``(T, H, W, C)`` frames turned ``rotation`` degrees counter-clockwise (the display matrix convention)."""
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(frames, k=k, axes=(1, 2))) if k else frames


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 frames resized to ``size`` (bilinear, antialiased), for backends that cannot scale."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    t = torch.nn.functional.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return t.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _coded(size: tuple[int, int] | None, meta: VideoMeta) -> tuple[int, int] | None:
    """A display-orientation ``(H, W)`` as the coded frame's ``(H, W)``."""
    if size is None:
        return None
    return (size[1], size[0]) if meta.rotation in (90, 270) else size


def _reformat_threads(num_threads: int) -> dict[str, int]:
    """``threads=`` for PyAV's reformatter where it takes one (PyAV >= 17, which otherwise uses every core)."""
    import av

    return {"threads": num_threads} if int(av.__version__.split(".")[0]) >= 17 else {}


class VideoDecoder(abc.ABC):
    """Decode frames of a probed video by frame index (see the module docstring)."""

    name: str = ""

    def __init__(self, *, num_threads: int = 1) -> None:
        self.num_threads = num_threads

    @abc.abstractmethod
    def frames(self, meta: VideoMeta, indices: Sequence[int], size: tuple[int, int] | None = None) -> np.ndarray:
        """``(T, H, W, 3)`` uint8 RGB frames at ``indices`` (any order, repeats allowed), in display orientation,
        scaled to ``size = (H, W)`` when given."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_threads={self.num_threads})"

    @staticmethod
    def _check(meta: VideoMeta, indices: Sequence[int]) -> list[int]:
        idx = [int(i) for i in indices]
        if not idx:
            raise ConfigError("no frame indices")
        bad = [i for i in idx if not 0 <= i < meta.num_frames]
        if bad:
            raise IndexError(f"frame indices {bad[:5]} are outside the {meta.num_frames} decodable frames of "
                             f"{meta.path}")
        return idx


class PyAVDecoder(VideoDecoder):
    """Decode with PyAV (FFmpeg): seek to the keyframe before the first wanted frame, decode, match exact pts.

    Args:
        num_threads: FFmpeg decoding threads; 1 so that DataLoader workers scale (one core each).
    """

    name = "pyav"

    def __init__(self, *, num_threads: int = 1) -> None:
        import av  # noqa: F401 - fail at construction when PyAV is missing

        super().__init__(num_threads=num_threads)

    def frames(self, meta: VideoMeta, indices: Sequence[int], size: tuple[int, int] | None = None) -> np.ndarray:
        import av

        idx = self._check(meta, indices)
        wanted = {int(meta.pts[i]): i for i in sorted(set(idx))}
        first, last = min(wanted), max(wanted)
        from av.video.reformatter import VideoReformatter

        coded = _coded(size, meta)
        # Scaling down to the size the crops need happens in the YUV -> RGB conversion (bilinear, as decord's
        # scaling, so the two backends agree): no full-size RGB frame is made. One reformatter per clip keeps one
        # swscale context for all its frames: VideoFrame.to_ndarray builds a new one per frame, with as many
        # threads as the machine has cores since PyAV 17, which costs more than the conversion in a one-core
        # DataLoader worker (benchmarks/data_bench.py).
        options: dict[str, Any] = {"format": "rgb24", **_reformat_threads(self.num_threads)}
        if coded:
            options.update(height=coded[0], width=coded[1])
        reformatter = VideoReformatter()
        got: dict[int, np.ndarray] = {}
        try:
            for frame in decode_from(meta.path, first, meta.pts[meta.keyframes], stop_pts=last,
                                     num_threads=self.num_threads):
                if frame.pts in wanted and frame.pts not in got:
                    got[frame.pts] = reformatter.reformat(frame, **options).to_ndarray()
                if frame.pts is not None and frame.pts >= last:
                    break
        except av.error.FFmpegError as exc:  # e.g. the file was removed or replaced since it was probed
            raise FrameDecodeError(meta.path, f"PyAV cannot read it any more ({type(exc).__name__}: {exc})") from exc
        missing = [wanted[p] for p in wanted if p not in got]
        if missing:
            raise FrameDecodeError(meta.path, f"PyAV delivered no frame for indices {missing[:5]} (pts "
                                              f"{[int(meta.pts[i]) for i in missing[:5]]}); the file changed or "
                                              "is damaged inside; re-run validate() or re-encode it")
        out = np.stack([got[int(meta.pts[i])] for i in idx])
        return rotate_frames(out, meta.rotation)


class DecordDecoder(VideoDecoder):
    """Decode with decord (``VideoReader.get_batch``), one thread per reader so DataLoader workers scale.

    decord applies the display rotation itself; frame ``i`` is decord's ``i``-th frame in presentation order.
    """

    name = "decord"

    def __init__(self, *, num_threads: int = 1) -> None:
        import decord  # noqa: F401 - fail at construction when decord is missing

        super().__init__(num_threads=num_threads)

    def frames(self, meta: VideoMeta, indices: Sequence[int], size: tuple[int, int] | None = None) -> np.ndarray:
        import decord

        idx = self._check(meta, indices)
        # decord scales before it rotates and distorts quarter-turned frames when asked for a size: scale those
        # after decoding instead
        scale_after = size is not None and meta.rotation in (90, 270)
        h, w = (-1, -1) if size is None or scale_after else size
        try:
            reader = decord.VideoReader(meta.path, ctx=decord.cpu(0), num_threads=self.num_threads, width=w,
                                        height=h)
            if len(reader) < max(idx) + 1:
                raise FrameDecodeError(meta.path, f"decord lists {len(reader)} frames, the stream has "
                                                  f"{meta.num_frames} decodable ones")
            out = reader.get_batch(idx).asnumpy()
        except decord.DECORDError as exc:
            text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise FrameDecodeError(meta.path, f"decord cannot decode it (DECORDError: {text}); use "
                                              "decoder='pyav'") from exc
        if scale_after:
            out = resize_frames(out, size)
        expected = size or (meta.height, meta.width)
        if out.shape[1:] != (*expected, 3):
            raise FrameDecodeError(meta.path, f"decord returned frames of shape {out.shape[1:]}, expected "
                                              f"{(*expected, 3)} (display orientation, rotation {meta.rotation})")
        return out


class TorchCodecDecoder(VideoDecoder):
    """Decode with torchcodec's ``VideoDecoder`` (exact seek mode), fetching frames by their timestamps.

    torchcodec returns frames in coded orientation in the releases we read (no display-matrix support), so the
    rotation is applied here when the frames come back in coded orientation.
    """

    name = "torchcodec"

    def __init__(self, *, num_threads: int = 1) -> None:
        from torchcodec.decoders import VideoDecoder as _TC  # noqa: F401 - fail at construction when missing

        super().__init__(num_threads=num_threads)

    def frames(self, meta: VideoMeta, indices: Sequence[int], size: tuple[int, int] | None = None) -> np.ndarray:
        from torchcodec.decoders import VideoDecoder as _TC

        idx = self._check(meta, indices)
        dec = _TC(meta.path, dimension_order="NHWC", num_ffmpeg_threads=self.num_threads, seek_mode="exact")
        batch = dec.get_frames_played_at(seconds=[float(meta.timestamps[i]) for i in idx])
        out = batch.data.numpy()
        if meta.rotation and out.shape[1:3] == meta.coded_size and meta.coded_size != (meta.height, meta.width) \
                or meta.rotation == 180 and out.shape[1:3] == meta.coded_size:
            out = rotate_frames(out, meta.rotation)
        if size is not None and out.shape[1:3] != tuple(size):
            out = resize_frames(out, size)
        return np.ascontiguousarray(out)


def get_decoder(name: str | VideoDecoder = "pyav", *, num_threads: int = 1) -> VideoDecoder:
    """A decoder by name: ``'pyav'``, ``'decord'`` or ``'torchcodec'`` (its library must import)."""
    if isinstance(name, VideoDecoder):
        return name
    check_choice("decoder", name, DECODERS)
    cls = {"pyav": PyAVDecoder, "decord": DecordDecoder, "torchcodec": TorchCodecDecoder}[name]
    try:
        return cls(num_threads=num_threads)
    except (ImportError, OSError, RuntimeError) as exc:  # torchcodec's CUDA builds fail to load their libraries
        from vit3d.errors import ConfigError

        package = {"pyav": "av", "decord": "decord", "torchcodec": "torchcodec"}[name]
        raise ConfigError(f"decoder={name!r} needs the {package!r} package, which does not import here "
                          f"({type(exc).__name__}: {exc})",
                          fix=f"pip install {package}, or choose decoder='pyav' (works wherever FFmpeg wheels "
                              "exist)") from exc


# codec tolerance between two FFmpeg builds decoding the same stream: identical bitstream decoding, but RGB
# conversion (swscale versions, dithering of 10-bit sources) may differ by a few levels
AGREE_MEAN, AGREE_MAX = 2.0, 48


def frames_agree(a: np.ndarray, b: np.ndarray) -> tuple[bool, str]:
    """Whether two decodes of the same frames agree within codec tolerance, and a short description."""
    if a.shape != b.shape:
        return False, f"frame shapes differ: {a.shape[1:]} vs {b.shape[1:]}"
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    mean, mx = float(diff.mean()), int(diff.max())
    return (mean <= AGREE_MEAN and mx <= AGREE_MAX), f"mean difference {mean:.2f}, max {mx} grey levels"


def check_indices(meta: VideoMeta) -> list[int]:
    """Frames a backend is checked on before a dataset trusts it with a file: first, middle, last decodable."""
    n = meta.num_frames
    return sorted({0, n // 2, n - 1})


def cross_check(decoder: VideoDecoder, meta: VideoMeta, reference: VideoDecoder | None = None) -> str | None:
    """None when ``decoder`` returns the reference's (PyAV's) frames for this file, else the reason it does not."""
    if decoder.name == "pyav":
        return None
    reference = reference or PyAVDecoder()
    idx = check_indices(meta)
    try:
        got = decoder.frames(meta, idx)
    except Exception as exc:  # noqa: BLE001 - any failure of the optional backend means: use PyAV for this file
        text = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        return f"{decoder.name} fails on it ({type(exc).__name__}: {text})"
    ok, how = frames_agree(got, reference.frames(meta, idx))
    return None if ok else f"{decoder.name} returns other frames than the stream's timestamps name ({how})"


def describe(decoder: Any) -> str:
    return getattr(decoder, "name", type(decoder).__name__)
