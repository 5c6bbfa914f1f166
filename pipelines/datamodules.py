"""``VolumeDataModule`` and ``VideoDataModule``: Lightning data modules over :mod:`vit3d.data`.

Each exposes ``classes``, ``num_classes``, ``in_chans`` and ``img_size`` right after construction, which the CLI
links into the model (``link_arguments(..., apply_on="instantiate")``) so they are written once. The eval-time
preprocessing is saved in the checkpoint (``save_hyperparameters``), and :func:`pipelines.inference.load_for_inference`
rebuilds it from there.

The training loader is resumable: its sampler shuffles with ``(seed, epoch)``, hands every sample its own seed
(:class:`vit3d.data.seeding.SampleKey`) for the random augmentation, and its state (epoch, batches consumed) is saved
in checkpoints, so a run resumed mid-epoch with ``--ckpt_path last`` sees the same augmented batches as an
uninterrupted one, with any number of loader workers.
"""

from __future__ import annotations

import abc
import glob
import inspect
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from vit3d.data.seeding import SampleKey, sample_seed

__all__ = ["ResumableDataLoader", "ResumableSampler", "VideoDataModule", "VolumeDataModule"]

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".dcm", ".npy", ".npz")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")


def takes_sample_keys(dataset: Dataset) -> bool:
    """Whether ``dataset.__getitem__`` takes :class:`~vit3d.data.seeding.SampleKey` s: it calls ``split_key``."""
    getitem = getattr(type(dataset), "__getitem__", None)
    return "split_key" in getattr(getattr(getitem, "__code__", None), "co_names", ())


class ResumableSampler(DistributedSampler):
    """A ``DistributedSampler`` (one replica by default) that seeds every sample and can resume mid-epoch.

    Yields :class:`~vit3d.data.seeding.SampleKey` ``(index, sample_seed(seed, epoch, index, rank))``: the dataset
    draws all random augmentation of that sample from its seed, so the augmented batches depend neither on the
    number of loader workers nor on where a run was interrupted. A dataset whose ``__getitem__`` does not take
    keys yet gets plain indices (with a warning: its augmentation cannot resume exactly).

    Args:
        dataset: the training dataset.
        shuffle: shuffle with ``(seed, epoch)``.
        seed: the shuffling and augmentation seed.
        num_replicas: number of ranks.
        rank: this rank.
        drop_last: drop the tail that does not divide among ranks.
        seeded: yield SampleKeys (``None``: when the dataset takes them).
    """

    def __init__(self, dataset: Dataset, *, shuffle: bool = True, seed: int = 0, num_replicas: int = 1,
                 rank: int = 0, drop_last: bool = False, seeded: bool | None = None) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        self._skip = 0
        self.seeded = takes_sample_keys(dataset) if seeded is None else seeded
        if not self.seeded and seeded is None:
            warnings.warn(f"{type(dataset).__name__}.__getitem__ takes no per-sample seeds (SampleKey); its random "
                          "augmentation is drawn from the worker's generator and a resumed run will not repeat it "
                          "exactly", stacklevel=2)

    def skip_next(self, n: int) -> None:
        """Drop the first ``n`` indices of the next iteration only (mid-epoch resume)."""
        self._skip = int(n)

    def __iter__(self) -> Iterator[SampleKey | int]:
        indices = list(super().__iter__())
        skip, self._skip = self._skip, 0
        indices = indices[skip:]
        if not self.seeded:
            return iter(indices)
        return iter([SampleKey(i, sample_seed(self.seed, self.epoch, i, self.rank)) for i in indices])


class ResumableDataLoader(DataLoader):
    """A DataLoader whose ``state_dict`` (epoch, batches consumed this epoch) Lightning stores in checkpoints.

    Lightning prefetches a batch ahead, so the loader cannot count consumed batches itself; the owning data module
    reads them from the trainer's progress instead.

    Without a ``generator`` of its own, the loader gets one seeded with the sampler's seed: a DataLoader draws each
    iterator's worker base seed from its generator, else from torch's global one, which would shift the model's
    dropout and drop-path draws with the number of workers and with where a run was resumed.
    """

    datamodule: pl.LightningDataModule | None = None

    def __init__(self, dataset: Dataset, **kwargs: Any) -> None:
        if kwargs.get("generator") is None:
            kwargs["generator"] = torch.Generator().manual_seed(int(getattr(kwargs.get("sampler"), "seed", 0)))
        super().__init__(dataset, **kwargs)

    def state_dict(self) -> dict[str, int]:
        trainer = getattr(self.datamodule, "trainer", None)
        consumed = 0
        if trainer is not None:
            consumed = int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)
        return {"epoch": int(self.sampler.epoch), "batches": consumed}

    def __iter__(self) -> Iterator[Any]:
        # Lightning restores no loader state from a checkpoint saved at an epoch's end (its loops then do not count
        # as restarting), sets the sampler's epoch only after it has built the first iterator, and reuses that
        # iterator for the first epoch of a resumed run: start from the epoch the trainer is at.
        trainer = getattr(self.datamodule, "trainer", None)
        if trainer is not None and isinstance(self.sampler, ResumableSampler):
            epoch = int(trainer.fit_loop.epoch_progress.current.processed)
            if epoch > self.sampler.epoch:
                self.sampler.set_epoch(epoch)
        return super().__iter__()

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["batches"] >= len(self):  # saved after the epoch's last batch: carry on with the next epoch
            self.sampler.set_epoch(state["epoch"] + 1)
            self.sampler.skip_next(0)
            return
        self.sampler.set_epoch(state["epoch"])
        self.sampler.skip_next(state["batches"] * self.batch_size)


