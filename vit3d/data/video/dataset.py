"""``VideoClipDataset``: clips ``(C, T, H, W)`` from videos, located by real frame timestamps.

Multi-view testing: with ``num_clips`` clips and ``num_crops`` crops per video the dataset has
``videos x clips x crops`` items; each carries its video ``id`` and ``view`` index so predictions can be
averaged per video (:func:`average_views`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch

from vit3d.errors import ConfigError, InputError
from vit3d.layers.helpers import check_choice, to_ntuple

from ..common import BadRow, SampleError, ValidationReport, read_table
from ..table import OnError, Row, TableDataset
from .decoders import DecoderName, PyAVDecoder, VideoDecoder, cross_check, get_decoder
from .layouts import read_video_folder, stratified_split
from .meta import MetadataCache, VideoMeta, default_cache
from .samplers import ClipSampler, RandomClipSampler, get_sampler, positions_to_indices
from .transforms import (
    KINETICS_MEAN,
    KINETICS_STD,
    center_crop,
    cover_size,
    crop,
    resize,
    three_crops,
    to_normalized,
)

__all__ = ["Clip", "VideoClipDataset", "VideoValidationReport", "average_views"]

logger = logging.getLogger("vit3d.data")


class Clip(NamedTuple):
    """One planned clip: frame indices, their times (seconds since the video's first frame), clip index."""

    indices: np.ndarray
    times: np.ndarray
    clip_index: int


class VideoValidationReport(ValidationReport):
    """:class:`~vit3d.data.common.ValidationReport` plus notes that do not make a row unusable: files of a
    dataset folder that are not videos or not listed, and files decoded with PyAV instead of the chosen backend."""

    def __init__(self, rows: Sequence[BadRow] = (), total: int = 0, source: str | None = None,
                 notes: Sequence[str] = ()) -> None:
        super().__init__(rows, total=total, source=source)
        self.notes = list(notes)

    def format_report(self) -> str:
        text = super().format_report()
        if self.notes:
            text += "\n" + "\n".join(f"  note: {n}" for n in self.notes)
        return text


class VideoClipDataset(TableDataset):
    """Video clips for action / motion classification.

    Args:
        data: a CSV path (``path``, ``label``, optional ``start`` / ``end`` in seconds from the first frame,
            optional ``split``), a list of such dicts, or a dataset folder: ``root/<split>/<class>/<video>``,
            flat ``root/<class>/<video>``, or UCF101 / HMDB51 split files (``split_files``). Files of a folder
            that are not used are listed in :attr:`ignored_files` and logged.
        split: keep rows of this split (``train``, ``val``, ``test``; None keeps all).
        classes: class names in index order; default: ``classInd.txt``, else the training split's labels.
        frames: frames per clip ``T``.
        stride: frames between consecutive clip frames, counted in the video's real frames (ignored when
            ``fps`` is given).
        fps: sample frames at this rate in seconds of video time: frame ``k`` of a clip is the frame shown at
            ``start + k / fps`` (variable-frame-rate safe).
        img_size: clip size ``(H, W)``.
        short_side: resize the shorter side to this before cropping (e.g. 128 for 112 crops); by default the
            frames are resized to just cover ``img_size`` (eval), or 1 to 1.25 times that (train).
        sampler: ``'uniform'`` (middle clip), ``'random'`` or ``'multi'`` (``num_clips`` spread clips), or a
            :class:`~vit3d.data.video.samplers.ClipSampler`; default ``'random'`` for training, ``'uniform'``
            (or ``'multi'`` when ``num_clips > 1``) otherwise.
        num_clips: clips per video for multi-view testing.
        num_crops: 1 (centre crop) or 3 (three crops along the longer side) for multi-view testing.
        decoder: ``'pyav'`` (default: exact timestamps, rotation, every FFmpeg codec, wheels everywhere),
            ``'decord'`` or ``'torchcodec'``, or a decoder object.
        fallback: decode a file with PyAV when the chosen backend fails on it or returns other frames than PyAV
            (checked once per file, logged and listed by :meth:`validate`); False makes such a file a bad row.
        decode_resize: let FFmpeg scale frames down to the size the crops are taken from (for training, at the
            sample's random scale) while converting them to RGB, instead of converting full-size frames (e.g.
            1080p) and resizing them as float tensors afterwards (measured in ``benchmarks/data_bench.py``).
        decode_threads: FFmpeg threads per decoder (1 lets DataLoader workers scale).
        train: random clip, random short side and crop, horizontal flip (when ``flip``).
        flip: horizontal flips in training; turn off when left/right matters (e.g. motion direction).
        mean: per-channel mean of frames scaled to [0, 1].
        std: per-channel std.
        on_short: ``'error'`` rejects videos shorter than a clip; ``'repeat'`` repeats the last frame.
        on_error: ``'raise'`` raises an error naming the file; ``'skip'`` returns a
            :class:`~vit3d.data.common.FailedSample` (each bad file logged once).
        root: folder against which relative CSV paths are resolved.
        val_fraction: move this share of each class's training videos to a ``val`` split (seeded, stratified),
            for folders (and CSVs) without a validation split.
        test_fraction: the same for a ``test`` split of flat class folders.
        split_seed: seed of those splits.
        split_files: folder of UCF101 (``classInd.txt``, ``trainlist0N.txt``, ``testlist0N.txt``) or HMDB51
            (``<class>_test_splitN.txt``) split files; ``data`` is then the video root.
        split_fold: which fold of the split files (1 to 3).
        metadata_cache: a folder in which probed metadata (frame timestamps, size, rotation, last decodable
            frame) is kept between runs, keyed by path, size and mtime, or a
            :class:`~vit3d.data.video.meta.MetadataCache`; None shares one in-memory cache per process.
        probe_workers: threads :meth:`validate` probes files with (default: up to 8).
        reencode_cache: a folder in which each video is re-encoded once at the largest size its crops are taken
            from (1.25x the crop cover; every frame and timestamp kept, display orientation, keyframe every
            second), so that clips decode the small file instead of e.g. a 1080p one
            (:mod:`vit3d.data.video.reencode`). Built on a video's first use, for videos at least twice the copy's
            pixel count; a copy that does not keep the source's frame timestamps is not used (the source is
            decoded, with a warning). None decodes the sources.

    Samples: ``image`` float32 ``(C, T, H, W)``, ``label`` int64 scalar, ``id`` (the video path), ``view``
    (``clip_index * num_crops + crop_index``), ``times`` float32 ``(T,)`` seconds since the video's first frame.
    Indexing with a :class:`~vit3d.data.seeding.SampleKey` draws every random choice (clip start, scale, crop,
    flip) from its seed. Table reading, classes, label checks and ``on_error`` come from
    :class:`~vit3d.data.table.TableDataset`.
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
        sampler: Literal["uniform", "random", "multi"] | ClipSampler | None = None,
        num_clips: int = 1,
        num_crops: Literal[1, 3] = 1,
        decoder: DecoderName | VideoDecoder = "pyav",
        fallback: bool = True,
        decode_resize: bool = True,
        decode_threads: int = 1,
        train: bool = False,
        flip: bool = True,
        mean: Sequence[float] = KINETICS_MEAN,
        std: Sequence[float] = KINETICS_STD,
        on_short: Literal["error", "repeat"] = "error",
        on_error: OnError = "raise",
        root: str | os.PathLike | None = None,
        val_fraction: float = 0.0,
        test_fraction: float = 0.0,
        split_seed: int = 0,
        split_files: str | os.PathLike | None = None,
        split_fold: int = 1,
        metadata_cache: str | os.PathLike | MetadataCache | None = None,
        probe_workers: int | None = None,
        reencode_cache: str | os.PathLike | None = None,
    ) -> None:
        check_choice("num_crops", num_crops, (1, 3))
        check_choice("on_short", on_short, ("error", "repeat"))
        if frames < 1 or stride < 1:
            raise ConfigError(f"frames={frames} and stride={stride} must be at least 1")
        if fps is not None and fps <= 0:
            raise ConfigError(f"fps={fps} must be positive", fix="or pass fps=None to step by stride frames")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ConfigError(f"mean {tuple(mean)} and std {tuple(std)} need 3 values each (RGB), std > 0")
        if sampler is None:
            sampler = "random" if train else ("multi" if num_clips > 1 else "uniform")
        if isinstance(sampler, str) and sampler != "multi" and num_clips > 1:
            raise ConfigError(f"num_clips={num_clips} needs sampler='multi' (got {sampler!r})")
        self.sampler = get_sampler(sampler, num_clips)
        self.frames, self.stride, self.fps = frames, stride, fps
        self._img_size = to_ntuple(img_size, 2, "img_size")
        self.short_side = short_side
        self.num_clips, self.num_crops = self.sampler.num_clips, num_crops
        self.decoder = get_decoder(decoder, num_threads=decode_threads)
        self._pyav = self.decoder if self.decoder.name == "pyav" else PyAVDecoder(num_threads=decode_threads)
        self.fallback, self.decode_resize = fallback, decode_resize
        self.train, self.flip, self.mean, self.std = train, flip, tuple(mean), tuple(std)
        self.on_short = on_short
        self.probe_workers = probe_workers
        self.reencode_cache = reencode_cache
        self._small: dict[tuple[str, int, int], VideoMeta | None] = {}
        if isinstance(metadata_cache, MetadataCache):
            self.cache = metadata_cache
        else:
            self.cache = MetadataCache(metadata_cache) if metadata_cache is not None else default_cache()
        self.ignored_files: list[tuple[str, str]] = []
        self._layout = dict(val_fraction=val_fraction, test_fraction=test_fraction, seed=split_seed,
                            split_files=split_files, fold=split_fold)
        self._layout_classes: list[str] | None = None
        self._last: tuple[tuple[str, int], tuple[torch.Tensor, Clip, tuple[int, int]]] | None = None
        self._fallback_logged: set[str] = set()
        super().__init__(data, split=split, classes=classes, label_key="label", path_keys=("path",),
                         on_error=on_error, root=root)
        if classes is None and self._layout_classes is not None:  # e.g. classInd.txt order
            self.classes = list(self._layout_classes)

    def read_rows(self, data: Any, *, split: str | Sequence[str] | None, root: str | os.PathLike | None
                  ) -> tuple[list[dict[str, Any]], str | Sequence[str] | None]:
        """Rows of a CSV, a list of dicts or a dataset folder (see ``data``), with val/test splits carved out
        when ``val_fraction`` / ``test_fraction`` ask for them."""
        lay = self._layout
        if isinstance(data, (str, os.PathLike)) and Path(data).is_dir():
            table = read_video_folder(data, val_fraction=lay["val_fraction"], test_fraction=lay["test_fraction"],
                                      seed=lay["seed"], split_files=lay["split_files"], fold=lay["fold"])
            rows, self._layout_classes, self.ignored_files = table.rows, table.classes, table.ignored
            if self.ignored_files:
                shown = "; ".join(f"{f}: {why}" for f, why in self.ignored_files[:5])
                more = f" (and {len(self.ignored_files) - 5} more)" if len(self.ignored_files) > 5 else ""
                logger.warning("%d file(s) under %s are not used: %s%s", len(self.ignored_files), data, shown, more)
            where = f"{data} ({table.layout})"
        else:
            if lay["split_files"] is not None:
                raise ConfigError("split_files= needs data= to be the video folder", file=lay["split_files"])
            rows = read_table(data, path_keys=self.path_keys, root=root)
            if lay["val_fraction"] or lay["test_fraction"]:
                _carve_table(rows, lay["val_fraction"], lay["test_fraction"], lay["seed"])
            where = str(data) if isinstance(data, (str, os.PathLike)) else "the list of rows"
        if split is not None and rows and any("split" in r for r in rows):
            wanted = {split} if isinstance(split, str) else set(split)
            have = {r.get("split") for r in rows}
            if not wanted & have:
                raise ConfigError(f"{where} has no {'/'.join(sorted(wanted))} split (splits: "
                                  f"{sorted(s for s in have if s)})",
                                  file=str(data) if isinstance(data, (str, os.PathLike)) else None,
                                  fix="set val_fraction= (e.g. 0.1) to hold out part of the training videos, add a "
                                      f"{'/'.join(sorted(wanted))} folder, or give that split its own data")
        return rows, split

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

    @property
    def paths(self) -> list[str]:
        """The video of every row, in row order."""
        return [str(r.values.get("path")) for r in self.rows]

    @property
    def views_per_row(self) -> int:
        return self.num_views

    def __repr__(self) -> str:
        return (f"VideoClipDataset({len(self.rows)} videos x {self.num_views} views, split={self.split!r}, "
                f"classes={self.classes}, frames={self.frames}, stride={self.stride}, fps={self.fps}, "
                f"img_size={self._img_size}, sampler={self.sampler!r}, decoder={self.decoder.name!r}, "
                f"train={self.train})")

    # ------------------------------------------------------------------------------------------ planning

    def meta(self, path: str) -> VideoMeta:
        """The probed metadata of ``path`` (from the cache; probed on a miss)."""
        return self.cache.get(path)

    def _frame_range(self, row: Mapping[str, Any], meta: VideoMeta) -> tuple[int, int]:
        """First and last (inclusive) frame of the row's ``start``/``end`` window (seconds from the first frame)."""
        times = meta.times
        first, last = 0, meta.num_frames - 1
        for key in ("start", "end"):
            value = row.get(key)
            if value in (None, ""):
                continue
            try:
                seconds = float(value)
            except ValueError:
                raise SampleError(meta.path, f"{key}={value!r} is not a number of seconds") from None
            if key == "start":
                first = max(first, int(np.searchsorted(times, seconds - 1e-6, side="left")))
            else:
                last = min(last, int(np.searchsorted(times, seconds - 1e-6, side="left")) - 1)
        if last < first:
            raise SampleError(meta.path, f"start/end ({row.get('start')}, {row.get('end')}) s select no frames of a "
                                         f"{meta.duration:.2f} s video ({meta.num_frames} frames)")
        return first, last

    def plan(self, row: Mapping[str, Any], meta: VideoMeta, rng: np.random.Generator | None = None) -> list[Clip]:
        """The clips the sampler draws from one video (all of them for multi-clip samplers)."""
        first, last = self._frame_range(row, meta)
        times = meta.times
        if self.fps is None:
            lo, hi, span, step, table = float(first), float(last), float((self.frames - 1) * self.stride), \
                float(self.stride), None
        else:
            lo, hi, span, step, table = float(times[first]), float(times[last]), (self.frames - 1) / self.fps, \
                1.0 / self.fps, times
        if hi - lo < span - 1e-6 and self.on_short == "error":
            n, seconds = last - first + 1, times[last] - times[first]
            if self.fps is None:
                have, need = f"{n} frames ({seconds:.2f} s at {meta.fps:.3g} fps)", \
                    f"{self.frames} frames at stride {self.stride} need {int(span) + 1}"
            else:
                have = f"{seconds:.2f} s ({n} frames)"
                need = f"{self.frames} frames at {self.fps:g} fps need {span:.2f} s"
            raise SampleError(meta.path, f"video shorter than the clip: {have} but {need}; lower frames/"
                                         f"{'stride' if self.fps is None else 'fps'} or pass on_short='repeat'")
        clips = []
        for start, clip_index in self.sampler(lo, hi, span, rng, discrete=self.fps is None):
            positions = start + np.arange(self.frames) * step
            idx = positions_to_indices(positions, table, first, last)
            clips.append(Clip(idx, times[idx].astype(np.float32), clip_index))
        return clips

    # ------------------------------------------------------------------------------------------ decoding

    def decoder_for(self, meta: VideoMeta) -> VideoDecoder:
        """The decoder of this file: the chosen one once it is checked to return PyAV's frames, else PyAV."""
        if self.decoder.name == "pyav":
            return self.decoder
        key = (meta.path, meta.size, meta.mtime_ns, self.decoder.name)
        known = self.cache.checks.get(key, ...)
        if known is ...:
            known = cross_check(self.decoder, meta, self._pyav)
            self.cache.checks[key] = known  # one dict item store: atomic under the GIL
        if known is None:
            return self.decoder
        if not self.fallback:
            raise SampleError(meta.path, f"{known}; use decoder='pyav' or fallback=True")
        if meta.path not in self._fallback_logged:
            self._fallback_logged.add(meta.path)
            logger.warning("%s: %s; decoding it with PyAV (same frames, same orientation)", meta.path, known)
        return self._pyav

    def _decode_size(self, meta: VideoMeta, factor: float = 1.0) -> tuple[int, int]:
        """Frame size ``(H, W)`` the spatial transforms crop from (:func:`cover_size` of the video's display size
        at scale ``factor``); with ``decode_resize`` the decoder scales to it when it is smaller than the video."""
        return cover_size(meta.height, meta.width, self._img_size, factor, self.short_side)

    def _reencoded(self, meta: VideoMeta) -> VideoMeta | None:
        """The small copy of ``meta``'s video in ``reencode_cache`` (made on first use), or None: no cache, the
        copy would keep more than half the video's pixels, or it does not keep the source's frames."""
        if self.reencode_cache is None:
            return None
        key = (meta.path, meta.size, meta.mtime_ns)
        if key in self._small:
            return self._small[key]
        from .reencode import reencode, reencoded_path

        h, w = self._decode_size(meta, 1.25)  # the largest a training sample takes; eval samples take less
        size = (h + h % 2, w + w % 2)  # yuv420p: even sizes
        small = None
        # decoding costs about its pixel count: a copy of more than half the pixels saves too little to pay for
        # the pass over the whole video and a second lossy encode
        if 2 * size[0] * size[1] <= meta.height * meta.width:
            path = reencoded_path(meta, self.reencode_cache, size)
            if not path.exists():
                reencode(meta, path, size)
            small = self.cache.get(str(path))
            if small.num_frames != meta.num_frames or not np.allclose(small.timestamps, meta.timestamps,
                                                                      atol=1e-3):
                logger.warning("%s: the re-encoded copy %s does not keep the source's %d frame timestamps; "
                               "decoding the source", meta.path, path, meta.num_frames)
                small = None
        self._small[key] = small
        return small

    def _spatial(self, clip: torch.Tensor, crop_index: int, rng: np.random.Generator | None,
                 cover: tuple[int, int]) -> torch.Tensor:
        """``(T, H, W, 3)`` uint8 -> ``(3, T, H, W)`` float32: resized to ``cover`` (nothing to do when the decoder
        scaled the frames already), cropped, flipped and normalised.

        The crop and the flip act on the uint8 frames, so that only the crop is converted to float, in the same
        copy that moves the channels first (:func:`to_normalized`).
        """
        x = resize(clip.permute(0, 3, 1, 2), cover)  # (T, C, H, W), values in [0, 255]
        size = self._img_size
        if self.train:
            assert rng is not None
            h, w = x.shape[-2:]
            top, left = int(rng.integers(0, h - size[0] + 1)), int(rng.integers(0, w - size[1] + 1))
            x = crop(x, size, top, left)
            if self.flip and rng.random() < 0.5:
                x = x.flip(-1)
        else:
            x = three_crops(x, size)[crop_index] if self.num_crops == 3 else center_crop(x, size)
        return to_normalized(x, self.mean, self.std)

    def load_clip(self, row: Mapping[str, Any], clip_index: int = 0, rng: np.random.Generator | None = None
                  ) -> tuple[torch.Tensor, Clip, tuple[int, int]]:
        """``(T, H, W, 3)`` uint8 frames of one planned clip of ``row`` (before spatial transforms), the clip, and
        the frame size the crops are taken from (for training, at a random scale of 1 to 1.25 drawn from ``rng``).

        With ``decode_resize`` the frames come scaled to that size by FFmpeg's RGB conversion when it is smaller
        than the video's, which spares converting full-size frames and a float resize afterwards.
        """
        path = str(row.get("path"))
        meta = self.meta(path)
        clip = self.plan(row, meta, rng)[clip_index]
        factor = 1.0
        if self.train:
            assert rng is not None
            factor = float(rng.uniform(1.0, 1.25))
        cover = self._decode_size(meta, factor)
        source = self._reencoded(meta) or meta  # the same frames, indexed alike
        shrink = self.decode_resize and cover[0] <= source.height and cover[1] <= source.width \
            and cover != (source.height, source.width)
        frames = self.decoder_for(source).frames(source, clip.indices, cover if shrink else None)
        frames = torch.from_numpy(np.ascontiguousarray(frames))
        if frames.ndim != 4 or frames.shape[0] != len(clip.indices):
            raise SampleError(path, f"decoder returned frames of shape {tuple(frames.shape)}, expected "
                                    f"({len(clip.indices)}, H, W, 3)")
        return frames, clip, cover

    def load(self, row: Row, *, view: int, seed: int | None) -> dict[str, Any]:
        """``image`` and ``times`` of one view of ``row``; every random draw comes from ``seed``."""
        clip_index, crop_index = divmod(view, self.num_crops)
        path = str(row.values.get("path"))
        if self.train:  # no seed (a plain index): one from torch's generator, which DataLoader seeds per worker
            seed = seed if seed is not None else int(torch.randint(0, 2 ** 62, ()).item())
        rng = np.random.default_rng(seed if seed is not None else 0)
        cache_key = (path, clip_index)
        reuse = not self.train and not isinstance(self.sampler, RandomClipSampler)  # the crops of one clip
        if reuse and self._last is not None and self._last[0] == cache_key:
            frames, clip, cover = self._last[1]
        else:
            frames, clip, cover = self.load_clip(row.values, clip_index, rng)
            self._last = (cache_key, (frames, clip, cover))
        return {"image": self._spatial(frames, crop_index, rng, cover), "times": torch.from_numpy(clip.times)}

    # ------------------------------------------------------------------------------------------ checks

    def check_row(self, row: Row) -> list[InputError]:
        """The file decodes (probed: timestamps, first frame, last group of pictures), the row's clip window
        fits, and a non-PyAV backend returns PyAV's frames for it (else PyAV decodes it, or, without
        ``fallback``, the row is bad)."""
        try:
            meta = self.meta(str(row.values.get("path")))
            self.plan(row.values, meta, np.random.default_rng(0))
            self.decoder_for(meta)
        except InputError as err:
            return [err]
        return []

    def validate(self, num_workers: int | None = None) -> VideoValidationReport:
        """Prove that every clip the sampler can draw is decodable, without decoding the clips.

        Per file (in parallel threads): the container's packets give the real frame timestamps; the first frame
        and the last group of pictures are decoded, so samplers only draw up to the last frame that decodes; the
        row's clip window fits; a non-PyAV backend is checked against PyAV on the first, middle and last frame.
        The metadata is cached (see ``metadata_cache``) and sample loading reuses it.

        Returns:
            The unusable rows (empty: all usable), with notes on unused files of a dataset folder and on files
            decoded with PyAV instead of the chosen backend.
        """
        workers = num_workers or self.probe_workers or min(8, os.cpu_count() or 1)
        report = super().validate(num_workers=workers)
        notes = [f"{f}: not used: {why}" for f, why in self.ignored_files]
        if self.decoder.name != "pyav":
            for path in dict.fromkeys(self.paths):
                try:
                    meta = self.meta(path)
                except InputError:
                    continue
                reason = self.cache.checks.get((meta.path, meta.size, meta.mtime_ns, self.decoder.name))
                if reason:
                    notes.append(f"{meta.path}: decoded with PyAV: {reason}")
        return VideoValidationReport(report, total=report.total, source=report.source, notes=notes)


def _carve_table(rows: list[dict[str, Any]], val_fraction: float, test_fraction: float, seed: int) -> None:
    """Seeded stratified val/test splits of a table's training rows (rows without a split count as training)."""
    for r in rows:
        r.setdefault("split", "train")
    have = {r["split"] for r in rows}
    fractions = {name: frac for name, frac in (("val", val_fraction), ("test", test_fraction)) if frac}
    clash = sorted(set(fractions) & have)
    if clash:
        raise ConfigError(f"{'/'.join(clash)}_fraction given but the table already has a {'/'.join(clash)} split",
                          fix="drop the fraction, or the split column's rows")
    train = [r for r in rows if r["split"] == "train"]
    names = stratified_split([str(r.get("label")) for r in train], fractions, seed)
    for r, name in zip(train, names, strict=True):
        r["split"] = name


def average_views(logits: torch.Tensor, ids: Sequence[str]) -> tuple[list[str], torch.Tensor]:
    """Average per-view predictions per video: ``(N, K)`` logits and N ids -> (unique ids, ``(V, K)``).

    Softmax probabilities are averaged, as in the multi-view testing of SlowFast / X3D.
    """
    if len(ids) != logits.shape[0]:
        raise ConfigError(f"{len(ids)} ids for {logits.shape[0]} rows of logits")
    order: dict[str, int] = {}
    for i in ids:
        order.setdefault(i, len(order))
    index = torch.as_tensor([order[i] for i in ids])
    probs = logits.float().softmax(-1)
    total = torch.zeros(len(order), logits.shape[1]).index_add_(0, index, probs)
    counts = torch.zeros(len(order)).index_add_(0, index, torch.ones(len(ids)))
    return list(order), total / counts[:, None]
