"""``VolumeDataset``: CT/MRI volumes from a CSV or a list of dicts, with MONAI or TorchIO presets and caching."""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from vit3d.errors import ConfigError, InputError
from vit3d.layers.helpers import check_choice, to_ntuple

from .common import SampleError, find_input_error
from .io import VolumeReader, file_stamp
from .limits import DEFAULT_MAX_VOXELS, VolumeLimits
from .table import OnError, Row, TableDataset
from .transforms import Augmentation, FieldOfView, as_augmentation, check_fov_options

__all__ = ["MAX_ABS_VALUE", "VolumeDataset", "load_volume"]

CacheMode = Literal["none", "memory", "disk"]

# Largest magnitude a preprocessed voxel may have. Beyond it a ViT's activations overflow: float16 (autocast)
# tops out at 65504 after the patch projection, LayerNorm's float32 variance at about 1e19.
MAX_ABS_VALUE = 1e6


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vit3d" / "volumes"


@dataclass(frozen=True)
class PrepareFailure:
    """The result of the deterministic stage for an input that cannot be used (cached like a result, so a bad
    file is not re-read every epoch)."""

    error: InputError


@functools.cache
def _stage_classes() -> tuple[type, type]:
    """``(PrepareStage, AugmentStage)``: MONAI ``Transform`` subclasses, defined on first use (MONAI is imported
    lazily); every lazily defined MONAI subclass in :mod:`vit3d.data` is built by a ``functools.cache``'d function."""
    from monai.transforms import Randomizable, Transform

    class PrepareStage(Transform):
        """The deterministic stage; an input error becomes a :class:`PrepareFailure` when ``keep_failures``."""

        def __init__(self, fn: Callable, keep_failures: bool) -> None:
            self.fn, self.keep_failures = fn, keep_failures

        def __call__(self, data: Mapping[str, Any]) -> Any:
            try:
                return self.fn(data)
            except Exception as exc:
                err = find_input_error(exc)
                if err is None or not self.keep_failures:
                    raise
                return PrepareFailure(err)

    class AugmentStage(Randomizable, Transform):
        """The random stage; passes a :class:`PrepareFailure` through."""

        def __init__(self, fn: Callable) -> None:
            self.fn = fn

        def set_random_state(self, seed: int | None = None, state: Any = None) -> AugmentStage:
            super().set_random_state(seed, state)
            if hasattr(self.fn, "set_random_state"):
                self.fn.set_random_state(seed=seed, state=state)
            return self

        def randomize(self, data: Any) -> None:
            pass

        def __call__(self, data: Any) -> Any:
            if isinstance(data, PrepareFailure):
                return data
            return self.fn(data)

    return PrepareStage, AugmentStage


def check_values(image: torch.Tensor, file: str, preset: str | None) -> None:
    """Raise a SampleError naming ``file`` when a preprocessed image holds NaN, infinite or overflowing values."""
    values = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    finite = np.isfinite(values)
    if not finite.all():
        n_nan, n_inf = int(np.isnan(values).sum()), int(np.isinf(values).sum())
        raise SampleError(file, f"preprocessing (preset {preset!r}) produced {n_nan} NaN and {n_inf} infinite "
                                "voxels, from extreme values in the file",
                          fix="clip the file's values to their real range, or use another preset / normalize=")
    peak = float(np.abs(values).max()) if values.size else 0.0
    if peak > MAX_ABS_VALUE:
        raise SampleError(file, f"values up to {peak:.3g} after preprocessing (preset {preset!r}), beyond "
                                f"+-{MAX_ABS_VALUE:.0e} where a model's activations overflow",
                          fix="use preset='ct' or 'mri', or normalize=(mean, std), to bring them to a small range")