def _expand_inputs(path: str, suffixes: Sequence[str]) -> list[str]:
    """Files named by ``path``: itself, the files with a known suffix in a folder (recursively), or a glob."""
    p = Path(path)
    if p.is_file():
        return [str(p)]
    if p.is_dir():
        files = sorted(str(f) for f in p.rglob("*") if f.is_file() and str(f).lower().endswith(tuple(suffixes))
                       and not str(f).lower().endswith(("_mask.nii.gz", "_mask.nii")))
    else:
        files = sorted(glob.glob(path, recursive=True))
    if not files:
        raise FileNotFoundError(f"no input files found at {path!r}; give a CSV, a file, a folder holding "
                                f"{', '.join(suffixes)} files, or a glob pattern")
    return files


def _check_kwargs(cls: type, kwargs: dict[str, Any], owner: str) -> None:
    params = inspect.signature(cls.__init__).parameters
    unknown = [k for k in kwargs if k not in params]
    if unknown:
        valid = [p for p in params if p not in ("self", "data")]
        raise ValueError(f"{owner}: {cls.__name__} takes no keyword(s) {unknown}; valid keywords: {valid}")


class _ClassificationDataModule(pl.LightningDataModule, abc.ABC):
    """Shared split handling, loaders and checks; subclasses say how a dataset is built."""

    kind: str = ""
    suffixes: tuple[str, ...] = ()

    def __init__(self, data: str | None, *, val_data: str | None, test_data: str | None, predict_data: str | None,
                 classes: list[str] | None, batch_size: int, eval_batch_size: int | None, num_workers: int,
                 pin_memory: bool, seed: int, validate_files: bool) -> None:
        super().__init__()
        if data is None and classes is None:
            raise ValueError(f"{type(self).__name__} needs data= (a CSV with a split column, or a folder) or, for "
                             "predict from a checkpoint, classes=")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.data, self.val_data, self.test_data, self.predict_data = data, val_data, test_data, predict_data
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.seed = seed
        self.validate_files = validate_files
        self._given_classes = list(classes) if classes is not None else None
        self._classes: list[str] | None = None
        self.datasets: dict[str, Dataset] = {}

    # ------------------------------------------------------------------ what subclasses provide
    @abc.abstractmethod
    def make_dataset(self, source: str | list[dict[str, Any]], split: str | None, train: bool, *,
                     stage_split: str, **extra: Any) -> Dataset:
        """A dataset of ``source`` rows in ``split`` (None: all), for the logical ``stage_split``."""

    @abc.abstractmethod
    def predict_rows(self, files: list[str]) -> list[dict[str, Any]]:
        """Dataset rows for files to predict."""

    @property
    @abc.abstractmethod
    def in_chans(self) -> int:
        """Input channels of the model."""

    @property
    @abc.abstractmethod
    def img_size(self) -> list[int]:
        """Model input size (spatial)."""

    # ------------------------------------------------------------------ classes, linked into the model
    @property
    def classes(self) -> list[str]:
        """Class names in label order: given, else read from the training split."""
        if self._classes is None:
            if self._given_classes is not None:
                self._classes = self._given_classes
            else:
                self._classes = list(self._split_dataset("train", train=False, with_classes=False).classes)
            if len(self._classes) < 2:
                raise ValueError(f"found {len(self._classes)} class(es) {self._classes} in {self.data}; "
                                 "classification needs at least 2")
        return self._classes

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    # ------------------------------------------------------------------ datasets per split
    def _source(self, split: str) -> tuple[str | list[dict[str, Any]], str | None]:
        override = {"val": self.val_data, "test": self.test_data, "predict": self.predict_data}.get(split)
        if override is not None:
            if str(override).lower().endswith(".csv"):
                return override, None
            if split == "predict":
                return self.predict_rows(_expand_inputs(override, self.suffixes)), None
            return override, None
        if self.data is None:
            raise ValueError(f"no data for the {split!r} split; set data= or {split}_data=")
        if not Path(self.data).exists():
            raise FileNotFoundError(f"data={self.data!r} does not exist; point it at the dataset CSV (or folder)")
        if split == "predict":
            split = "test"
        if Path(self.data).is_dir():  # a folder per class: root/<split>/<class>/ when present, else training only
            if (Path(self.data) / split).is_dir():
                return self.data, split
            if split != "train":
                raise ValueError(f"data={self.data!r} is a folder without a {split!r} sub-folder; add "
                                 f"{self.data}/{split}/<class>/..., set {split}_data= to another folder, or use a "
                                 "CSV with a split column")
            return self.data, None
        return self.data, split

    def _split_dataset(self, split: str, *, train: bool, with_classes: bool = True) -> Dataset:
        source, split_name = self._source(split)
        kwargs = {"classes": self.classes} if with_classes else {}
        return self.make_dataset(source, split_name, train, stage_split=split, **kwargs)

    def prepare_data(self) -> None:
        """Check every file of the known splits once (rank 0); a bad row stops the run with a report."""
        if not self.validate_files or self.data is None:
            return
        for split in ("train", "val", "test"):
            try:
                ds = self._split_dataset(split, train=False)
            except ValueError:
                continue  # e.g. no test split: reported when that split is used
            bad = ds.validate()
            if bad and getattr(ds, "on_error", "raise") == "raise":
                raise ValueError(f"the {split} split of {self.data} has bad rows. {bad.format_report()}\n"
                                 "Fix or remove them, or set data.init_args.on_error=skip to drop them at load time")

    def setup(self, stage: str) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}[stage]
        for split in wanted:
            if split not in self.datasets:
                self.datasets[split] = self._split_dataset(split, train=split == "train")
                if len(self.datasets[split]) == 0:
                    raise ValueError(f"the {split!r} split of {self.data} is empty; check the split column")

    # ------------------------------------------------------------------ loaders
    def _collate(self) -> Any:
        from vit3d.data.common import collate

        return collate

    def train_dataloader(self) -> DataLoader:
        ds = self.datasets["train"]
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = ResumableSampler(ds, shuffle=True, seed=self.seed, num_replicas=world, rank=rank)
        loader = ResumableDataLoader(ds, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                                     pin_memory=self.pin_memory, collate_fn=self._collate(),
                                     persistent_workers=self.num_workers > 0)
        loader.datamodule = self
        return loader

    def _eval_loader(self, split: str) -> DataLoader:
        return DataLoader(self.datasets[split], batch_size=self.eval_batch_size, shuffle=False,
                          num_workers=self.num_workers, pin_memory=self.pin_memory, collate_fn=self._collate())

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("predict")


