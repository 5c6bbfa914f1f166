"""``VideoClipDataset``: clips ``(C, T, H, W)`` from videos, with decoders and clip samplers as small objects.

- Decoders (:class:`DecordDecoder`, :class:`PyAVDecoder`) are chosen by name and import their library lazily.
- Clip samplers (:class:`UniformClipSampler`, :class:`RandomClipSampler`, :class:`MultiClipSampler`) turn a
  video's frame count into frame indices; they return :class:`ClipIndices` named tuples.
- Spatial transforms are functions on ``(T, C, H, W)`` tensors: short-side resize, center / random / three
  crops, horizontal flip, normalisation.

Multi-view testing: with ``num_clips`` clips and ``num_crops`` crops per video the dataset has
``videos x clips x crops`` items; each carries its video ``id`` and ``view`` index so predictions can be
averaged per video.
"""

from __future__ import annotations

import abc
import logging
import math
import os
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from vit3d.layers.helpers import check_choice, to_ntuple

from .common import (
    BadRow,
    MissingFileError,
    SampleError,
    ValidationReport,
    as_sample_error,
    handle_error,
    infer_classes,
    label_index,
    read_table,
    select_split,
)

__all__ = [
    "ClipIndices", "DecordDecoder", "MultiClipSampler", "PyAVDecoder", "RandomClipSampler", "UniformClipSampler",
    "VideoClipDataset", "VideoInfo", "average_views", "get_decoder",
]

logger = logging.getLogger("vit3d.data")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")
KINETICS_MEAN = (0.45, 0.45, 0.45)
KINETICS_STD = (0.225, 0.225, 0.225)


# ---------------------------------------------------------------------------------------------- decoders


class VideoInfo(NamedTuple):
    """What a decoder knows about a video before decoding it."""

    num_frames: int
    fps: float
    height: int
    width: int


class Decoder(Protocol):
    name: str

    def info(self, path: str) -> VideoInfo: ...

    def frames(self, path: str, indices: Sequence[int], size: tuple[int, int] | None = None) -> np.ndarray: ...


class DecordDecoder:
    """Decode with decord (``VideoReader.get_batch``), one thread per reader so DataLoader workers scale."""

    name = "decord"

    def __init__(self, num_threads: int = 1) -> None:
        import decord  # noqa: F401 - fail at construction when decord is missing

        self.num_threads = num_threads

    def _reader(self, path: str, size: tuple[int, int] | None = None) -> Any:
        import decord

        h, w = size or (-1, -1)
        return decord.VideoReader(path, ctx=decord.cpu(0), num_threads=self.num_threads, width=w, height=h)

    def info(self, path: str) -> VideoInfo:
        vr = self._reader(path)
        n = len(vr)
        h, w = vr[0].shape[:2] if n else (0, 0)
        return VideoInfo(n, float(vr.get_avg_fps()), int(h), int(w))

    def frames(self, path: str, indices: Sequence[int], size: tuple[int, int] | None = None) -> np.ndarray:
        """``(T, H, W, 3)`` uint8 RGB frames at ``indices``, scaled by FFmpeg to ``size = (H, W)`` when given."""
        return self._reader(path, size).get_batch(list(map(int, indices))).asnumpy()


