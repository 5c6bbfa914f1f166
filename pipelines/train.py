"""``vit3d fit | validate | test | predict``: LightningCLI over :class:`ClassificationModule` and the data modules.

Configs stack (``-c base.yaml -c model.yaml``), ``--print_config`` shows the merged result, unknown keys fail, and the
data module's ``num_classes``, ``in_chans``, ``img_size`` and ``classes`` flow into the model. Everything a run
writes goes under ``trainer.default_root_dir``::

    <root>/checkpoints/best.ckpt, last.ckpt     ModelCheckpoint on val/acc (+ the last one, for --ckpt_path last)
    <root>/logs/version_N/                      TensorBoard events, metrics.csv, hparams.yaml, config.yaml
    <root>/predictions.csv                      vit3d predict (or --output PATH)

Launching on several devices or nodes: see README.md, "Training at scale" (torchrun and SLURM lines).
"""

from __future__ import annotations

import csv
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import (
    Callback,
    LearningRateMonitor,
    ModelCheckpoint,
    ProgressBar,
    RichProgressBar,
)
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info

from .datamodules import _ClassificationDataModule
from .hardware import auto_precision
from .module import ClassificationModule, _gather_objects, aggregate_views

__all__ = ["PredictionCSVWriter", "Trainer", "VitCLI", "main"]

DEFAULT_ROOT = "outputs/vit3d"


class ConfigError(ValueError):
    """A config value that cannot work, found before training starts."""


class PredictionCSVWriter(Callback):
    """Collect ``predict_step`` outputs (every rank), average views per id, write ``path,label,prob_<class>...``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._rows: list[dict[str, Any]] = []

    def on_predict_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._rows = []

    def on_predict_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        self._rows.append(outputs)

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        parts = _gather_objects(self._rows)
        rows = [r for part in parts for r in part]
        if not trainer.is_global_zero:
            return
        ids = [i for r in rows for i in r["id"]]
        probs = torch.cat([r["probs"] for r in rows]) if rows else torch.zeros(0, pl_module.num_classes)
        labels = torch.cat([r["label"] for r in rows]) if rows else torch.zeros(0, dtype=torch.long)
        uids, probs, _ = aggregate_views(ids, probs, labels)
        write_predictions(self.path, uids, probs, pl_module.class_names)
        rank_zero_info(f"vit3d predict: wrote {len(uids)} predictions to {self.path}")


def write_predictions(path: str | Path, ids: list[str], probs: torch.Tensor, class_names: list[str]) -> Path:
    """Write ``path,label,prob_<class>...`` rows (the label is the arg-max class name)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", *[f"prob_{c}" for c in class_names]])
        for i, p in zip(ids, probs.tolist(), strict=True):
            writer.writerow([i, class_names[max(range(len(p)), key=p.__getitem__)], *[f"{v:.6f}" for v in p]])
    return path


class Trainer(pl.Trainer):
    """Lightning's Trainer; ``predict`` also writes the predictions CSV."""

    def predict(self, model: pl.LightningModule | None = None, dataloaders: Any = None,
                datamodule: pl.LightningDataModule | None = None, return_predictions: bool | None = None,
                ckpt_path: str | None = None, weights_only: bool | None = None,
                output: str | None = None) -> Any:
        """Predict and write ``output`` (default ``<default_root_dir>/predictions.csv``).

        Args:
            model: the module.
            dataloaders: loaders (else the data module's predict loader).
            datamodule: the data module.
            return_predictions: also return the per-batch outputs.
            ckpt_path: checkpoint to predict with (a path, ``best`` or ``last``).
            weights_only: load the checkpoint with ``torch.load(weights_only=...)``.
            output: CSV to write: input path, predicted label, one probability column per class.
        """
        writer = PredictionCSVWriter(output or Path(self.default_root_dir) / "predictions.csv")
        self.callbacks.append(writer)
        try:
            return super().predict(model, dataloaders, datamodule, return_predictions, ckpt_path,
                                   weights_only=weights_only)
        finally:
            self.callbacks.remove(writer)


def _checkpoint_dir(root: str | None) -> str:
    return os.path.join(root or DEFAULT_ROOT, "checkpoints")


def _ckpt_path_in(args: list[str]) -> str | None:
    for i, arg in enumerate(args):
        if arg == "--ckpt_path" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--ckpt_path="):
            return arg.split("=", 1)[1]
    return None