class VolumeDataModule(_ClassificationDataModule):
    """CT / MRI volumes from a CSV (``image,label,split``; several image columns become channels).

    Args:
        data: CSV with image column(s), a label column and a ``split`` column (train/val/test).
        val_data: another CSV for validation (all its rows).
        test_data: another CSV for testing (all its rows).
        predict_data: what ``vit3d predict`` reads: a CSV, a file, a folder of volumes or a glob; defaults to the
            test split of ``data``.
        image_keys: image column(s); several columns (MRI sequences) become channels.
        label_key: label column.
        classes: class names in label order; read from the training split when omitted.
        img_size: model input size ``(D, H, W)`` after preprocessing.
        spacing: resample to this voxel spacing (mm) before resizing; ``null`` keeps the file's spacing.
        preset: intensity preset: ``ct`` (Hounsfield window), ``mri`` (per-volume z-score) or ``null``.
        normalize: ``[mean, std]`` applied after the preset; ``auto`` centres the CT window's [0, 1] on zero
            (``[0.5, 0.5]``, so air is -1) and leaves other presets alone. ViTs trained from scratch on
            uncentred [0, 1] CT volumes stayed at chance in our runs; centred, the demo model learns.
        backend: ``monai`` or ``torchio`` transforms.
        augment: random augmentation of the training split.
        cache: ``none``, ``memory`` or ``disk`` caching of the deterministic preprocessing.
        cache_dir: folder of the disk cache.
        on_error: ``raise`` on an unreadable file, or ``skip`` it (logged).
        dataset_args: further :class:`vit3d.data.VolumeDataset` keywords.
        batch_size: training batch size (per device).
        eval_batch_size: validation/test/predict batch size; defaults to ``batch_size``.
        num_workers: loader worker processes.
        pin_memory: pin host memory (GPU training).
        seed: shuffling seed (with the epoch).
        validate_files: check every file in ``prepare_data`` before training.
    """

    kind = "volume"
    suffixes = VOLUME_SUFFIXES

    def __init__(
        self,
        data: str | None = None,
        *,
        val_data: str | None = None,
        test_data: str | None = None,
        predict_data: str | None = None,
        image_keys: list[str] | None = None,
        label_key: str = "label",
        classes: list[str] | None = None,
        img_size: tuple[int, int, int] = (32, 64, 64),
        spacing: list[float] | None = None,
        preset: Literal["ct", "mri"] | None = "ct",
        normalize: tuple[float, float] | Literal["auto"] | None = "auto",
        backend: Literal["monai", "torchio"] = "monai",
        augment: bool = True,
        cache: Literal["none", "memory", "disk"] = "none",
        cache_dir: str | None = None,
        on_error: Literal["raise", "skip"] = "raise",
        dataset_args: dict[str, Any] | None = None,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
        validate_files: bool = True,
    ) -> None:
        super().__init__(data, val_data=val_data, test_data=test_data, predict_data=predict_data, classes=classes,
                         batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers,
                         pin_memory=pin_memory, seed=seed, validate_files=validate_files)
        img_size = [int(s) for s in img_size]  # one type in hparams, whatever the caller passed
        if len(img_size) != 3 or min(img_size) < 1:
            raise ValueError(f"img_size {img_size} must be three positive sizes (D, H, W)")
        self.save_hyperparameters()
        self.image_keys = list(image_keys or ["image"])
        self.label_key = label_key
        self._img_size = tuple(img_size)
        self.spacing = tuple(spacing) if spacing is not None else None
        self.preset, self.backend, self.augment = preset, backend, augment
        if normalize == "auto":
            normalize = (0.5, 0.5) if preset == "ct" else None
        self.normalize = None if normalize is None else tuple(float(v) for v in normalize)
        self.cache, self.cache_dir, self.on_error = cache, cache_dir, on_error
        self.dataset_args = dict(dataset_args or {})
        from vit3d.data.volume import VolumeDataset

        _check_kwargs(VolumeDataset, self.dataset_args, "data.dataset_args")

    @property
    def in_chans(self) -> int:
        return len(self.image_keys)

    @property
    def img_size(self) -> list[int]:
        """Model input size ``[D, H, W]``."""
        return list(self._img_size)

    def dataset_kwargs(self, train: bool) -> dict[str, Any]:
        """Keywords of :class:`vit3d.data.VolumeDataset` for a training (``train=True``) or eval split."""
        return {"image_keys": tuple(self.image_keys), "label_key": self.label_key, "preset": self.preset,
                "backend": self.backend, "img_size": self._img_size, "spacing": self.spacing,
                "normalize": self.normalize, "train": train and self.augment, "cache": self.cache, "cache_dir": self.cache_dir,
                "on_error": self.on_error, **self.dataset_args}

    def make_dataset(self, source: str | list[dict[str, Any]], split: str | None, train: bool, *,
                     stage_split: str = "train", **extra: Any) -> Dataset:
        from vit3d.data.volume import VolumeDataset

        return VolumeDataset(source, split=split, **self.dataset_kwargs(train), **extra)

    def predict_rows(self, files: list[str]) -> list[dict[str, Any]]:
        if len(self.image_keys) > 1:
            raise ValueError(f"predict_data must be a CSV with columns {self.image_keys} for multi-channel input")
        return [{self.image_keys[0]: f} for f in files]


