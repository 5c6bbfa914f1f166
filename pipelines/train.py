"""``vit3d fit | validate | test | predict``: LightningCLI over :class:`ClassificationModule` and the data modules.

Configs stack (``-c base.yaml -c model.yaml``), ``--print_config`` shows the merged result, unknown keys fail, and the
data module's ``num_classes``, ``in_chans``, ``img_size`` and ``classes`` flow into the model. Everything a run
writes goes under ``trainer.default_root_dir``::

    <root>/checkpoints/best.ckpt                ModelCheckpoint on val/acc: the best weights
    <root>/checkpoints/last.ckpt                LastCheckpoint: the latest state (epochs, steps, minutes, signals)
    <root>/logs/version_N/                      TensorBoard events, metrics.csv, hparams.yaml, config.yaml
    <root>/predictions.csv                      vit3d predict (or --predictions.output PATH)

Launching on several devices or nodes: see README.md, "Training at scale" (torchrun and SLURM lines).
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any, NoReturn

import lightning.pytorch as pl
import torch
import yaml
from jsonargparse._namespace import NSKeyError
from lightning.pytorch.callbacks import (
    BasePredictionWriter,
    Callback,
    LearningRateMonitor,
    ModelCheckpoint,
    ProgressBar,
    RichProgressBar,
)
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info

from vit3d.data import average_views
from vit3d.errors import ConfigError
from vit3d.layers.helpers import check_keywords

from .checkpointing import LastCheckpoint, prepare_resume, with_atomic_checkpoint_io
from .datamodules import _ClassificationDataModule
from .hardware import auto_precision
from .module import ClassificationModule, _gather_objects

__all__ = ["PredictionCSVWriter", "RunSummary", "VitArgumentParser", "VitCLI", "main", "run_cli", "write_predictions"]

DEFAULT_ROOT = "outputs/vit3d"
# --ckpt_path values Lightning resolves itself (from the checkpoint callback of the run's config).
_LIGHTNING_CKPT_NAMES = ("best", "last", "hpc", "registry")


class PredictionCSVWriter(BasePredictionWriter):
    """Write one CSV row per input of ``vit3d predict``: ``path,label,prob_<class>...,error``.

    Views of one input (clips, crops) are averaged (:func:`vit3d.data.average_views`). An input that could not be
    read gets a row too, with empty label and probabilities and the reason in ``error``: every input given is
    accounted for, and a bad file never stops the run.

    Args:
        output: the CSV to write; default ``<trainer.default_root_dir>/predictions.csv``.
    """

    def __init__(self, output: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output = output
        self._rows: list[dict[str, Any]] = []

    def on_predict_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._rows = []

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: Any,
                           batch_indices: Any, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
        self._rows.append(prediction)

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        parts = _gather_objects(self._rows)
        rows = [r for part in parts for r in part]
        if not trainer.is_global_zero:
            return
        ids = [i for r in rows for i in r["id"]]
        logits = torch.cat([r["logits"] for r in rows]) if ids else torch.zeros(0, pl_module.num_classes)
        uids, probs = average_views(logits, ids) if ids else ([], logits)
        failed = {f.id: f.reason for r in rows for f in r["failed"]}
        datamodule = trainer.datamodule
        expected = (datamodule.input_ids(datamodule.datasets["predict"])
                    if isinstance(datamodule, _ClassificationDataModule) else list(uids))
        path = Path(self.output or Path(trainer.default_root_dir) / "predictions.csv")
        counts = write_predictions(path, expected, dict(zip(uids, probs, strict=True)), failed,
                                   pl_module.class_names)
        rank_zero_info(f"vit3d predict: wrote {len(expected)} rows to {path} ({counts['ok']} predicted, "
                       f"{counts['failed']} failed: see the error column)")


def write_predictions(path: str | Path, inputs: list[str], probs: dict[str, torch.Tensor], failed: dict[str, str],
                      class_names: list[str]) -> dict[str, int]:
    """Write one ``path,label,prob_<class>...,error`` row per input, in the order given.

    Args:
        path: the CSV to write.
        inputs: every input given, in order.
        probs: class probabilities of the inputs that were predicted.
        failed: the reason of each input that could not be read.
        class_names: class names in probability order.

    Returns:
        ``{"ok": ..., "failed": ...}`` row counts.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    counts = {"ok": 0, "failed": 0}
    extra = [i for i in list(probs) + list(failed) if i not in set(inputs)]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", *[f"prob_{c}" for c in class_names], "error"])
        for i in dict.fromkeys([*inputs, *extra]):
            if i in probs:
                p = probs[i].tolist()
                writer.writerow([i, class_names[max(range(len(p)), key=p.__getitem__)],
                                 *[f"{v:.6f}" for v in p], ""])
                counts["ok"] += 1
            else:
                reason = failed.get(i, "not loaded: the loader skipped it (see the log)")
                writer.writerow([i, "", *[""] * len(class_names), reason])
                counts["failed"] += 1
    return counts