class PyAVDecoder:
    """Decode with PyAV (FFmpeg): seek to the keyframe before the first index, decode, pick frames by time.

    Args:
        num_threads: FFmpeg decoding threads; 1 (as for decord) so that DataLoader workers scale.
    """

    name = "pyav"

    def __init__(self, num_threads: int = 1) -> None:
        import av  # noqa: F401 - fail at construction when PyAV is missing

        self.num_threads = num_threads

    def info(self, path: str) -> VideoInfo:
        import av

        with av.open(path) as container:
            if not container.streams.video:
                return VideoInfo(0, 0.0, 0, 0)
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            n = int(stream.frames or 0)
            if n == 0:  # no frame count in the container: count by decoding
                n = sum(1 for _ in container.decode(stream))
            return VideoInfo(n, fps, int(stream.codec_context.height), int(stream.codec_context.width))

    def frames(self, path: str, indices: Sequence[int], size: tuple[int, int] | None = None) -> np.ndarray:
        """``(T, H, W, 3)`` uint8 RGB frames at ``indices`` (any order, repeats allowed), scaled to ``size``."""
        import av

        wanted = sorted(set(int(i) for i in indices))
        if not wanted:
            raise ValueError("no frame indices")
        got: dict[int, np.ndarray] = {}
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO" if self.num_threads != 1 else "SLICE"
            stream.codec_context.thread_count = self.num_threads
            rate = Fraction(stream.average_rate or stream.guessed_rate)
            tb = stream.time_base
            start = stream.start_time or 0
            if wanted[0] > 0:
                container.seek(int(start + wanted[0] / rate / tb), stream=stream, backward=True, any_frame=False)
            position = None
            for frame in container.decode(stream):
                if frame.pts is None:
                    position = 0 if position is None else position + 1
                else:
                    position = int(round(float((frame.pts - start) * tb * rate)))
                if position in got or position < wanted[0]:
                    continue
                if position > wanted[-1]:
                    break
                if position in wanted:
                    scale = {"height": size[0], "width": size[1]} if size else {}
                    got[position] = frame.to_ndarray(format="rgb24", **scale)
                    if len(got) == len(wanted):
                        break
        missing = [i for i in wanted if i not in got]
        if missing:
            raise ValueError(f"could not decode frames {missing[:5]}{'...' if len(missing) > 5 else ''}")
        return np.stack([got[int(i)] for i in indices])


def get_decoder(name: str | Decoder = "decord") -> Decoder:
    """A decoder by name (``'decord'`` or ``'pyav'``); ``'decord'`` falls back to PyAV when decord is missing."""
    if not isinstance(name, str):
        return name
    check_choice("decoder", name, ("decord", "pyav"))
    if name == "decord":
        try:
            return DecordDecoder()
        except ImportError:
            logger.warning("decord is not installed; decoding with PyAV instead")
    return PyAVDecoder()


# ---------------------------------------------------------------------------------------------- samplers


class ClipIndices(NamedTuple):
    """Frame indices of one clip and its index among the video's clips."""

    indices: np.ndarray
    clip_index: int


def _clip_indices(start: float, frames: int, step: float) -> np.ndarray:
    return (int(start) + np.floor(np.arange(frames) * step + 0.5)).astype(np.int64)


class _Sampler(abc.ABC):
    """Base: ``frames`` frames ``step`` frames apart (``step`` may be fractional, from a target fps)."""

    num_clips = 1

    def span(self, frames: int, step: float) -> int:
        """Frames a clip covers from its first to its last index, inclusive."""
        return int(round((frames - 1) * step)) + 1

    @abc.abstractmethod
    def __call__(self, first: int, last: int, frames: int, step: float, generator: np.random.Generator | None = None
                 ) -> list[ClipIndices]:
        """Clips inside frames ``[first, last)``."""


class UniformClipSampler(_Sampler):
    """The clip in the middle of the video: deterministic, for validation."""

    def __call__(self, first: int, last: int, frames: int, step: float,
                 generator: np.random.Generator | None = None) -> list[ClipIndices]:
        slack = max(last - first - self.span(frames, step), 0)
        return [ClipIndices(_clip_indices(first + slack / 2, frames, step), 0)]


class RandomClipSampler(_Sampler):
    """A clip at a random start: for training."""

    def __call__(self, first: int, last: int, frames: int, step: float,
                 generator: np.random.Generator | None = None) -> list[ClipIndices]:
        slack = max(last - first - self.span(frames, step), 0)
        rng = generator or np.random.default_rng()
        return [ClipIndices(_clip_indices(first + rng.integers(0, slack + 1), frames, step), 0)]


class MultiClipSampler(_Sampler):
    """``num_clips`` clips evenly spread over the video (the centres of equal segments): for testing."""

    def __init__(self, num_clips: int = 3) -> None:
        if num_clips < 1:
            raise ValueError(f"num_clips={num_clips} must be at least 1")
        self.num_clips = num_clips

    def __call__(self, first: int, last: int, frames: int, step: float,
                 generator: np.random.Generator | None = None) -> list[ClipIndices]:
        slack = max(last - first - self.span(frames, step), 0)
        starts = [first + slack * (i + 0.5) / self.num_clips for i in range(self.num_clips)]
        return [ClipIndices(_clip_indices(s, frames, step), i) for i, s in enumerate(starts)]