def _data_defaults_from_checkpoint(ckpt_path: str) -> dict[str, Any]:
    """``{"data": {"class_path": ..., "init_args": {...}}}`` from a checkpoint's saved data module settings."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    hparams = dict(ckpt.get("datamodule_hyper_parameters") or {})
    class_path = hparams.pop("_class_path", None)
    hparams.pop("_instantiator", None)
    if class_path is None:
        return {}
    class_names = (ckpt.get("hyper_parameters") or {}).get("class_names")
    if class_names and hparams.get("classes") is None:
        hparams["classes"] = list(class_names)
    return {"data": {"class_path": class_path, "init_args": hparams}}


class VitCLI(LightningCLI):
    """LightningCLI with vit3d's defaults: precision for the hardware, best/last checkpoints, TB + CSV logs."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.monitor": "val/acc", "checkpoint.mode": "max", "checkpoint.save_last": True,
            "checkpoint.filename": "best", "checkpoint.auto_insert_metric_name": False,
            "checkpoint.enable_version_counter": False,
        })
        # Checkpoints always live in <default_root_dir>/checkpoints so that --ckpt_path last finds them.
        parser.link_arguments("trainer.default_root_dir", "checkpoint.dirpath", compute_fn=_checkpoint_dir)
        self.link_data_to_model(parser)

    def link_data_to_model(self, parser: LightningArgumentParser) -> None:
        """Values the data determines, passed to the model (``vit3d pretrain`` links fewer)."""
        for key in ("num_classes", "in_chans", "img_size"):
            parser.link_arguments(f"data.{key}", f"model.{key}", apply_on="instantiate")
        parser.link_arguments("data.classes", "model.class_names", apply_on="instantiate")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse, taking the data module's settings from ``--ckpt_path`` (when given) as defaults.

        So ``vit3d predict --ckpt_path best.ckpt --data.predict_data scans/`` needs no config: the checkpoint
        knows the data module, its preprocessing and the class names. Values on the command line or in a
        ``--config`` still win. (Lightning itself restores the model's settings from the checkpoint.)
        """
        if isinstance(args, list) and args and args[0] in ("validate", "test", "predict"):
            ckpt = _ckpt_path_in(args)
            if ckpt is not None and Path(ckpt).is_file():
                defaults = _data_defaults_from_checkpoint(ckpt)
                if defaults:
                    self._subcommand_parsers[args[0]].set_defaults(defaults)
        super().parse_arguments(parser, args)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if self.subcommand == "predict" and not config.get("ckpt_path") and not config.model.get("pretrained"):
            raise ConfigError("vit3d predict needs --ckpt_path (a checkpoint from vit3d fit, or best/last) or "
                              "model.pretrained; an untrained model's predictions mean nothing")

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except (ValueError, TypeError, FileNotFoundError, KeyError) as err:
            raise ConfigError(str(err)) from err

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        cfg = self._get(self.config_init, "trainer", default={})
        root = cfg.get("default_root_dir") or DEFAULT_ROOT
        logger = cfg.get("logger")
        if logger is None or logger is True:
            csv_logger = CSVLogger(root, name="logs")  # first: it picks the version and trainer.log_dir
            kwargs["logger"] = [csv_logger, TensorBoardLogger(root, name="logs", version=csv_logger.version,
                                                              default_hp_metric=False)]
        callbacks = list(cfg.get("callbacks") or [])
        if cfg.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            callbacks.append(RichProgressBar(leave=True))
        if logger is not False and not any(isinstance(c, LearningRateMonitor) for c in callbacks):
            callbacks.append(LearningRateMonitor(logging_interval="step"))
        kwargs["callbacks"] = callbacks
        kwargs.setdefault("default_root_dir", root)
        return super().instantiate_trainer(**kwargs)


def main(argv: list[str] | None = None) -> int:
    """Run ``vit3d fit|validate|test|predict ...``; returns 0, or 2 after printing a config error."""
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = {sub: {"usage": f"vit3d {sub} [-c CONFIG ...] [--print_config] [--KEY VALUE ...]"}
             for sub in ("fit", "validate", "test", "predict")}
    try:
        with warnings.catch_warnings():
            # Tests and the dispatcher pass argv explicitly while sys.argv holds the same or the test runner's.
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
            _run_cli(argv, usage)
    except ConfigError as err:
        sub = argv[0] if argv else "fit"
        print(f"vit3d {sub}: error: {err}", file=sys.stderr)
        return 2
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def _run_cli(argv: list[str], parser_kwargs: dict[str, Any]) -> VitCLI:
    return VitCLI(
        ClassificationModule,
        _ClassificationDataModule,
        subclass_mode_data=True,
        trainer_class=Trainer,
        trainer_defaults={"precision": auto_precision(), "default_root_dir": DEFAULT_ROOT},
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        parser_kwargs={"prog": "vit3d", **parser_kwargs},
        args=argv,
    )


if __name__ == "__main__":
    sys.exit(main())