class VolumeDataset(TableDataset):
    """3D volumes (CT, MRI) for classification, one row per sample.

    Args:
        data: a CSV path (columns ``image``, ``label``, optional ``split`` and extra image columns) or a list
            of dicts with the same keys. Relative paths are resolved against the CSV's folder (or ``root``).
        split: keep only rows whose ``split`` is this value (or one of these values); None keeps all.
        image_keys: columns holding image paths; several become channels (e.g. ``("t1", "t2", "flair")``).
        label_key: column holding the class name; empty means unlabelled (label -1).
        mask_key: optional column with a label map (e.g. a lesion mask) transformed with the image
            (nearest interpolation) and returned under the same key.
        classes: class names in index order; default: the sorted distinct labels of the training split (rows
            whose ``split`` is ``train``; every row when there are none). Other labels are reported by
            ``validate()``.
        preset: ``'ct'`` (Hounsfield window to [0, 1]), ``'mri'`` (z-score over the foreground) or None
            (no intensity processing).
        backend: ``'monai'`` dictionary transforms or ``'torchio'`` transforms for the same preset.
        transform: your own transform instead of a preset; it receives the loaded dict whose ``image`` is the
            RAS-oriented ``(C, D, H, W)`` volume, and returns the dict (never cached: it may be random).
        img_size: model input size ``(D, H, W)``; ``fov`` says how a volume is brought to it. None keeps the size.
        spacing: voxel size in mm ``(D, H, W)`` to resample to; None keeps the file's spacing.
        train: add the preset's random augmentation.
        cache: ``'none'``, ``'memory'`` (MONAI ``CacheDataset``, filled when the dataset is built so that
            DataLoader workers share it) or ``'disk'`` (MONAI ``PersistentDataset``); the deterministic stage
            then runs once per volume. Disk cache keys include each file's
            modification time and size and the preprocessing settings.
        cache_dir: folder for ``cache='disk'`` (default ``~/.cache/vit3d/volumes``).
        cache_num_workers: threads filling the memory cache.
        on_error: ``'raise'`` raises an error naming the file; ``'skip'`` logs it (once per row) and returns a
            :class:`~vit3d.data.common.FailedSample`, which :func:`vit3d.data.collate` gathers under ``"failed"``.
        window: CT Hounsfield window ``(low, high)`` mapped to [0, 1] (default soft tissue, W400 L40).
        on_2d: ``'error'`` or ``'slice'`` (read a 2D image as a one-slice volume).
        on_4d: ``'error'``, ``'first'`` or ``'mean'`` for 4D series.
        reader: a MONAI reader name or instance to use for every file instead of picking by extension.
        root: folder against which relative paths are resolved.
        normalize: ``(mean, std)`` applied last, to every sample (e.g. ``(0.5, 0.5)`` maps the CT window's [0, 1]
            to [-1, 1]; ViTs trained from scratch learn far faster on centred inputs). None leaves values as is.
        max_voxels: most voxels a file's header may declare; larger files are refused before they are read
            (default 2^30, 4 GiB as float32, sized for a 24 GB machine).
        max_compression_ratio: most a compressed file larger than 128 MiB inflated may grow (a gzip bomb is
            refused from its header, without inflating it).
        spacing_range: ``(low, high)`` voxel size in mm a file's geometry must stay within.
        dicom_series: the SeriesInstanceUID to read from DICOM folders that hold several series (by default
            such a folder is refused).

    Every file is checked before its voxels are read (see :mod:`vit3d.data.limits` and
    :mod:`vit3d.data.dicom`), and every sample after preprocessing (finite, within +-1e6), so a broken or
    hostile file is an error naming it, raised or skipped by ``on_error``, never a crash, a hang or NaN.
        fov: field of view, how a volume becomes ``img_size``: ``'resize'`` (the whole scan, shrunk to fit when
            larger, then padded), ``'foreground'`` (crop to the body / non-zero region first), ``'crop'`` (centre
            crop or pad; warns when a scan loses more than ``max_dropped_foreground`` of its foreground) or
            ``'whole'`` (no crop or shrink, padded up to ``img_size``: for sliding-window inference). See
            :mod:`vit3d.data.transforms`.
        augmentation: the random training transforms (:class:`vit3d.data.transforms.Augmentation`: flip axes,
            probabilities, affine and intensity ranges), or a mapping of its fields (a YAML block); None takes
            the preset's defaults.
        foreground_threshold: raw intensity above which a voxel is foreground; None: CT > -500 HU, else above
            10 % of the robust intensity range.
        max_dropped_foreground: share of the foreground ``fov='crop'`` may drop before it warns (None: never).

    Samples are dicts: ``image`` float32 ``(C, D, H, W)``, ``label`` int64 scalar, ``id`` (the first image
    path), ``view`` 0, and ``mask_key`` when given.
    """

    def __init__(
        self,
        data: str | os.PathLike | Sequence[Mapping[str, Any]],
        *,
        split: str | Sequence[str] | None = None,
        image_keys: str | Sequence[str] = ("image",),
        label_key: str = "label",
        mask_key: str | None = None,
        classes: Sequence[str] | None = None,
        preset: Literal["ct", "mri"] | None = "ct",
        backend: Literal["monai", "torchio"] = "monai",
        transform: Callable | None = None,
        img_size: int | Sequence[int] | None = None,
        spacing: float | Sequence[float] | None = None,
        train: bool = False,
        cache: CacheMode = "none",
        cache_dir: str | os.PathLike | None = None,
        cache_num_workers: int = 1,
        on_error: OnError = "raise",
        window: tuple[float, float] = (-160.0, 240.0),
        on_2d: Literal["error", "slice"] = "error",
        on_4d: Literal["error", "first", "mean"] = "error",
        reader: Any = None,
        root: str | os.PathLike | None = None,
        normalize: Sequence[float] | None = None,
        max_voxels: int = DEFAULT_MAX_VOXELS,
        max_compression_ratio: float = 100.0,
        spacing_range: tuple[float, float] = (1e-3, 100.0),
        dicom_series: str | None = None,
        fov: FieldOfView = "resize",
        augmentation: Augmentation | None = None,
        foreground_threshold: float | None = None,
        max_dropped_foreground: float | None = 0.05,
    ) -> None:
        check_choice("preset", preset, ("ct", "mri", None))
        check_choice("backend", backend, ("monai", "torchio"))
        check_choice("cache", cache, ("none", "memory", "disk"))
        check_choice("on_2d", on_2d, ("error", "slice"))
        check_choice("on_4d", on_4d, ("error", "first", "mean"))
        if transform is not None and not callable(transform):
            raise ConfigError(f"transform={transform!r} must be callable (a MONAI/TorchIO transform or a function)")
        self.image_keys = (image_keys,) if isinstance(image_keys, str) else tuple(image_keys)
        if not self.image_keys:
            raise ConfigError("image_keys is empty; name at least one image column, e.g. ('image',)")
        self.label_key, self.mask_key = label_key, mask_key
        self._img_size = None if img_size is None else to_ntuple(img_size, 3, "img_size")
        if spacing is not None:
            spacing = (float(spacing),) * 3 if isinstance(spacing, (int, float)) else tuple(float(s) for s in spacing)
            if len(spacing) != 3 or min(spacing) <= 0:
                raise ConfigError(f"spacing {spacing} must be three positive voxel sizes in mm, (D, H, W)")
        if len(window) != 2 or not window[0] < window[1]:
            raise ConfigError(f"window {window} must be (low, high) in Hounsfield units with low < high")
        if normalize is not None and (len(normalize) != 2 or not float(normalize[1]) > 0):
            raise ConfigError(f"normalize {tuple(normalize)} must be (mean, std) with std > 0, e.g. (0.5, 0.5)")
        self.normalize = None if normalize is None else (float(normalize[0]), float(normalize[1]))
        self.spacing, self.window = spacing, (float(window[0]), float(window[1]))
        self.preset, self.backend, self.train, self.cache = preset, backend, train, cache
        self.on_2d, self.on_4d, self.user_transform = on_2d, on_4d, transform
        limits = VolumeLimits(max_voxels=int(max_voxels), max_compression_ratio=float(max_compression_ratio),
                              spacing_range=(float(spacing_range[0]), float(spacing_range[1])))
        self.reader = VolumeReader(reader=reader, limits=limits, dicom_series=dicom_series)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
        self.cache_num_workers = cache_num_workers
        self.fov, self.augmentation = fov, as_augmentation(augmentation)
        self.foreground_threshold, self.max_dropped_foreground = foreground_threshold, max_dropped_foreground
        check_fov_options(fov, self.augmentation, max_dropped_foreground)

        self._stages: tuple[Any, Any] | None = None
        self._dataset: Any = None
        self._augment_stage: Any = None
        self._seeded_pid: int | None = None
        path_keys = list(self.image_keys) + ([mask_key] if mask_key else [])
        super().__init__(data, split=split, classes=classes, label_key=label_key, path_keys=path_keys,
                         on_error=on_error, root=root)
        if cache == "memory":  # fill the cache now, before DataLoader workers fork and share it
            self._get_dataset()

    # ------------------------------------------------------------------------------------------ properties

    @property
    def in_chans(self) -> int:
        return len(self.image_keys)

    @property
    def img_size(self) -> tuple[int, int, int]:
        """``(D, H, W)`` of the samples: ``img_size`` when given, else the first usable sample's size."""
        if self._img_size is None:
            for row in self.rows:
                try:
                    self._img_size = tuple(self._prepare_row(row.values)["image"].shape[1:])
                    break
                except InputError:
                    continue
            else:
                raise InputError("img_size is unknown: no row of the table could be loaded", file=self.table,
                                 fix="give img_size=, or run validate() to see why each row fails")
        return self._img_size

    def __repr__(self) -> str:
        return (f"VolumeDataset({len(self)} rows, split={self.split!r}, classes={self.classes}, "
                f"preset={self.preset!r}, backend={self.backend!r}, img_size={self._img_size}, "
                f"spacing={self.spacing}, train={self.train}, cache={self.cache!r})")

    # ------------------------------------------------------------------------------------------ pipeline

    def _build_stages(self) -> tuple[Any, Any]:
        from .transforms import build_monai_stages, build_torchio_stages

        build = build_monai_stages if self.backend == "monai" else build_torchio_stages
        return build(self.preset, image_keys=self.image_keys, mask_key=self.mask_key, img_size=self._img_size,
                     spacing=self.spacing, train=self.train, window=self.window, on_2d=self.on_2d,
                     on_4d=self.on_4d, reader=self.reader, user_transform=self.user_transform, fov=self.fov,
                     augmentation=self.augmentation, foreground_threshold=self.foreground_threshold,
                     max_dropped_foreground=self.max_dropped_foreground)

    @property
    def stages(self) -> tuple[Any, Any]:
        """``(prepare, augment)``: the deterministic (cached) and random (training) transforms."""
        if self._stages is None:
            self._stages = self._build_stages()
        return self._stages

    def _item(self, index: int, row: Mapping[str, Any]) -> dict[str, Any]:
        item = {k: row.get(k) for k in self.image_keys}
        if self.mask_key:
            item[self.mask_key] = row.get(self.mask_key)
        item["id"] = str(row.get(self.image_keys[0]))
        item["row"] = index
        return item

    def _fingerprint(self) -> str:
        settings = (self.preset, self.backend, self._img_size, self.spacing, self.window, self.on_2d, self.on_4d,
                    self.image_keys, self.mask_key, repr(self.user_transform), repr(self.reader), 1,
                    self.fov, self.foreground_threshold)
        return repr(settings)

    def _hash_item(self, item: Mapping[str, Any]) -> bytes:
        files = [file_stamp(str(item[k])) for k in (*self.image_keys, *([self.mask_key] if self.mask_key else []))]
        payload = pickle.dumps((files, self._fingerprint()))
        return hashlib.md5(payload, usedforsecurity=False).hexdigest().encode()

    def _get_dataset(self) -> Any:
        """The MONAI dataset (plain, ``CacheDataset`` or ``PersistentDataset``) over the two stages."""
        if self._dataset is not None:
            return self._dataset
        from monai import data as md
        from monai.transforms import Compose

        prepare_stage, augment_stage = _stage_classes()
        prepare, augment = self.stages
        # A failure is kept as a typed result in memory; the disk cache stores only tensors (torch.load with
        # weights_only=True), so there a failing file is read again when it is asked for again.
        chain = [prepare_stage(prepare, keep_failures=self.cache != "disk")]
        if augment is not None:
            chain.append(augment_stage(augment))
        transform = Compose(chain)
        items = [self._item(row.index, row.values) for row in self.rows]
        if self.cache == "memory":
            self._dataset = md.CacheDataset(items, transform, num_workers=self.cache_num_workers, progress=False)
        elif self.cache == "disk":
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            self._dataset = md.PersistentDataset(items, transform, cache_dir=self.cache_dir,
                                                 hash_func=self._hash_item)
        else:
            self._dataset = md.Dataset(items, transform)
        self._augment_stage = chain[1] if len(chain) > 1 else None
        return self._dataset

    def _reseed(self) -> None:
        """Give every worker process its own augmentation stream (MONAI transforms keep a NumPy RandomState)."""
        pid = os.getpid()
        if self._seeded_pid != pid and self._augment_stage is not None:
            self._augment_stage.set_random_state(seed=torch.initial_seed() % (2 ** 32))
        self._seeded_pid = pid

    def _to_sample(self, out: Mapping[str, Any], ident: str) -> dict[str, Any]:
        if isinstance(out, torch.Tensor):
            out = {"image": out}
        image = out["image"]
        if not isinstance(image, torch.Tensor):
            image = torch.as_tensor(image)
        if image.dtype != torch.float32:
            image = image.float()
        if image.ndim != 4:
            raise ConfigError(f"the transform returned an image of shape {tuple(image.shape)} for {ident}; "
                             "expected (C, D, H, W)")
        if self.normalize is not None:
            image = (image - self.normalize[0]) / self.normalize[1]
        check_values(image, ident, self.preset)
        sample = {"image": image}
        if self.mask_key:
            sample[self.mask_key] = out[self.mask_key]
        return sample

    def _transformed(self, position: int, seed: int | None) -> Any:
        """Item ``position`` through the (cached) MONAI dataset: its random stage seeded by ``seed`` when given."""
        dataset = self._get_dataset()
        self._reseed()
        try:
            if seed is None:
                out = dataset[position]
            else:  # MONAI transforms draw from their own RandomState, TorchIO ones from torch's
                if self._augment_stage is not None:
                    self._augment_stage.set_random_state(seed=seed % 2**32)
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    out = dataset[position]
        except Exception as exc:
            err = find_input_error(exc)
            if err is None:
                raise
            raise err from None
        if isinstance(out, PrepareFailure):
            raise out.error
        return out

    def load(self, row: Row, *, view: int, seed: int | None) -> dict[str, Any]:
        return self._to_sample(self._transformed(self._positions[row.index], seed), self.sample_id(row))

    # ------------------------------------------------------------------------------------------ inference

    def _prepare_row(self, row: Mapping[str, Any]) -> dict[str, Any]:
        prepare, _ = self.stages
        item = self._item(-1, row)
        try:
            return prepare(item)
        except Exception as exc:
            err = find_input_error(exc)
            if err is None:
                raise
            raise err from None

    def load_one(self, path: str | os.PathLike | Mapping[str, str]) -> dict[str, Any]:
        """One sample for inference with the exact eval preprocessing (no augmentation, no cache).

        Args:
            path: an image path, or a dict mapping each of ``image_keys`` to a path.

        Returns:
            A sample dict with label -1; with the MONAI backend ``image`` is a MetaTensor carrying the affine
            and the applied operations, so :meth:`invert` can map a model-space map back to the file.
        """
        row = dict(path) if isinstance(path, Mapping) else {self.image_keys[0]: str(path)}
        missing = [k for k in self.image_keys if k not in row]
        if missing:
            raise ConfigError(f"load_one needs a path for every image key {self.image_keys}; missing {missing}")
        row = {k: str(Path(v).expanduser().absolute()) for k, v in row.items()}
        out = self._prepare_row(row)
        sample = self._to_sample(out, row[self.image_keys[0]])
        sample.update(label=torch.tensor(-1, dtype=torch.int64), id=row[self.image_keys[0]], view=0)
        return sample

    def invert(self, array: torch.Tensor, sample: Mapping[str, Any]) -> Any:
        """Map a ``(D, H, W)`` or ``(C, D, H, W)`` array in model space back to the original file's grid.

        Args:
            array: e.g. an attention map upsampled to ``img_size``.
            sample: the sample from :meth:`load_one` (MONAI backend) the array belongs to.

        Returns:
            A MetaTensor ``(C, x, y, z)`` on the original voxel grid, in the file's ``(x, y, z)`` axis order,
            whose ``affine`` is the file's affine in RAS.
        """
        from monai.data import MetaTensor

        if self.backend != "monai":
            raise ConfigError("invert() needs backend='monai' (TorchIO transforms keep no MetaTensor history)")
        image = sample["image"]
        if not isinstance(image, MetaTensor):
            raise ConfigError("sample['image'] carries no transform history; get the sample from load_one()")
        arr = torch.as_tensor(array, dtype=torch.float32)
        if arr.ndim == 3:
            arr = arr[None]
        if tuple(arr.shape[1:]) != tuple(image.shape[1:]):
            raise ConfigError(f"array of spatial shape {tuple(arr.shape[1:])} does not match the sample's "
                             f"{tuple(image.shape[1:])}; upsample it to the model's img_size first")
        prepare, _ = self.stages
        keys = list(self.image_keys) + ([self.mask_key] if self.mask_key else [])
        data = {}
        for key in keys:
            m = MetaTensor(arr.clone(), meta=dict(image.meta), applied_operations=[dict(op) for op in
                                                                                   image.applied_operations])
            m.affine = image.affine
            data[key] = m
        out = prepare.inverse(data)
        return out[self.image_keys[0]]

    # ------------------------------------------------------------------------------------------ checks

    def check_row(self, row: Row) -> list[InputError]:
        """The errors of ``row``'s files: empty path columns, unreadable or hostile files, bad geometry, and values
        that are not finite (or overflow) after preprocessing. Reuses the memory cache when it is filled."""
        errors: list[InputError] = []
        for key in self.path_keys:
            if str(row.values.get(key) or "").strip() == "":
                errors.append(SampleError(self.sample_id(row), f"empty {key!r} column in row {row.index}",
                                          fix="fill in the path or remove the row"))
        if errors:
            return errors
        try:
            if self.cache == "memory" and self._dataset is not None:
                out = self._dataset._cache[self._positions[row.index]]  # CacheDataset: filled at construction
                if isinstance(out, PrepareFailure):
                    raise out.error
            else:
                out = self._prepare_row(row.values)
            self._to_sample(out, self.sample_id(row))
        except InputError as err:
            errors.append(err)
        return errors


def load_volume(path: str | os.PathLike, **kwargs: Any) -> dict[str, Any]:
    """One volume with eval preprocessing: ``VolumeDataset([], **kwargs).load_one(path)``.

    Args:
        path: the image file or DICOM folder.
        **kwargs: the preprocessing arguments of :class:`VolumeDataset` (``preset``, ``img_size``,
            ``spacing``, ``window``, ``backend``, ...).
    """
    return VolumeDataset([], **kwargs).load_one(path)
