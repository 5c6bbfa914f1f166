"""``VolumeDataModule`` and ``VideoDataModule``: Lightning data modules over :mod:`vit3d.data`.

Each receives its dataset as a typed factory: ``dataset`` is ``class_path`` + ``init_args`` whose keys are the
library dataset's own keywords (:class:`vit3d.data.VolumeDataset`, :class:`vit3d.data.VideoClipDataset`), validated
and shown with their defaults by ``--print_config``; the data module supplies the rest per split (the rows, ``split``,
``classes``, ``train``). So a keyword added to a dataset appears in configs without being declared here::

    data:
      class_path: pipelines.datamodules.VolumeDataModule
      init_args:
        data: data/ct/dataset.csv
        dataset:                       # vit3d.data.VolumeDataset keywords
          img_size: [96, 96, 96]
          spacing: [1.5, 1.5, 1.5]
        batch_size: 4

Each data module exposes ``classes``, ``num_classes``, ``in_chans`` and ``img_size`` right after construction, which
the CLI links into the network (``link_arguments(..., apply_on="instantiate")``) so they are written once. The whole
config is saved in checkpoints, and :func:`pipelines.inference.load_for_inference` rebuilds the eval preprocessing
from there.

The training loader is resumable: its sampler shuffles with ``(seed, epoch)``, hands every sample its own seed
(:class:`vit3d.data.seeding.SampleKey`) for the random augmentation, and its state (epoch, batches consumed) is saved
in checkpoints, so a run resumed mid-epoch with ``--ckpt_path last`` sees the same augmented batches as an
uninterrupted one, with any number of loader workers.
"""

from __future__ import annotations

import abc
import inspect
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import lightning.pytorch as pl
import torch
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from vit3d.data import VideoClipDataset, VolumeDataset
from vit3d.data.inputs import VIDEO_SUFFIXES, VOLUME_SUFFIXES, discover_inputs
from vit3d.data.seeding import SampleKey, sample_seed
from vit3d.data.table import TableDataset
from vit3d.errors import ConfigError

__all__ = ["ResumableDataLoader", "ResumableSampler", "VideoDataModule", "VideoDatasetFactory", "VolumeDataModule",
           "VolumeDatasetFactory", "dataset_keywords", "pin_memory_for"]


def takes_sample_keys(dataset: Dataset) -> bool:
    """Whether ``dataset`` takes :class:`~vit3d.data.seeding.SampleKey` s: vit3d's table datasets do."""
    return isinstance(dataset, TableDataset)


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


class VolumeDatasetFactory(Protocol):
    """A :class:`vit3d.data.VolumeDataset` with its keywords set; the data module gives rows, split, classes, train."""

    def __call__(self, data: str | list[dict[str, Any]], /, *, split: str | None, classes: list[str] | None,
                 train: bool) -> VolumeDataset: ...


class VideoDatasetFactory(Protocol):
    """A :class:`vit3d.data.VideoClipDataset` with its keywords set; the data module gives the rest per split."""

    def __call__(self, data: str | list[dict[str, Any]], /, *, split: str | None, classes: list[str] | None,
                 train: bool) -> VideoClipDataset: ...


def dataset_keywords(factory: Any, cls: type) -> dict[str, Any]:
    """The keywords ``factory`` builds ``cls`` with: ``cls``'s defaults updated by the factory's bound keywords.

    ``factory`` is ``cls`` itself, or a ``functools.partial`` of it (what jsonargparse makes of ``class_path`` +
    ``init_args``, or what a Python caller writes).
    """
    params = inspect.signature(cls.__init__).parameters
    out = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    out.update(getattr(factory, "keywords", None) or {})
    return out


def _table_rows(dataset: Any) -> list[dict[str, Any]]:
    """The table rows of a vit3d dataset (its ``rows`` hold ``(row index, row)`` pairs or plain rows)."""
    return [r[1] if isinstance(r, tuple) else r for r in dataset.rows]