class RunSummary(Callback):
    """Print how many samples were skipped (unreadable, ``on_error=skip``) at the end of ``validate`` and ``test``
    (``fit`` says it in its own summary, :class:`pipelines.checkpointing.LastCheckpoint`)."""

    def _report(self, trainer: pl.Trainer, stage: str) -> None:
        datamodule = trainer.datamodule
        found = dict(getattr(datamodule, "skipped", {}) or {})
        if found:
            text = ", ".join(f"{n} in {split}" for split, n in found.items())
            rank_zero_info(f"vit3d {stage}: skipped unusable rows ({text}); see the validation report above")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "validate":
            self._report(trainer, "validate")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._report(trainer, "test")


def _checkpoint_dir(root: str | None) -> str:
    return os.path.join(root or DEFAULT_ROOT, "checkpoints")


class VitArgumentParser(LightningArgumentParser):
    """LightningCLI's parser whose usage errors are :class:`vit3d.errors.ConfigError` (one line, exit 2), and whose
    unknown keys, nested ones included (``init_args`` of the network or the dataset), come with a "did you mean"."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        cause: BaseException | None = ex
        while cause is not None:  # a nested parser's error, already in our terms: add where it happened
            if isinstance(cause, ConfigError):
                where = _where(message)
                if where is None or cause.what.startswith(where):
                    raise cause
                raise ConfigError(f"{where}: {cause.what}", file=cause.file, fix=cause.fix) from cause
            cause = cause.__cause__
        raise ConfigError(_one_line(message),
                          fix="--help lists the options, --print_config every key with its default") from ex

    def validate(self, namespace: Any, *args: Any, **kwargs: Any) -> None:
        try:
            super().validate(namespace, *args, **kwargs)
        except NSKeyError as err:
            dests = [a.dest for a in self._actions if a.dest not in ("help", "config", "print_config")]
            unknown = [k for k in namespace.keys() if k not in dests and not any(k.startswith(d + ".") for d in dests)]
            try:
                check_keywords("init_args", unknown, dests)  # the one keyword checker: names the nearest key
            except ConfigError as unknown_err:
                raise NSKeyError(unknown_err.what) from err
            raise


def _where(message: str) -> str | None:
    """The config key jsonargparse names in ``message`` (``Parser key "model.net"``), if any."""
    found = re.search(r'Parser key "([^"]+)"', str(message))
    return found.group(1) if found else None


def _one_line(message: str) -> str:
    """jsonargparse's nested message as one line: where it happened and the innermost reason."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    where = _where(message)
    reason = lines[-1] if lines else str(message)
    return f"{where}: {reason}" if where and where not in reason else reason


def _ckpt_path_option(args: list[str]) -> str | None:
    """``--ckpt_path`` from the command line or, failing that, from the ``--config`` files (the last one wins).

    A pre-parse of that one option: the full parse needs the network and the data module, which the checkpoint
    provides.
    """
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--ckpt_path", default=None)
    pre.add_argument("-c", "--config", action="append", default=[])
    known, _ = pre.parse_known_args(args)
    if known.ckpt_path is not None:
        return known.ckpt_path
    found = None
    for config in known.config:
        if Path(config).is_file():
            loaded = yaml.safe_load(Path(config).read_text())
            if isinstance(loaded, dict) and loaded.get("ckpt_path"):
                found = str(loaded["ckpt_path"])
    return found