def get_sampler(name: str | _Sampler, num_clips: int = 1) -> _Sampler:
    if not isinstance(name, str):
        return name
    check_choice("sampler", name, ("uniform", "random", "multi"))
    if name == "multi":
        return MultiClipSampler(num_clips)
    return UniformClipSampler() if name == "uniform" else RandomClipSampler()


# ---------------------------------------------------------------------------------------------- transforms


def short_side_resize(clip: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``(T, C, H, W)`` float frames so that the shorter side is ``size`` (bilinear, antialiased)."""
    h, w = clip.shape[-2:]
    scale = size / min(h, w)
    new = (max(size, int(round(h * scale))), max(size, int(round(w * scale))))
    if new == (h, w):
        return clip
    return F.interpolate(clip, size=new, mode="bilinear", align_corners=False, antialias=scale < 1)


def cover_resize(clip: torch.Tensor, size: tuple[int, int], factor: float = 1.0) -> torch.Tensor:
    """Resize ``(T, C, H, W)`` frames, keeping the aspect ratio, to the smallest size covering ``size`` x ``factor``."""
    h, w = clip.shape[-2:]
    scale = max(size[0] / h, size[1] / w) * factor
    new = (max(size[0], int(round(h * scale))), max(size[1], int(round(w * scale))))
    if new == (h, w):
        return clip
    return F.interpolate(clip, size=new, mode="bilinear", align_corners=False, antialias=scale < 1)


def crop(clip: torch.Tensor, size: tuple[int, int], top: int, left: int) -> torch.Tensor:
    return clip[..., top:top + size[0], left:left + size[1]]


def center_crop(clip: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    h, w = clip.shape[-2:]
    return crop(clip, size, (h - size[0]) // 2, (w - size[1]) // 2)


def three_crops(clip: torch.Tensor, size: tuple[int, int]) -> list[torch.Tensor]:
    """Start, centre and end crops along the longer side (the SlowFast / X3D three-crop test)."""
    h, w = clip.shape[-2:]
    if w >= h:
        lefts = [0, (w - size[1]) // 2, w - size[1]]
        return [crop(clip, size, (h - size[0]) // 2, left) for left in lefts]
    tops = [0, (h - size[0]) // 2, h - size[0]]
    return [crop(clip, size, top, (w - size[1]) // 2) for top in tops]


def normalize(clip: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(T, C, H, W)`` in [0, 1] -> ``(x - mean) / std`` per channel."""
    m = torch.as_tensor(mean, dtype=clip.dtype).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=clip.dtype).view(1, -1, 1, 1)
    return (clip - m) / s


# ---------------------------------------------------------------------------------------------- dataset


def _folder_rows(folder: Path) -> list[dict[str, Any]]:
    """Rows of a folder-per-class layout (UCF101 / Kinetics): ``folder/<class>/<video>``."""
    rows = []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for f in sorted(class_dir.rglob("*")):
            if f.suffix.lower() in VIDEO_EXTENSIONS and f.is_file():
                rows.append({"path": str(f), "label": class_dir.name})
    if not rows:
        raise ValueError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) found in class folders under {folder}; "
                         "expected <root>/<class>/<video>.mp4 or a CSV with path,label columns")
    return rows