def _bad_rows_error(reports: list[tuple[str, Any]], data: str | None) -> ConfigError:
    from vit3d.errors import InputError

    count = sum(len(bad) for _, bad in reports)
    text = "; ".join(f"{split} split: {bad.format_report()}" for split, bad in reports)
    return InputError(f"{count} unusable row(s) across {len(reports)} split(s): {text}", file=data,
                      fix="fix or remove them, or set data.init_args.dataset.init_args.on_error=skip to drop them")


def pin_memory_for(setting: bool | Literal["auto"], accelerator: Any) -> bool:
    """Whether loaders pin memory: ``setting`` when True/False; for ``"auto"``, whether ``accelerator`` (a
    Lightning accelerator, or None without a trainer) is CUDA, the one whose host-to-device copies pinned memory
    speeds up (the DataLoader's pin thread copies each batch once more, for nothing, elsewhere)."""
    if setting != "auto":
        return bool(setting)
    from lightning.pytorch.accelerators import CUDAAccelerator

    return isinstance(accelerator, CUDAAccelerator)


# The splits each Lightning stage reads.
STAGE_SPLITS: dict[str, tuple[str, ...]] = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",),
                                            "predict": ("predict",)}


class _ClassificationDataModule(pl.LightningDataModule, abc.ABC):
    """Shared split handling, loaders and checks; subclasses say which dataset class they build."""

    kind: str = ""
    suffixes: tuple[str, ...] = ()
    dataset_class: type[Dataset]

    def __init__(self, data: str | None = None, *, dataset: Any, val_data: str | None = None,
                 test_data: str | None = None, predict_data: str | None = None, classes: list[str] | None = None,
                 augment: bool = True, batch_size: int = 8, eval_batch_size: int | None = None, num_workers: int = 2,
                 pin_memory: bool | Literal["auto"] = "auto", seed: int = 0, validate_files: bool = True) -> None:
        super().__init__()
        given = _given_hyperparameters.get()  # the config LightningCLI parsed, when it built this data module
        self.save_hyperparameters(ignore=["dataset"], frame=inspect.currentframe().f_back)
        # Checkpoints store the dataset as class_path + init_args, so inference rebuilds the preprocessing.
        self.hparams["dataset"] = (given or {}).get("dataset") or {
            "class_path": f"{self.dataset_class.__module__}.{self.dataset_class.__qualname__}",
            "init_args": dict(getattr(dataset, "keywords", None) or {})}
        # Which data module to rebuild (LightningCLI records it; a data module built in Python records itself).
        self.hparams.setdefault("_class_path", f"{type(self).__module__}.{type(self).__qualname__}")
        if data is None and classes is None:
            raise ConfigError(f"{type(self).__name__} has no data",
                              fix="set data.init_args.data (a CSV with a split column, or a folder) or, to predict "
                                  "from a checkpoint, data.init_args.classes")
        if batch_size < 1:
            raise ConfigError(f"data.init_args.batch_size={batch_size} must be >= 1")
        self.dataset = dataset
        self.data, self.val_data, self.test_data, self.predict_data = data, val_data, test_data, predict_data
        self.augment = augment
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        if pin_memory not in (True, False, "auto"):
            raise ConfigError(f"data.init_args.pin_memory={pin_memory!r} is not true, false or auto")
        self.pin_memory = pin_memory
        self.seed = seed
        self.validate_files = validate_files
        self._given_classes = list(classes) if classes is not None else None
        self._classes: list[str] | None = None
        self.datasets: dict[str, Dataset] = {}
        self.skipped: dict[str, int] = {}  # split -> rows found unusable by the validation pass (on_error=skip)

    @property
    def dataset_kwargs(self) -> dict[str, Any]:
        """The dataset keywords of this run (defaults filled in): what the preprocessing of every split uses."""
        return dataset_keywords(self.dataset, self.dataset_class)

    # ------------------------------------------------------------------ what subclasses provide
    def split_overrides(self, split: str) -> dict[str, Any]:
        """Dataset keywords that depend on the split (e.g. multi-view testing only at test/predict)."""
        return {}

    @abc.abstractmethod
    def predict_rows(self, files: list[str]) -> list[dict[str, Any]]:
        """Dataset rows for files to predict."""

    @abc.abstractmethod
    def input_ids(self, dataset: Dataset) -> list[str]:
        """The sample ``id`` of every row of ``dataset`` (what the predictions CSV lists, one row each)."""

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
                self._classes = list(self.split_dataset("train", classes=None).classes)
            if len(self._classes) < 2:
                raise ConfigError(f"found {len(self._classes)} class(es) {self._classes}; classification needs at "
                                  "least 2", file=self.data, fix="check the label column of the training split")
        return self._classes

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    # ------------------------------------------------------------------ datasets per split
    def _source(self, split: str) -> tuple[str | list[dict[str, Any]], str | None]:
        override = {"val": self.val_data, "test": self.test_data, "predict": self.predict_data}.get(split)
        if override is not None:
            if split == "predict" and not str(override).lower().endswith(".csv"):
                return self.predict_rows(list(discover_inputs(override, self.kind))), None
            return override, None
        if self.data is None:
            raise ConfigError(f"no data for the {split!r} split",
                              fix=f"set data.init_args.data or data.init_args.{split}_data")
        if not Path(self.data).exists():
            from vit3d.errors import MissingInputError

            raise MissingInputError("the dataset does not exist", file=self.data,
                                    fix="point data.init_args.data at the dataset CSV (or folder)")
        if split == "predict":
            split = "test"
        if Path(self.data).is_dir():  # a folder per class: root/<split>/<class>/ when present, else training only
            if (Path(self.data) / split).is_dir() or self.kind == "clip":  # the clip dataset reads every layout
                return self.data, split
            if split != "train":
                raise ConfigError(f"the data folder has no {split!r} sub-folder", file=self.data,
                                  fix=f"add {split}/<class>/..., set data.init_args.{split}_data, or use a CSV "
                                      "with a split column")
            return self.data, None
        return self.data, split

    def has_split(self, split: str) -> bool:
        """Whether ``split`` has a source (a ``*_data`` override, a sub-folder, or rows in the CSV)."""
        try:
            self._source(split)
        except ConfigError:
            return False
        return True

    def split_dataset(self, split: str, *, classes: list[str] | None | str = "known",
                      **overrides: Any) -> Dataset:
        """A new dataset of ``split`` as :meth:`setup` builds it (training augmentation on the train split when
        ``augment``), with dataset keywords from ``overrides``; ``classes="known"`` uses :attr:`classes`."""
        source, split_name = self._source(split)
        cls_arg = self.classes if classes == "known" else classes
        train = split == "train" and self.augment
        kwargs = {**self.split_overrides(split), **overrides}
        return self.dataset(source, split=split_name, classes=cls_arg, train=train, **kwargs)

    def validate_splits(self, splits: Sequence[str] = ("train", "val", "test"), *,
                        required: Sequence[str] | None = None) -> None:
        """Check every file of ``splits`` at once and report all unusable rows of all splits in one error.

        With ``on_error=raise`` (a dataset keyword) any bad row stops the run before the first step with one
        :class:`vit3d.errors.InputError` listing them all; with ``skip`` they are counted in ``self.skipped`` (and
        left out at load time). A split outside ``required`` (default: all of ``splits``) that the data does not
        have is passed over: a CSV of clips without test rows still trains.
        """
        reports = []
        required = splits if required is None else required
        for split in splits:
            if not self.has_split(split):
                continue
            try:
                ds = self.datasets.get(split) or self.split_dataset(split)
            except ConfigError:
                if split in required:
                    raise
                continue  # e.g. "has no test split": this run does not need one
            if not len(ds):
                continue
            bad = ds.validate()
            if bad:
                reports.append((split, bad))
                self.skipped[split] = len(bad)
        if reports and self.dataset_kwargs.get("on_error", "raise") == "raise":
            raise _bad_rows_error(reports, self.data)
        if reports:
            text = "\n".join(f"  {split} split: {bad.format_report()}" for split, bad in reports)
            rank_zero_warn(f"skipping {sum(self.skipped.values())} unusable row(s) (on_error=skip):\n{text}")

    def prepare_data(self) -> None:
        """Check every file of every split once (rank 0) before fit/validate/test; bad rows in one report."""
        if not self.validate_files or self.data is None:
            return
        fn = getattr(getattr(getattr(self, "trainer", None), "state", None), "fn", None)
        stage = getattr(fn, "value", fn)
        if stage in ("fit", "validate", "test", None):
            # Every split, whatever the stage: one report of everything unusable, before the first step.
            self.validate_splits(("train", "val", "test"), required=STAGE_SPLITS.get(stage))

    def setup(self, stage: str) -> None:
        wanted = STAGE_SPLITS[stage]
        for split in wanted:
            if split not in self.datasets:
                # predict accounts for every input: a bad file becomes a row with its reason, never a stop.
                extra = {"on_error": "skip"} if split == "predict" else {}
                self.datasets[split] = self.split_dataset(split, **extra)
                if len(self.datasets[split]) == 0:
                    raise ConfigError(f"the {split!r} split is empty", file=self.data,
                                      fix="check the split column (train/val/test) or the folder")

    # ------------------------------------------------------------------ loaders
    def _pin(self) -> bool:
        """``pin_memory`` of the loaders: as given, or with ``auto`` whether the trainer runs on CUDA."""
        return pin_memory_for(self.pin_memory, getattr(self.trainer, "accelerator", None))

    def _collate(self) -> Any:
        from vit3d.data.common import collate

        return collate

    def train_dataloader(self) -> DataLoader:
        ds = self.datasets["train"]
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = ResumableSampler(ds, shuffle=True, seed=self.seed, num_replicas=world, rank=rank)
        loader = ResumableDataLoader(ds, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                                     pin_memory=self._pin(), collate_fn=self._collate(),
                                     persistent_workers=self.num_workers > 0)
        loader.datamodule = self
        return loader

    def _eval_loader(self, split: str) -> DataLoader:
        return DataLoader(self.datasets[split], batch_size=self.eval_batch_size, shuffle=False,
                          num_workers=self.num_workers, pin_memory=self._pin(), collate_fn=self._collate())

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
        dataset: the :class:`vit3d.data.VolumeDataset` keywords (``img_size``, ``spacing``, ``preset``,
            ``normalize``, ``image_keys``, ``cache``, ``on_error``...): every key typed and validated, shown by
            ``--print_config``. ``img_size`` is required: it is the model's input size.
        val_data: another CSV for validation (all its rows).
        test_data: another CSV for testing (all its rows).
        predict_data: what ``vit3d predict`` reads: a CSV, a file, a folder of volumes or a glob; defaults to the
            test split of ``data``.
        classes: class names in label order; read from the training split when omitted.
        augment: random augmentation of the training split (the dataset's ``train``).
        batch_size: training batch size (per device).
        eval_batch_size: validation/test/predict batch size; defaults to ``batch_size``.
        num_workers: loader worker processes.
        pin_memory: put batches in page-locked host memory, so that copies to the GPU are asynchronous and
            faster; ``auto`` pins when the trainer's accelerator is CUDA.
        seed: shuffling seed (with the epoch).
        validate_files: check every file of every split before the first step.
    """

    kind = "volume"
    suffixes = VOLUME_SUFFIXES
    dataset_class = VolumeDataset

    def __init__(self, data: str | None = None, *, dataset: VolumeDatasetFactory = VolumeDataset,
                 **kwargs: Any) -> None:
        # The other keywords are the base class's (typed there; jsonargparse follows this call to list them).
        super().__init__(data, dataset=dataset, **kwargs)
        kw = self.dataset_kwargs
        if kw.get("img_size") is None:
            raise ConfigError("the volume dataset has no img_size; the model needs a fixed input size",
                              fix="set data.init_args.dataset.init_args.img_size, e.g. [32, 64, 64]")
        img_size = kw["img_size"]
        self._img_size = [int(img_size)] * 3 if isinstance(img_size, int) else [int(s) for s in img_size]
        keys = kw.get("image_keys") or ("image",)
        self.image_keys = [keys] if isinstance(keys, str) else list(keys)

    @property
    def in_chans(self) -> int:
        return len(self.image_keys)

    @property
    def img_size(self) -> list[int]:
        """Model input size ``[D, H, W]``."""
        return list(self._img_size)

    def predict_rows(self, files: list[str]) -> list[dict[str, Any]]:
        if len(self.image_keys) > 1:
            raise ConfigError(f"multi-channel input ({len(self.image_keys)} image columns) needs a CSV to predict",
                              fix=f"give data.init_args.predict_data as a CSV with columns {self.image_keys}")
        return [{self.image_keys[0]: f} for f in files]

    def input_ids(self, dataset: Dataset) -> list[str]:
        return [str(row.get(self.image_keys[0])) for row in _table_rows(dataset)]


class VideoDataModule(_ClassificationDataModule):
    """Video clips from a CSV (``path,label,split``) or a folder per class.

    Args:
        data: CSV with ``path``, ``label`` and ``split`` columns, or a folder holding one sub-folder per class
            (then the training split; give ``val_data``/``test_data`` folders too).
        dataset: the :class:`vit3d.data.VideoClipDataset` keywords (``frames``, ``stride``, ``img_size`` (H, W),
            ``num_clips``, ``num_crops``, ``decoder``, ``flip``, ``on_error``...), typed and validated.
            ``num_clips`` / ``num_crops`` apply at test and predict time (predictions averaged per video);
            training and validation take one clip and one crop.
        val_data: CSV or folder per class for validation.
        test_data: CSV or folder per class for testing.
        predict_data: CSV, file, folder of videos or glob for ``vit3d predict``; defaults to the test split.
        classes: class names in label order; read from the training split when omitted.
        augment: random clips, scales and crops of training videos (the dataset's ``train``).
        batch_size: training batch size (per device).
        eval_batch_size: validation/test/predict batch size.
        num_workers: loader worker processes.
        pin_memory: page-locked host memory for batches; ``auto`` pins when the trainer's accelerator is CUDA.
        seed: shuffling seed.
        validate_files: check every video of every split before the first step.
    """

    kind = "clip"
    suffixes = VIDEO_SUFFIXES
    dataset_class = VideoClipDataset

    def __init__(self, data: str | None = None, *, dataset: VideoDatasetFactory = VideoClipDataset,
                 **kwargs: Any) -> None:
        # The other keywords are the base class's (typed there; jsonargparse follows this call to list them).
        super().__init__(data, dataset=dataset, **kwargs)
        kw = self.dataset_kwargs
        size = kw["img_size"]
        self._frame_size = [int(size)] * 2 if isinstance(size, int) else [int(s) for s in size]
        self.frames = int(kw["frames"])

    def split_overrides(self, split: str) -> dict[str, Any]:
        if split in ("test", "predict"):
            return {}
        sampler = "random" if split == "train" and self.augment else "uniform"
        return {"sampler": sampler, "num_clips": 1, "num_crops": 1}

    @property
    def in_chans(self) -> int:
        return 3

    @property
    def img_size(self) -> list[int]:
        """Model input size ``[T, H, W]``: frames per clip and the frame size."""
        return [self.frames, *self._frame_size]

    def predict_rows(self, files: list[str]) -> list[dict[str, Any]]:
        return [{"path": f} for f in files]

    def input_ids(self, dataset: Dataset) -> list[str]:
        return [str(row["path"]) for row in _table_rows(dataset)]