class VitCLI(LightningCLI):
    """LightningCLI with vit3d's defaults: precision for the hardware, best/last checkpoints, TB + CSV logs.

    ``validate``, ``test`` and ``predict`` with ``--ckpt_path`` take the network, the preprocessing and the class
    names from the checkpoint (:func:`pipelines.inference.run_config`); values on the command line or in a
    ``--config`` still win.
    """

    command = "vit3d fit"  # how the run is started, in its messages and resume hints

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.monitor": "val/acc", "checkpoint.mode": "max", "checkpoint.save_last": False,
            "checkpoint.filename": "best", "checkpoint.auto_insert_metric_name": False,
            "checkpoint.enable_version_counter": False,
        })
        # Checkpoints always live in <default_root_dir>/checkpoints so that --ckpt_path last finds them.
        parser.link_arguments("trainer.default_root_dir", "checkpoint.dirpath", compute_fn=_checkpoint_dir)
        parser.add_lightning_class_args(PredictionCSVWriter, "predictions")
        # last.ckpt (the latest state, every epoch / N steps / M minutes / on SIGTERM): after `checkpoint` so that
        # it saves after best.ckpt and holds the updated best score.
        parser.add_lightning_class_args(LastCheckpoint, "last_checkpoint")
        parser.link_arguments("trainer.default_root_dir", "last_checkpoint.dirpath", compute_fn=_checkpoint_dir)

        self.link_data_to_model(parser)

    def link_data_to_model(self, parser: LightningArgumentParser) -> None:
        """Values the data determines, passed to the model (``vit3d pretrain`` links fewer)."""
        for key in ("num_classes", "in_chans", "img_size"):
            parser.link_arguments(f"data.{key}", f"model.net.init_args.{key}", apply_on="instantiate")
        parser.link_arguments("data.classes", "model.class_names", apply_on="instantiate")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse; with ``--ckpt_path`` the checkpoint's own run config gives the defaults (see the class doc)."""
        self._argv = list(args) if isinstance(args, list) else None
        if isinstance(args, list) and args and args[0] in ("validate", "test", "predict"):
            sub = self._subcommand_parsers[args[0]]
            ckpt = _ckpt_path_option(args[1:])
            if ckpt is not None and ckpt not in _LIGHTNING_CKPT_NAMES and not Path(ckpt).is_file():
                from vit3d.errors import MissingInputError

                raise MissingInputError("checkpoint not found", file=ckpt,
                                        fix="pass a .ckpt written by `vit3d fit` (or best/last with its config)")
            if ckpt is not None and Path(ckpt).is_file():
                from .inference import run_config

                defaults = run_config(ckpt, stage=args[0])
                run_dir = Path(ckpt).absolute().parent
                if run_dir.name == "checkpoints":  # <root>/checkpoints/x.ckpt, as `vit3d fit` writes them
                    # Logs and the predictions CSV go beside the training run, and the checkpoint callbacks
                    # restored from the file keep their directory.
                    defaults["trainer.default_root_dir"] = str(run_dir.parent)
                sub.set_defaults(defaults)
        super().parse_arguments(parser, args)

    def _parse_ckpt_path(self) -> None:
        """Done in :meth:`parse_arguments`, with the user's values winning (Lightning's own lets the file win)."""

    def before_fit(self) -> None:
        config = self.config_init["fit"]
        last = self._get(self.config_init, "last_checkpoint")
        last.command = self.command
        ckpt_dir = last.dirpath
        config["ckpt_path"] = prepare_resume(config.get("ckpt_path"), ckpt_dir=ckpt_dir, model=self.model,
                                             trainer=self.trainer, argv=self._argv)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if self.subcommand == "predict" and not config.get("ckpt_path"):
            raise ConfigError("no trained checkpoint to predict with (an untrained network's predictions mean "
                              "nothing)", fix="pass --ckpt_path (a .ckpt from vit3d fit, or best/last)")

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
        callbacks.append(RunSummary())
        kwargs["callbacks"] = callbacks
        kwargs["plugins"] = with_atomic_checkpoint_io(cfg.get("plugins"))
        kwargs.setdefault("default_root_dir", root)
        return super().instantiate_trainer(**kwargs)


class _DropProductTip(logging.Filter):
    """Drops the product tip Lightning 2.6 logs at every trainer start ("Tip: ... install litlogger"): it says
    nothing about the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.msg)


_LIGHTNING_INFO = logging.getLogger("lightning.pytorch.utilities.rank_zero")


def main(argv: list[str] | None = None) -> int:
    """Run ``vit3d fit|validate|test|predict ...``; user errors propagate to :func:`pipelines.cli.main`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = {sub: {"usage": f"vit3d {sub} [-c CONFIG ...] [--print_config] [--KEY VALUE ...]"}
             for sub in ("fit", "validate", "test", "predict")}
    return run_cli(argv, {"prog": "vit3d", **usage})


def run_cli(argv: list[str], parser_kwargs: dict[str, Any], *, cli_class: type[VitCLI] = VitCLI,
            model_class: type[pl.LightningModule] = ClassificationModule,
            datamodule_class: type[pl.LightningDataModule] = _ClassificationDataModule,
            default_root: str = DEFAULT_ROOT) -> int:
    """Run a :class:`VitCLI` (``vit3d pretrain`` passes its subclass and module); returns the exit status.

    User errors propagate (:func:`pipelines.cli.main` prints them as one line, exit 2); ``--help`` and
    ``--print_config`` return their exit status.
    """
    if not any(isinstance(f, _DropProductTip) for f in _LIGHTNING_INFO.filters):
        _LIGHTNING_INFO.addFilter(_DropProductTip())
    try:
        with warnings.catch_warnings():
            # Tests and the dispatcher pass argv explicitly while sys.argv holds the same or the test runner's.
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
            # lightning 2.6 calls torch.utils._pytree's LeafSpec check, deprecated in torch 2.13, on every step
            # output: nothing a user of vit3d can act on (the test suite filters it the same way, pyproject.toml).
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                                    module="lightning")
            cli_class(
                model_class,
                datamodule_class,
                subclass_mode_data=True,
                parser_class=VitArgumentParser,
                # log_every_n_steps: Lightning's 50 logs nothing in a short run.
                trainer_defaults={"precision": auto_precision(), "default_root_dir": default_root,
                                  "log_every_n_steps": 10},
                save_config_kwargs={"overwrite": True},
                auto_configure_optimizers=False,
                parser_kwargs=parser_kwargs,
                args=argv,
            )
    except SystemExit as exit_:  # --help, --print_config
        return int(exit_.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
