"""``VolumeDataset``: CT/MRI volumes from a CSV or a list of dicts, with MONAI or TorchIO presets and caching."""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import Dataset

from vit3d.layers.helpers import check_choice, to_ntuple

from .common import (
    BadRow,
    MissingFileError,
    SampleError,
    ValidationReport,
    handle_error,
    infer_classes,
    label_index,
    read_table,
    select_split,
)
from .io import file_stamp, read_volume
from .seeding import SampleKey, seeded_global_rngs, split_key

__all__ = ["VolumeDataset", "load_volume"]

CacheMode = Literal["none", "memory", "disk"]


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vit3d" / "volumes"


class VolumeDataset(Dataset):
    """3D volumes (CT, MRI) for classification, one row per sample.

    Args:
        data: a CSV path (columns ``image``, ``label``, optional ``split`` and extra image columns) or a list
            of dicts with the same keys. Relative paths are resolved against the CSV's folder (or ``root``).
        split: keep only rows whose ``split`` is this value (or one of these values); None keeps all.
        image_keys: columns holding image paths; several become channels (e.g. ``("t1", "t2", "flair")``).
        label_key: column holding the class name; empty means unlabelled (label -1).
        mask_key: optional column with a label map (e.g. a lesion mask) transformed with the image
            (nearest interpolation) and returned under the same key.
        classes: class names in index order; default: the sorted distinct labels of all rows (every split).
        preset: ``'ct'`` (Hounsfield window to [0, 1]), ``'mri'`` (z-score over the foreground) or None
            (no intensity processing).
        backend: ``'monai'`` dictionary transforms or ``'torchio'`` transforms for the same preset.
        transform: your own transform instead of a preset; it receives the loaded dict whose ``image`` is the
            RAS-oriented ``(C, D, H, W)`` volume, and returns the dict (never cached: it may be random).
        img_size: model input size ``(D, H, W)``; volumes are cropped or padded to it. None keeps the size.
        spacing: voxel size in mm ``(D, H, W)`` to resample to; None keeps the file's spacing.
        train: add the preset's random augmentation.
        cache: ``'none'``, ``'memory'`` (MONAI ``CacheDataset``, filled when the dataset is built so that
            DataLoader workers share it) or ``'disk'`` (MONAI ``PersistentDataset``); the deterministic stage
            then runs once per volume. Disk cache keys include each file's
            modification time and size and the preprocessing settings.
        cache_dir: folder for ``cache='disk'`` (default ``~/.cache/vit3d/volumes``).
        cache_num_workers: threads filling the memory cache.
        on_error: ``'raise'`` raises an error naming the file; ``'skip'`` logs it and returns None (dropped
            by :func:`vit3d.data.collate`).
        window: CT Hounsfield window ``(low, high)`` mapped to [0, 1] (default soft tissue, W400 L40).
        on_2d: ``'error'`` or ``'slice'`` (read a 2D image as a one-slice volume).
        on_4d: ``'error'``, ``'first'`` or ``'mean'`` for 4D series.
        reader: a MONAI reader name or instance to use for every file instead of picking by extension.
        root: folder against which relative paths are resolved.
        normalize: ``(mean, std)`` applied last, to every sample (e.g. ``(0.5, 0.5)`` maps the CT window's [0, 1]
            to [-1, 1]; ViTs trained from scratch learn far faster on centred inputs). None leaves values as is.

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
        on_error: Literal["raise", "skip"] = "raise",
        window: tuple[float, float] = (-160.0, 240.0),
        on_2d: Literal["error", "slice"] = "error",
        on_4d: Literal["error", "first", "mean"] = "error",
        reader: Any = None,
        root: str | os.PathLike | None = None,
        normalize: Sequence[float] | None = None,
    ) -> None:
        check_choice("preset", preset, ("ct", "mri", None))
        check_choice("backend", backend, ("monai", "torchio"))
        check_choice("cache", cache, ("none", "memory", "disk"))
        check_choice("on_error", on_error, ("raise", "skip"))
        check_choice("on_2d", on_2d, ("error", "slice"))
        check_choice("on_4d", on_4d, ("error", "first", "mean"))
        if transform is not None and not callable(transform):
            raise ValueError(f"transform={transform!r} must be callable (a MONAI/TorchIO transform or a function)")
        self.image_keys = (image_keys,) if isinstance(image_keys, str) else tuple(image_keys)
        if not self.image_keys:
            raise ValueError("image_keys is empty; name at least one image column, e.g. ('image',)")
        self.label_key, self.mask_key = label_key, mask_key
        self._img_size = None if img_size is None else to_ntuple(img_size, 3, "img_size")
        if spacing is not None:
            spacing = (float(spacing),) * 3 if isinstance(spacing, (int, float)) else tuple(float(s) for s in spacing)
            if len(spacing) != 3 or min(spacing) <= 0:
                raise ValueError(f"spacing {spacing} must be three positive voxel sizes in mm, (D, H, W)")
        if len(window) != 2 or not window[0] < window[1]:
            raise ValueError(f"window {window} must be (low, high) in Hounsfield units with low < high")
        if normalize is not None and (len(normalize) != 2 or not float(normalize[1]) > 0):
            raise ValueError(f"normalize {tuple(normalize)} must be (mean, std) with std > 0, e.g. (0.5, 0.5)")
        self.normalize = None if normalize is None else (float(normalize[0]), float(normalize[1]))
        self.spacing, self.window = spacing, (float(window[0]), float(window[1]))
        self.preset, self.backend, self.train, self.cache, self.on_error = preset, backend, train, cache, on_error
        self.on_2d, self.on_4d, self.reader, self.user_transform = on_2d, on_4d, reader, transform
        self.cache_dir = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
        self.cache_num_workers = cache_num_workers

        path_keys = list(self.image_keys) + ([mask_key] if mask_key else [])
        all_rows = read_table(data, path_keys=path_keys, root=root)
        self.classes = infer_classes(all_rows, label_key, classes)
        self.rows = select_split(all_rows, split)
        self.split = split
        self._stages: tuple[Any, Any] | None = None
        self._dataset: Any = None
        self._seeded_pid: int | None = None
        if cache == "memory":  # fill the cache now, before DataLoader workers fork and share it
            self._get_dataset()

    # ------------------------------------------------------------------------------------------ properties

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_chans(self) -> int:
        return len(self.image_keys)

    @property
    def img_size(self) -> tuple[int, int, int]:
        """``(D, H, W)`` of the samples: ``img_size`` when given, else the first usable sample's size."""
        if self._img_size is None:
            for i in range(len(self)):
                try:
                    self._img_size = tuple(self._prepare_row(self.rows[i][1])["image"].shape[1:])
                    break
                except SampleError:
                    continue
            else:
                raise ValueError("img_size is unknown: no row could be loaded; run validate() for the reasons")
        return self._img_size

    def __len__(self) -> int:
        return len(self.rows)

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
                     on_4d=self.on_4d, reader=self.reader, user_transform=self.user_transform)

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
                    self.image_keys, self.mask_key, repr(self.user_transform), repr(self.reader), 1)
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

        from .transforms import stage_classes

        sc = stage_classes()
        prepare, augment = self.stages
        chain = [sc["PrepareStage"](prepare)] + ([sc["AugmentStage"](augment)] if augment is not None else [])
        transform = Compose(chain)
        items = [self._item(i, row) for i, row in self.rows]
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
        if self._seeded_pid != pid and getattr(self, "_augment_stage", None) is not None:
            self._augment_stage.set_random_state(seed=torch.initial_seed() % (2 ** 32))
        self._seeded_pid = pid

    def _to_sample(self, out: Mapping[str, Any], label: int, ident: str) -> dict[str, Any]:
        if isinstance(out, torch.Tensor):
            out = {"image": out}
        image = out["image"]
        if not isinstance(image, torch.Tensor):
            image = torch.as_tensor(image)
        if image.dtype != torch.float32:
            image = image.float()
        if image.ndim != 4:
            raise SampleError(ident, f"the transform returned an image of shape {tuple(image.shape)}; "
                                     "expected (C, D, H, W)")
        if self.normalize is not None:
            image = (image - self.normalize[0]) / self.normalize[1]
        sample = {"image": image, "label": torch.tensor(label, dtype=torch.int64), "id": ident, "view": 0}
        if self.mask_key:
            sample[self.mask_key] = out[self.mask_key]
        return sample

    def __getitem__(self, key: int | SampleKey) -> dict[str, Any] | None:
        index, seed = split_key(key)
        row_index, row = self.rows[index]
        ident = str(row.get(self.image_keys[0]))
        try:
            label = label_index(row.get(self.label_key), self.classes, ident)
            dataset = self._get_dataset()
            if seed is None:
                self._reseed()
                out = dataset[index]
            else:  # every random draw of this sample from its own seed (resumable, worker-independent)
                with seeded_global_rngs(seed):
                    if self._augment_stage is not None:
                        self._augment_stage.set_random_state(seed=seed % 2**32)
                    out = dataset[index]
            if isinstance(out, Mapping) and "__error__" in out:
                cls = MissingFileError if out.get("__missing__") else SampleError
                raise cls(out["__file__"], out["__error__"])
            return self._to_sample(out, label, ident)
        except SampleError as err:
            handle_error(err, self.on_error)
            return None

    # ------------------------------------------------------------------------------------------ inference

    def _prepare_row(self, row: Mapping[str, Any]) -> dict[str, Any]:
        prepare, _ = self.stages
        item = self._item(-1, row)
        try:
            return prepare(item)
        except Exception as exc:  # noqa: BLE001
            from .common import as_sample_error

            raise as_sample_error(exc, item["id"]) from exc

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
            raise ValueError(f"load_one needs a path for every image key {self.image_keys}; missing {missing}")
        row = {k: str(Path(v).expanduser().absolute()) for k, v in row.items()}
        out = self._prepare_row(row)
        return self._to_sample(out, -1, row[self.image_keys[0]])

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
            raise ValueError("invert() needs backend='monai' (TorchIO transforms keep no MetaTensor history)")
        image = sample["image"]
        if not isinstance(image, MetaTensor):
            raise ValueError("sample['image'] carries no transform history; get the sample from load_one()")
        arr = torch.as_tensor(array, dtype=torch.float32)
        if arr.ndim == 3:
            arr = arr[None]
        if tuple(arr.shape[1:]) != tuple(image.shape[1:]):
            raise ValueError(f"array of spatial shape {tuple(arr.shape[1:])} does not match the sample's "
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

    def validate(self, num_workers: int = 1) -> ValidationReport:
        """Check every row before training: label known, file present and readable, 3D, finite voxels.

        Args:
            num_workers: threads reading files in parallel.

        Returns:
            A :class:`ValidationReport` (a list of :class:`BadRow`; empty when every row is usable).
        """

        def check(pair: tuple[int, Mapping[str, Any]]) -> list[BadRow]:
            row_index, row = pair
            bad = []
            ident = str(row.get(self.image_keys[0]))
            try:
                label_index(row.get(self.label_key), self.classes, ident)
            except SampleError as err:
                bad.append(BadRow(row_index, err.file, err.reason))
            for key in (*self.image_keys, *([self.mask_key] if self.mask_key else [])):
                path = row.get(key)
                if path in (None, ""):
                    bad.append(BadRow(row_index, "", f"empty {key!r} column"))
                    continue
                try:
                    read_volume(path, on_2d=self.on_2d, on_4d=self.on_4d, reader=self.reader)
                except SampleError as err:
                    bad.append(BadRow(row_index, err.file, err.reason))
            return bad

        with ThreadPoolExecutor(max(1, num_workers)) as pool:
            results = list(pool.map(check, self.rows))
        return ValidationReport([b for r in results for b in r], total=len(self.rows))


def load_volume(path: str | os.PathLike, **kwargs: Any) -> dict[str, Any]:
    """One volume with eval preprocessing: ``VolumeDataset([], **kwargs).load_one(path)``.

    Args:
        path: the image file or DICOM folder.
        **kwargs: the preprocessing arguments of :class:`VolumeDataset` (``preset``, ``img_size``,
            ``spacing``, ``window``, ``backend``, ...).
    """
    return VolumeDataset([], **kwargs).load_one(path)