class VideoClipDataset(Dataset):
    """Video clips for action / motion classification.

    Args:
        data: a CSV path (``path``, ``label``, optional ``start`` / ``end`` in seconds, optional ``split``), a
            list of such dicts, or a folder per class (``root/<class>/<video>``; with ``split``, a
            ``root/<split>/<class>/<video>`` layout is used when ``root/<split>`` exists).
        split: keep rows of this split (CSV ``split`` column, or the sub-folder of a folder layout).
        classes: class names in index order; default: the sorted distinct labels (or folder names).
        frames: frames per clip ``T``.
        stride: frames between consecutive clip frames (ignored when ``fps`` is given).
        fps: target frame rate: the step is ``video_fps / fps`` frames (may be fractional).
        img_size: clip size ``(H, W)``.
        short_side: resize the shorter side to this before cropping (e.g. 128 for 112 crops); by default the
            frames are resized to just cover ``img_size`` (eval), or 1 to 1.25 times that (train).
        sampler: ``'uniform'`` (middle clip), ``'random'`` or ``'multi'`` (``num_clips`` spread clips), or a
            sampler object; default ``'random'`` for training, ``'uniform'`` (or ``'multi'`` when
            ``num_clips > 1``) otherwise.
        num_clips: clips per video for multi-view testing.
        num_crops: 1 (centre crop) or 3 (three crops along the longer side) for multi-view testing.
        decoder: ``'decord'`` (default; PyAV when decord is missing) or ``'pyav'``, or a decoder object.
        fallback: retry a file with PyAV when decord fails on it.
        decode_resize: let the decoder (FFmpeg) scale frames down to about the size the crops need, instead of
            converting full-size frames (e.g. 720p) to RGB and resizing them afterwards.
        train: random clip, random short side and crop, horizontal flip (when ``flip``).
        flip: horizontal flips in training; turn off when left/right matters (e.g. motion direction).
        mean: per-channel mean of frames scaled to [0, 1].
        std: per-channel std.
        on_short: ``'error'`` rejects videos shorter than a clip; ``'repeat'`` repeats the last frame.
        on_error: ``'raise'`` raises an error naming the file; ``'skip'`` logs and returns None.
        root: folder against which relative CSV paths are resolved.

    Samples: ``image`` float32 ``(C, T, H, W)``, ``label`` int64 scalar, ``id`` (the video path), ``view``
    (``clip_index * num_crops + crop_index``).
    """

    def __init__(
        self,
        data: str | os.PathLike | Sequence[Mapping[str, Any]],
        *,
        split: str | Sequence[str] | None = None,
        classes: Sequence[str] | None = None,
        frames: int = 16,
        stride: int = 2,
        fps: float | None = None,
        img_size: int | Sequence[int] = (112, 112),
        short_side: int | None = None,
        sampler: Literal["uniform", "random", "multi"] | _Sampler | None = None,
        num_clips: int = 1,
        num_crops: Literal[1, 3] = 1,
        decoder: Literal["decord", "pyav"] | Decoder = "decord",
        fallback: bool = True,
        decode_resize: bool = True,
        train: bool = False,
        flip: bool = True,
        mean: Sequence[float] = KINETICS_MEAN,
        std: Sequence[float] = KINETICS_STD,
        on_short: Literal["error", "repeat"] = "error",
        on_error: Literal["raise", "skip"] = "raise",
        root: str | os.PathLike | None = None,
    ) -> None:
        check_choice("num_crops", num_crops, (1, 3))
        check_choice("on_short", on_short, ("error", "repeat"))
        check_choice("on_error", on_error, ("raise", "skip"))
        if frames < 1 or stride < 1:
            raise ValueError(f"frames={frames} and stride={stride} must be at least 1")
        if fps is not None and fps <= 0:
            raise ValueError(f"fps={fps} must be positive (or None to use stride)")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean {tuple(mean)} and std {tuple(std)} need 3 values each (RGB), std > 0")
        if sampler is None:
            sampler = "random" if train else ("multi" if num_clips > 1 else "uniform")
        self.sampler = get_sampler(sampler, num_clips)
        if self.sampler.num_clips != num_clips and isinstance(sampler, str) and sampler != "multi" and num_clips > 1:
            raise ValueError(f"num_clips={num_clips} needs sampler='multi' (got {sampler!r})")
        self.frames, self.stride, self.fps = frames, stride, fps
        self._img_size = to_ntuple(img_size, 2, "img_size")
        self.short_side = short_side
        self.num_clips, self.num_crops = self.sampler.num_clips, num_crops
        self.decoder = get_decoder(decoder)
        self.fallback, self.decode_resize = fallback, decode_resize
        self.train, self.flip, self.mean, self.std = train, flip, tuple(mean), tuple(std)
        self.on_short, self.on_error = on_short, on_error

        if isinstance(data, (str, os.PathLike)) and Path(data).is_dir():
            folder = Path(data)
            if split is not None and isinstance(split, str) and (folder / split).is_dir():
                folder, split = folder / split, None
            all_rows = _folder_rows(folder)
        else:
            all_rows = read_table(data, path_keys=["path"], root=root)
        self.classes = infer_classes(all_rows, "label", classes)
        self.rows = select_split(all_rows, split)
        self.split = split
        self._last: tuple[tuple[str, int], torch.Tensor] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_chans(self) -> int:
        return 3

    @property
    def img_size(self) -> tuple[int, int, int]:
        """``(T, H, W)`` of the clips."""
        return (self.frames, *self._img_size)

    @property
    def num_views(self) -> int:
        return self.num_clips * self.num_crops

    def __len__(self) -> int:
        return len(self.rows) * self.num_views

    def __repr__(self) -> str:
        return (f"VideoClipDataset({len(self.rows)} videos x {self.num_views} views, split={self.split!r}, "
                f"classes={self.classes}, frames={self.frames}, stride={self.stride}, fps={self.fps}, "
                f"img_size={self._img_size}, sampler={type(self.sampler).__name__}, "
                f"decoder={self.decoder.name!r}, train={self.train})")

    # ------------------------------------------------------------------------------------------ decoding

    def _decode(self, fn: str, path: str, *args: Any) -> Any:
        try:
            return getattr(self.decoder, fn)(path, *args)
        except Exception as exc:  # noqa: BLE001
            if self.fallback and self.decoder.name == "decord":
                try:
                    return getattr(PyAVDecoder(), fn)(path, *args)
                except Exception:  # noqa: BLE001 - report the first decoder's error
                    pass
            cause = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise SampleError(path, f"unreadable or corrupt video ({type(exc).__name__}: {cause[:200]})") from exc

    def _frame_range(self, row: Mapping[str, Any], info: VideoInfo, path: str) -> tuple[int, int]:
        first, last = 0, info.num_frames
        for key in ("start", "end"):
            value = row.get(key)
            if value in (None, ""):
                continue
            try:
                seconds = float(value)
            except ValueError:
                raise SampleError(path, f"{key}={value!r} is not a number of seconds") from None
            frame = int(round(seconds * info.fps))
            first, last = (max(first, frame), last) if key == "start" else (first, min(last, frame))
        if last <= first:
            raise SampleError(path, f"start/end ({row.get('start')}, {row.get('end')}) s select no frames of "
                                    f"a {info.num_frames}-frame video at {info.fps:g} fps")
        return first, last

    def _step(self, info: VideoInfo) -> float:
        if self.fps is None:
            return float(self.stride)
        if info.fps <= 0:
            raise ValueError("the video reports no frame rate; use stride= instead of fps=")
        return info.fps / self.fps

    def _clips(self, row: Mapping[str, Any], path: str, rng: np.random.Generator | None = None
               ) -> tuple[list[ClipIndices], VideoInfo]:
        if not os.path.exists(path):
            raise MissingFileError(path, "video not found; check the path (relative paths are resolved "
                                         "against the CSV's folder or root=)")
        info = self._decode("info", path)
        if info.num_frames == 0:
            raise SampleError(path, "empty video: no decodable frames")
        first, last = self._frame_range(row, info, path)
        step = self._step(info)
        need = self.sampler.span(self.frames, step)
        if last - first < need:
            if self.on_short == "error":
                raise SampleError(path, f"video shorter than the clip: {last - first} frames "
                                        f"({(last - first) / max(info.fps, 1e-9):.2f} s at {info.fps:g} fps) "
                                        f"but {self.frames} frames at step {step:g} need {need}; lower "
                                        "frames/stride or pass on_short='repeat'")
        clips = self.sampler(first, last, self.frames, step, rng)
        clips = [ClipIndices(np.clip(c.indices, first, last - 1), c.clip_index) for c in clips]
        return clips, info

    def _decode_size(self, info: VideoInfo) -> tuple[int, int] | None:
        """Frame size to decode at: the smallest the spatial transforms need (x1.25 for training), never larger
        than the video; None for the native size."""
        if not self.decode_resize or info.height <= 0 or info.width <= 0:
            return None
        (h, w), (th, tw) = (info.height, info.width), self._img_size
        scale = max(th / h, tw / w, (self.short_side or 0) / min(h, w)) * (1.25 if self.train else 1.0)
        if scale >= 0.9:  # little to gain
            return None
        even = lambda v, lo: max(lo, 2 * int(math.ceil(v / 2)))  # noqa: E731 - chroma-subsampled sizes
        return even(h * scale, th), even(w * scale, tw)

    def _spatial(self, clip: torch.Tensor, crop_index: int) -> torch.Tensor:
        """``(T, H, W, 3)`` uint8 -> ``(3, T, H, W)`` float32, resized, cropped, flipped and normalised."""
        x = clip.permute(0, 3, 1, 2).float().div_(255.0)  # (T, C, H, W)
        size = self._img_size
        if self.train:
            factor = float(torch.empty(()).uniform_(1.0, 1.25))
            if self.short_side:
                x = short_side_resize(x, int(round(self.short_side * factor)))
            x = cover_resize(x, size, 1.0 if self.short_side else factor)  # never smaller than the crop
            h, w = x.shape[-2:]
            top = int(torch.randint(0, h - size[0] + 1, ()).item())
            left = int(torch.randint(0, w - size[1] + 1, ()).item())
            x = crop(x, size, top, left)
            if self.flip and torch.rand(()) < 0.5:
                x = x.flip(-1)
        else:
            if self.short_side:
                x = short_side_resize(x, self.short_side)
            x = cover_resize(x, size)
            x = three_crops(x, size)[crop_index] if self.num_crops == 3 else center_crop(x, size)
        x = normalize(x, self.mean, self.std)
        return x.permute(1, 0, 2, 3).contiguous()

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        video, view = divmod(index, self.num_views)
        clip_index, crop_index = divmod(view, self.num_crops)
        _, row = self.rows[video]
        path = str(row.get("path"))
        try:
            label = label_index(row.get("label"), self.classes, path)
            key = (path, clip_index)
            reuse = not self.train and not isinstance(self.sampler, RandomClipSampler)  # crops of one clip
            if reuse and self._last is not None and self._last[0] == key:
                frames = self._last[1]
            else:
                seed = int(torch.randint(0, 2 ** 31 - 1, ()).item())  # torch's RNG: seeded per worker
                clips, info = self._clips(row, path, np.random.default_rng(seed))
                indices = clips[clip_index].indices
                frames = self._decode("frames", path, indices, self._decode_size(info))
                frames = torch.from_numpy(np.ascontiguousarray(frames))
                if frames.ndim != 4 or frames.shape[0] != len(indices):
                    raise SampleError(path, f"decoder returned frames of shape {tuple(frames.shape)}, "
                                            f"expected ({len(indices)}, H, W, 3)")
                self._last = (key, frames)
            image = self._spatial(frames, crop_index)
        except SampleError as err:
            handle_error(err, self.on_error)
            return None
        except Exception as exc:  # noqa: BLE001 - anything else is reported against the file as well
            handle_error(as_sample_error(exc, path), self.on_error)
            return None
        return {"image": image, "label": torch.tensor(label, dtype=torch.int64), "id": path, "view": view}

    # ------------------------------------------------------------------------------------------ checks

    def validate(self) -> ValidationReport:
        """Check every video before training: label known, file present, decodable, long enough for a clip.

        Decodes the frames of the first clip of each video (so corrupt streams are caught, not only headers).
        """
        bad = []
        for row_index, row in self.rows:
            path = str(row.get("path"))
            try:
                label_index(row.get("label"), self.classes, path)
            except SampleError as err:
                bad.append(BadRow(row_index, err.file, err.reason))
            try:
                clips, _ = self._clips(row, path, np.random.default_rng(0))
                self._decode("frames", path, clips[0].indices)
            except SampleError as err:
                bad.append(BadRow(row_index, err.file, err.reason))
            except Exception as exc:  # noqa: BLE001
                bad.append(BadRow(row_index, path, f"{type(exc).__name__}: {exc}"))
        return ValidationReport(bad, total=len(self.rows))


def average_views(logits: torch.Tensor, ids: Sequence[str]) -> tuple[list[str], torch.Tensor]:
    """Average per-view predictions per video: ``(N, K)`` logits and N ids -> (unique ids, ``(V, K)``).

    Softmax probabilities are averaged, as in the multi-view testing of SlowFast / X3D.
    """
    if len(ids) != logits.shape[0]:
        raise ValueError(f"{len(ids)} ids for {logits.shape[0]} rows of logits")
    order: dict[str, int] = {}
    for i in ids:
        order.setdefault(i, len(order))
    index = torch.as_tensor([order[i] for i in ids])
    probs = logits.float().softmax(-1)
    total = torch.zeros(len(order), logits.shape[1]).index_add_(0, index, probs)
    counts = torch.zeros(len(order)).index_add_(0, index, torch.ones(len(ids)))
    return list(order), total / counts[:, None]