class VideoDataModule(_ClassificationDataModule):
    """Video clips from a CSV (``path,label,split``) or a folder per class.

    Args:
        data: CSV with ``path``, ``label`` and ``split`` columns, or a folder holding one sub-folder per class
            (then the training split; give ``val_data``/``test_data`` folders too).
        val_data: CSV or folder per class for validation.
        test_data: CSV or folder per class for testing.
        predict_data: CSV, file, folder of videos or glob for ``vit3d predict``; defaults to the test split.
        classes: class names in label order; read from the training split when omitted.
        frames: frames per clip.
        stride: frame stride within a clip.
        fps: sample frames at this rate instead of every ``stride`` frames.
        frame_size: frame size ``(H, W)`` fed to the model; the model's input is ``(frames, H, W)``.
        short_side: resize the shorter side to this before cropping (default: just cover ``frame_size``).
        num_clips: temporal views per video at test and predict time (predictions are averaged per video).
        num_crops: spatial crops per clip at test and predict time (1 or 3).
        decoder: ``decord`` (falls back to PyAV per file) or ``pyav``.
        augment: random clips, scales and crops of training videos.
        flip: random horizontal flips in training; turn off when left/right matters (motion direction).
        mean: per-channel normalisation mean; ``null`` uses the dataset default.
        std: per-channel normalisation std; ``null`` uses the dataset default.
        on_error: ``raise`` on an unreadable video, or ``skip`` it.
        dataset_args: further :class:`vit3d.data.VideoClipDataset` keywords.
        batch_size: training batch size (per device).
        eval_batch_size: validation/test/predict batch size.
        num_workers: loader worker processes.
        pin_memory: pin host memory.
        seed: shuffling seed.
        validate_files: check every video in ``prepare_data``.
    """

    kind = "clip"
    suffixes = VIDEO_SUFFIXES

    def __init__(
        self,
        data: str | None = None,
        *,
        val_data: str | None = None,
        test_data: str | None = None,
        predict_data: str | None = None,
        classes: list[str] | None = None,
        frames: int = 16,
        stride: int = 2,
        fps: float | None = None,
        frame_size: tuple[int, int] = (112, 112),
        short_side: int | None = None,
        num_clips: int = 1,
        num_crops: Literal[1, 3] = 1,
        decoder: Literal["decord", "pyav"] = "decord",
        augment: bool = True,
        flip: bool = True,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        on_error: Literal["raise", "skip"] = "raise",
        dataset_args: dict[str, Any] | None = None,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
        validate_files: bool = True,
    ) -> None:
        super().__init__(data, val_data=val_data, test_data=test_data, predict_data=predict_data, classes=classes,
                         batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers,
                         pin_memory=pin_memory, seed=seed, validate_files=validate_files)
        frame_size = [int(s) for s in frame_size]
        if len(frame_size) != 2 or min(frame_size) < 1:
            raise ValueError(f"frame_size {frame_size} must be two positive sizes (H, W)")
        if frames < 1 or stride < 1 or num_clips < 1 or num_crops < 1:
            raise ValueError(f"frames ({frames}), stride ({stride}), num_clips ({num_clips}) and num_crops "
                             f"({num_crops}) must all be >= 1")
        self.save_hyperparameters()
        self.frames, self.stride, self.fps = frames, stride, fps
        self._frame_size = tuple(frame_size)
        self.short_side = short_side
        self.num_clips, self.num_crops = num_clips, num_crops
        self.decoder, self.augment, self.flip = decoder, augment, flip
        self.mean, self.std, self.on_error = mean, std, on_error
        self.dataset_args = dict(dataset_args or {})
        from vit3d.data.video import VideoClipDataset

        _check_kwargs(VideoClipDataset, self.dataset_args, "data.dataset_args")

    @property
    def in_chans(self) -> int:
        return 3

    @property
    def img_size(self) -> list[int]:
        """Model input size ``[T, H, W]``: frames per clip and the frame size."""
        return [self.frames, *self._frame_size]

    def dataset_kwargs(self, train: bool, split: str | None = None) -> dict[str, Any]:
        """Keywords of :class:`vit3d.data.VideoClipDataset` for a training or eval split (multi-view for
        ``split`` test and predict)."""
        multi = split in ("test", "predict") and (self.num_clips > 1 or self.num_crops > 1)
        kwargs: dict[str, Any] = {
            "frames": self.frames, "stride": self.stride, "fps": self.fps, "img_size": self._frame_size,
            "short_side": self.short_side, "decoder": self.decoder, "train": train and self.augment,
            "flip": self.flip, "on_error": self.on_error,
            "sampler": "random" if train and self.augment else ("multi" if multi else "uniform"),
            "num_clips": self.num_clips if multi else 1, "num_crops": self.num_crops if multi else 1,
        }
        if self.mean is not None:
            kwargs["mean"] = tuple(self.mean)
        if self.std is not None:
            kwargs["std"] = tuple(self.std)
        return {**kwargs, **self.dataset_args}

    def make_dataset(self, source: str | list[dict[str, Any]], split: str | None, train: bool, *,
                     stage_split: str = "train", **extra: Any) -> Dataset:
        from vit3d.data.video import VideoClipDataset

        return VideoClipDataset(source, split=split, **self.dataset_kwargs(train, stage_split), **extra)

    def predict_rows(self, files: list[str]) -> list[dict[str, Any]]:
        return [{"path": f} for f in files]
