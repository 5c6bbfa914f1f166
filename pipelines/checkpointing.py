"""Checkpoints that survive kills, pre-emption and full disks, and resumes that continue exactly.

Three pieces, wired into ``vit3d fit`` by :mod:`pipelines.train`:

- :class:`AtomicCheckpointIO` (a Lightning ``CheckpointIO``): every checkpoint is written to a temporary file beside
  its target, flushed and fsync'ed, renamed over the target and the folder fsync'ed. A kill at any moment leaves
  either the old file or the new one, never a truncated one, and nothing in ``$TMPDIR``. A full disk is a
  one-line :class:`~vit3d.errors.CheckpointError` naming the folder and its free space. Lightning's own
  ``TorchCheckpointIO`` writes through an fsspec transaction whose temporary file lives in ``$TMPDIR`` and is
  *copied* when the output folder is on another filesystem, so a kill during that copy truncates the target.
- :class:`LastCheckpoint` (a Lightning ``Checkpoint`` callback): ``last.ckpt`` holds the latest training state,
  written after every epoch (after its validation), every ``every_n_train_steps`` optimiser steps and every
  ``every_n_minutes``, whatever the monitored metric does (``ModelCheckpoint(save_last=True)`` in Lightning 2.6
  refreshes ``last.ckpt`` only when it saves a new top-k file). SIGTERM, SIGINT and the SLURM requeue signal stop
  the run at the next optimiser-step boundary with a fresh ``last.ckpt`` and exit status ``128 + signal``
  (143, 130, 138/140). It also keeps the random generators' states, so a resumed run draws the same dropout and
  drop-path masks, and prints the end-of-fit summary.
- :func:`prepare_resume`: ``--ckpt_path last`` (or a path) is checked before Lightning touches it: a truncated or
  corrupt file falls back to ``previous.ckpt`` with a warning, or stops with one line naming the file; a config
  whose model differs from the checkpoint's is an error listing the differing keys, instead of LightningCLI
  silently replacing the config's model with the checkpoint's.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import random
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.plugins.io import CheckpointIO, TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from vit3d.errors import CheckpointError, MissingInputError

__all__ = [
    "AtomicCheckpointIO",
    "LastCheckpoint",
    "TrainingStopped",
    "atomic_save",
    "load_checkpoint_file",
    "model_differences",
    "prepare_resume",
    "remove_stale_temp_files",
    "resume_command",
    "with_atomic_checkpoint_io",
]

LAST = "last.ckpt"
PREVIOUS = "previous.ckpt"
TMP_SUFFIX = ".vit3d-tmp"
# Keys of the module's hyper-parameters that do not change what a run computes, so a resume may change them.
RESUME_FREE_KEYS = frozenset({"grad_checkpointing"})


# ====================================================================================================== writing
def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); filesystems that cannot fsync a folder are skipped."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.EBADF, errno.EROFS, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def _temp_path(target: Path) -> Path:
    # Hidden, beside the target (same filesystem, so the rename is atomic), named after its writer so that a later
    # run can tell a stale one (its writer was killed) from one being written right now.
    return target.with_name(f".{target.name}.{socket.gethostname()}.{os.getpid()}{TMP_SUFFIX}")


def _disk_full(err: BaseException) -> OSError | None:
    """The ENOSPC/EDQUOT/EFBIG ``OSError`` behind ``err`` (torch wraps the file object's error in a RuntimeError)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return err
        err = err.__cause__ or err.__context__
    return None


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def atomic_save(checkpoint: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """``torch.save(checkpoint)`` to ``path`` so that ``path`` is always either the old file or the complete new one.

    Writes ``.<name>.<host>.<pid>.vit3d-tmp`` beside ``path``, flushes and fsyncs it, renames it over ``path`` and
    fsyncs the folder. The temporary file is removed on any failure (a SIGKILL leaves it; the next run removes it,
    see :func:`remove_stale_temp_files`).

    Raises:
        CheckpointError: the disk or quota is full (the message names the folder and its free space); the previous
            file at ``path`` is untouched.
    """
    target = Path(path)
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(target)
    try:
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        full = _disk_full(err)
        if full is None:
            raise
        free = _free_bytes(folder)
        need = f"; the previous one took {_size(target.stat().st_size)}" if target.is_file() else ""
        kept = f"the previous {target.name} is intact; " if target.is_file() else ""
        raise CheckpointError(
            f"no space left to write the checkpoint {target.name}: {_size(free)} free{need} "
            f"({os.strerror(full.errno)})",
            file=folder,
            fix=f"{kept}free space there or set trainer.default_root_dir on a larger disk, then resume with "
                "--ckpt_path last") from err
    _fsync_dir(folder)
    return target


def _free_bytes(folder: Path) -> int:
    try:
        stat = os.statvfs(folder)
    except OSError:
        return 0
    return stat.f_bavail * stat.f_frsize


def remove_stale_temp_files(folder: str | os.PathLike, *, max_age_s: float = 3600.0) -> list[Path]:
    """Remove temporary checkpoint files whose writer is gone (killed mid-write); returns what was removed.

    A file written on this host is stale when its writer's process no longer exists; one written on another host
    (a requeued multi-node job) when it is older than ``max_age_s``.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    host = socket.gethostname()
    for tmp in folder.glob(f".*{TMP_SUFFIX}"):
        parts = tmp.name[: -len(TMP_SUFFIX)].rsplit(".", 2)
        stale = True
        if len(parts) == 3 and parts[2].isdigit():
            if parts[1] == host:
                stale = not _pid_alive(int(parts[2])) or int(parts[2]) == os.getpid()
            else:
                with contextlib.suppress(OSError):
                    stale = time.time() - tmp.stat().st_mtime > max_age_s
        if stale:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ====================================================================================================== reading
def _archive_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete torch zip archive (``None`` when its central directory and CRCs check out)."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except zipfile.BadZipFile as err:
        return f"truncated or not a checkpoint archive ({err})"
    except (OSError, EOFError, ValueError) as err:
        return f"unreadable archive ({err})"
    if bad is not None:
        return f"corrupt member {bad!r} (CRC mismatch)"
    return None


def load_checkpoint_file(path: str | os.PathLike, *, map_location: Any = "cpu",
                         weights_only: bool | None = True) -> dict[str, Any]:
    """Load a training checkpoint; a missing, truncated, corrupt or unsafe file is a one-line CheckpointError.

    Raises:
        MissingInputError: no file at ``path``.
        CheckpointError: the file cannot be read as a checkpoint (the message says why: truncated archive, CRC
            mismatch, objects that ``torch.load(weights_only=True)`` refuses to execute).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError("no checkpoint at this path", file=path,
                                fix="give an existing .ckpt file, or --ckpt_path last for the run's last.ckpt")
    try:
        return torch.load(path, map_location=map_location, weights_only=weights_only)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as err:
        problem = _archive_problem(path)
        if problem is None:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            problem = f"torch.load failed: {first[:300]}"
        raise CheckpointError(f"cannot read the checkpoint ({_size(path.stat().st_size)}): {problem}", file=path,
                              fix="give another checkpoint with --ckpt_path, or delete this file to start "
                                  "afresh") from err


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` with atomic local writes, clear full-disk errors and checked loads.

    Remote paths (``s3://``, ``gs://``...) keep Lightning's fsspec behaviour. :func:`prepare_resume` hands over the
    checkpoint it has already loaded and checked, so a resume reads the file once.
    """

    def __init__(self) -> None:
        super().__init__()
        self._preloaded: tuple[str, dict[str, Any]] | None = None

    def preload(self, path: str | os.PathLike, checkpoint: dict[str, Any]) -> None:
        """Serve ``checkpoint`` for the next load of ``path`` (then forget it)."""
        self._preloaded = (os.path.abspath(path), checkpoint)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_save(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = lambda storage, loc: storage,
                        weights_only: bool | None = None) -> dict[str, Any]:
        if self._preloaded is not None and _is_local_file_protocol(path) and \
                self._preloaded[0] == os.path.abspath(path):
            checkpoint, self._preloaded = self._preloaded[1], None
            return checkpoint
        if not _is_local_file_protocol(path):
            return super().load_checkpoint(path, map_location, weights_only)
        return load_checkpoint_file(path, map_location=map_location,
                                    weights_only=True if weights_only is None else weights_only)


def with_atomic_checkpoint_io(plugins: Any) -> list[Any]:
    """``trainer.plugins`` plus an :class:`AtomicCheckpointIO`, unless the user configured a ``CheckpointIO``."""
    given = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
    if not any(isinstance(p, CheckpointIO) for p in given):
        given.append(AtomicCheckpointIO())
    return given


# ====================================================================================================== stopping
class TrainingStopped(SystemExit):
    """A run stopped by a signal after saving ``last.ckpt``; exit status ``128 + signal`` (143 TERM, 130 INT)."""

    def __init__(self, signum: int, checkpoint: str | None) -> None:
        super().__init__(128 + int(signum))
        self.signum = int(signum)
        self.checkpoint = checkpoint


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _rng_states() -> dict[str, Any]:
    np_state = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: Mapping[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError):
            torch.cuda.set_rng_state_all(states["cuda"])


class LastCheckpoint(Checkpoint):
    """``last.ckpt``: the latest state of a ``fit``, saved often, and a graceful stop on SIGTERM/SIGINT.

    Saves (atomically, through the trainer's ``CheckpointIO``) after every epoch, after its validation when one
    runs; every ``every_n_train_steps`` optimiser steps; every ``every_n_minutes`` of training; at the end of
    training; and when a stop signal arrives. Mid-epoch saves happen only right after an optimiser step (never
    inside a gradient-accumulation window, whose gradients a checkpoint cannot hold); one due just before a
    validation waits for the validation's end, so a resumed run validates exactly where an uninterrupted one does.

    Signals (during ``fit``): SIGTERM, SIGINT and, under SLURM with ``auto_requeue``, the requeue signal of
    Lightning's ``SLURMEnvironment`` (SIGUSR1 unless configured) finish the current optimiser step (a signal during
    validation: the validation), save ``last.ckpt`` and raise :class:`TrainingStopped` (exit status 128 + signal:
    143 for TERM, 130 for INT, 138 for USR1). The requeue signal also asks SLURM to requeue the job
    (``scontrol requeue``); the requeued job resumes from ``last.ckpt`` by itself. A second signal stops at once.
    DataLoader workers ignore these signals; the main process shuts them down.

    With ``keep_previous``, the ``last.ckpt`` being replaced stays as ``previous.ckpt`` (a hard link, so no copy
    is written), which :func:`prepare_resume` falls back to if ``last.ckpt`` ever turns out unreadable.

    Args:
        dirpath: checkpoint folder (``<default_root_dir>/checkpoints`` when omitted).
        every_n_train_steps: also save every this many optimiser steps (``null``: not by step count).
        every_n_minutes: also save when this many minutes passed since the last save (``null``: not by time).
        keep_previous: keep the replaced ``last.ckpt`` as ``previous.ckpt``.
        summary: print the end-of-fit summary (epochs, best and last checkpoints, logs; how to resume a stopped run).
    """

    command = "vit3d fit"  # the command that runs it, in its messages (the CLI sets it: `vit3d pretrain`)

    def __init__(self, dirpath: str | None = None, *, every_n_train_steps: int | None = None,
                 every_n_minutes: float | None = 30.0, keep_previous: bool = True, summary: bool = True) -> None:
        super().__init__()
        if every_n_train_steps is not None and every_n_train_steps < 1:
            raise ValueError(f"every_n_train_steps={every_n_train_steps} must be >= 1, or null to turn it off")
        if every_n_minutes is not None and not every_n_minutes > 0:
            raise ValueError(f"every_n_minutes={every_n_minutes} must be > 0, or null to turn it off")
        self.dirpath = dirpath
        self.every_n_train_steps = every_n_train_steps
        self.every_n_minutes = every_n_minutes
        self.keep_previous = keep_previous
        self.summary = summary
        self.resume_command: str | None = None  # set by the CLI: the command that resumes this run
        self.last_path: Path | None = None
        self._saved_step = -1
        self._saved_at = (-1, -1)  # (epoch, step) of the last save
        self._last_save_time = 0.0
        self._step_seen = -1
        self._deferred = False
        self._trusted_last = False  # last.ckpt is known to be complete (written or loaded by this run)
        self._rng_to_restore: dict[str, Any] | None = None
        self._pending: int | None = None
        self._active = False
        self._owner_pid = os.getpid()
        self._originals: dict[int, Any] = {}
        self._requeue_signal: int | None = None
        self._start = (0, 0, 0.0)

    # -------------------------------------------------------------------------------------------- state
    @property
    def state_key(self) -> str:
        return type(self).__name__

    def state_dict(self) -> dict[str, Any]:
        # The random generators of every rank, so dropout / drop-path masks continue as if never interrupted.
        states = _rng_states()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, states)
            return {"rng": gathered}
        return {"rng": [states]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        ranks = state_dict.get("rng") or []
        rank = torch.distributed.get_rank() if torch.distributed.is_available() and \
            torch.distributed.is_initialized() else 0
        self._rng_to_restore = ranks[rank] if rank < len(ranks) else None

    # -------------------------------------------------------------------------------------------- hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if self.dirpath is None:
            self.dirpath = os.path.join(trainer.default_root_dir, "checkpoints")
        self.last_path = Path(self.dirpath) / LAST
        if trainer.is_global_zero:
            remove_stale_temp_files(self.dirpath)
        self._saved_step, self._deferred, self._pending = -1, False, None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Installed before Lightning's own SIGTERM handler (which then calls ours too) and before any DataLoader
        # worker is forked, so workers inherit handlers that ignore the signal instead of dying mid-batch.
        self._install(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Replace Lightning's SIGTERM handler: it stops at the end of any batch, also inside an accumulation
        # window and mid-validation, and exits with status 0.
        self._install(trainer, replace=True)
        if self._rng_to_restore is not None:
            _set_rng_states(self._rng_to_restore)
            self._rng_to_restore = None
        self._step_seen = trainer.global_step
        self._last_save_time = time.monotonic()
        self._start = (trainer.current_epoch, trainer.global_step, time.monotonic())
        if trainer.ckpt_path and self.last_path is not None and \
                os.path.abspath(trainer.ckpt_path) == os.path.abspath(self.last_path):
            self._trusted_last = True
        if self._pending is not None and self._decide_stop(trainer):
            self._stop(trainer, save=False)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step == self._step_seen:
            return  # inside an accumulation window: no optimiser step yet
        self._step_seen = trainer.global_step
        stop, due = self._flags(trainer)
        if not (stop or due):
            return
        if self._validation_follows(trainer):
            self._deferred = True  # saved (and stopped) at the end of that validation
            return
        self._save(trainer)
        if stop or (trainer.world_size == 1 and self._pending is not None):  # also a signal during that write
            self._stop(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return  # the epoch's validation: saved at the epoch's end, after ModelCheckpoint updated best.ckpt
        stop = self._decide_stop(trainer)
        if self._deferred or stop:
            self._save(trainer)
        if stop:
            self._stop(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After the epoch's validation and after ModelCheckpoint (a Checkpoint callback listed before this one),
        # which saves best.ckpt here too when validation runs once per epoch: last.ckpt then holds the new best score,
        # so a resumed run never overwrites best.ckpt with a worse model.
        self._save(trainer, force=True)
        if self._decide_stop(trainer):
            self._stop(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step != self._saved_step and trainer.global_step > self._start[1]:
            self._save(trainer)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.summary and trainer.is_global_zero:
            print(self.format_summary(trainer), flush=True)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._uninstall()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._active = False  # Lightning restores handlers after this hook; ours then hand signals on (_handle)
        if isinstance(exception, SIGTERMException) and not isinstance(exception, TrainingStopped):
            # Lightning's own SIGTERM stop (only possible before training starts): nothing new to save, but the
            # exit status must say the run did not finish (SIGTERMException is SystemExit(None), status 0).
            exception.code = 128 + signal.SIGTERM
            stopped: int | None = signal.SIGTERM
        elif isinstance(exception, TrainingStopped):
            stopped = exception.signum
        else:
            return
        if self.summary and trainer.is_global_zero:
            print(self.format_summary(trainer, stopped_by=stopped), flush=True)

    # -------------------------------------------------------------------------------------------- decisions
    def _flags(self, trainer: pl.Trainer) -> tuple[bool, bool]:
        """``(stop, save due)``, agreed by all ranks in one all-reduce (they must act at the same step)."""
        by_steps = self.every_n_train_steps is not None and trainer.global_step % self.every_n_train_steps == 0
        by_time = self.every_n_minutes is not None and \
            time.monotonic() - self._last_save_time >= 60.0 * self.every_n_minutes
        if trainer.world_size > 1:  # a signal may reach one rank only, and clocks differ between ranks
            flags = torch.tensor([self._pending or 0, int(by_time)], device=trainer.strategy.root_device)
            signum, by_time = (int(v) for v in trainer.strategy.reduce(flags, reduce_op="max").tolist())
            if signum and self._pending is None:
                self._pending = signum
        return self._pending is not None, by_steps or bool(by_time)

    def _decide_stop(self, trainer: pl.Trainer) -> bool:
        """Whether a stop signal arrived on any rank."""
        return self._flags(trainer)[0]

    @staticmethod
    def _validation_follows(trainer: pl.Trainer) -> bool:
        """A validation runs right after this batch, or it is the epoch's last batch (saved after the epoch)."""
        loop = trainer.fit_loop.epoch_loop
        if loop.batch_progress.is_last_batch or loop._num_ready_batches_reached():
            return True
        fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)
        return fetcher is not None and bool(loop._should_check_val_fx(fetcher))

    # -------------------------------------------------------------------------------------------- saving
    def _save(self, trainer: pl.Trainer, *, force: bool = False) -> None:
        assert self.last_path is not None
        if trainer.global_step == self._saved_step and not force:
            return
        if self.keep_previous and self._trusted_last and trainer.is_global_zero and self.last_path.is_file():
            self._keep_previous()
        trainer.save_checkpoint(self.last_path, weights_only=False)  # the full state: resuming needs all of it
        self._saved_step = trainer.global_step
        self._saved_at = (trainer.current_epoch, trainer.global_step)
        self._trusted_last = True
        self._deferred = False
        self._last_save_time = time.monotonic()

    def _keep_previous(self) -> None:
        assert self.last_path is not None
        previous = self.last_path.with_name(PREVIOUS)
        tmp = _temp_path(previous)
        try:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            os.link(self.last_path, tmp)
            os.replace(tmp, previous)
        except OSError as err:  # a filesystem without hard links: go on without the spare copy
            with contextlib.suppress(OSError):
                tmp.unlink()
            warnings.warn(f"cannot keep {previous.name} beside {LAST} ({err}); set "
                          "last_checkpoint.keep_previous=false to silence this", stacklevel=2)
            self.keep_previous = False

    def _stop(self, trainer: pl.Trainer, *, save: bool = True) -> None:
        signum = self._pending or signal.SIGTERM
        if save:
            self._save(trainer)
        if signum == self._requeue_signal and trainer.is_global_zero:
            _requeue_slurm_job()
        raise TrainingStopped(signum, str(self.last_path) if self._saved_step >= 0 else None)

    # -------------------------------------------------------------------------------------------- signals
    def _signals(self, trainer: pl.Trainer) -> list[int]:
        signums = [signal.SIGTERM, signal.SIGINT]
        env = getattr(trainer.strategy, "cluster_environment", None)
        if env is None:
            env = getattr(getattr(trainer, "_accelerator_connector", None), "cluster_environment", None)
        if isinstance(env, SLURMEnvironment) and env.auto_requeue and env.requeue_signal is not None:
            self._requeue_signal = int(env.requeue_signal)
            signums.append(self._requeue_signal)
        return signums

    def _install(self, trainer: pl.Trainer, *, replace: bool = False) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # Python delivers signals to the main thread only
        self._owner_pid = os.getpid()
        self._active = True
        for signum in self._signals(trainer):
            current = signal.getsignal(signum)
            if not replace and current is not self._handle:
                self._originals[signum] = current
            if current is not self._handle:
                signal.signal(signum, self._handle)

    def _uninstall(self) -> None:
        self._active = False
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, handler in self._originals.items():
            if signal.getsignal(signum) is self._handle and handler is not None:
                signal.signal(signum, handler)
        self._originals = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._owner_pid:
            return  # a DataLoader worker: the main process stops and shuts the workers down
        if not self._active or self._pending is not None:
            # After fit, or a second signal: hand it to the original handler (SIGINT: KeyboardInterrupt;
            # SIGTERM: the default action, i.e. terminate now). The last complete last.ckpt stays.
            original = self._originals.get(signum, signal.SIG_DFL)
            self._uninstall()
            if callable(original):
                original(signum, frame)
            elif original != signal.SIG_IGN:
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
            return
        self._pending = signum
        # os.write, not print: the signal may have interrupted a print to the same stream (io is not reentrant).
        os.write(2, f"{self.command}: {_signal_name(signum)} received: finishing the current step, then saving {LAST} "
                    "and stopping (send it again to stop at once)\n".encode())

    # -------------------------------------------------------------------------------------------- summary
    def format_summary(self, trainer: pl.Trainer, *, stopped_by: int | None = None) -> str:
        """The end-of-fit summary: epochs run, best metric and checkpoint, last checkpoint, log folder, resume."""
        _, start_step, t0 = self._start
        elapsed = time.monotonic() - t0 if t0 else 0.0
        epochs_done = trainer.fit_loop.epoch_progress.current.completed
        lines = []
        if stopped_by is None:
            lines.append(f"{self.command}: done: {epochs_done} epoch(s), {trainer.global_step} optimiser steps "
                         f"(this run: {trainer.global_step - start_step} steps in {_duration(elapsed)})")
        else:
            lines.append(f"{self.command}: stopped by {_signal_name(stopped_by)} in epoch {trainer.current_epoch} at "
                         f"step {trainer.global_step} ({epochs_done} epoch(s) complete; exit status "
                         f"{128 + stopped_by})")
        best = trainer.checkpoint_callback
        best_path = getattr(best, "best_model_path", "") if best is not self else ""
        if best_path:
            score = getattr(best, "best_model_score", None)
            value = f"{float(score):.4f}" if score is not None else "n/a"
            lines.append(f"  best: {best_path}  ({getattr(best, 'monitor', None)} = {value}; the weights to use)")
        if self._saved_step >= 0 and self.last_path is not None:
            epoch, step = self._saved_at
            lines.append(f"  last: {self.last_path}  (epoch {epoch}, step {step}; the latest state, to resume)")
        elif self.last_path is not None and self.last_path.is_file():
            lines.append(f"  last: {self.last_path}  (unchanged by this run)")
        # The first logger's folder: Trainer.log_dir would broadcast, and this runs on rank 0 only.
        log_dir = getattr(trainer.loggers[0], "log_dir", None) if trainer.loggers else None
        if log_dir:
            lines.append(f"  logs: {log_dir}")
        skipped = dict(getattr(trainer.datamodule, "skipped", None) or {})  # rows unusable under on_error=skip
        if skipped:
            text = ", ".join(f"{n} in {split}" for split, n in skipped.items())
            lines.append(f"  skipped: {text} (unusable rows, listed in the validation report above)")
        if stopped_by is not None:
            command = self.resume_command or f"{self.command} <the same options> --ckpt_path last"
            lines.append(f"  resume: {command}")
        return "\n".join(lines)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _requeue_slurm_job() -> None:
    """Ask SLURM to requeue this job (as Lightning's own SLURM handler does), reporting a failure as a warning."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array_job else os.environ.get("SLURM_JOB_ID")
    if not job:
        return
    try:
        result = subprocess.run(["scontrol", "requeue", job], check=False, capture_output=True, text=True)
    except FileNotFoundError:
        warnings.warn(f"cannot requeue SLURM job {job}: scontrol is not on PATH", stacklevel=2)
        return
    if result.returncode != 0:
        warnings.warn(f"scontrol requeue {job} failed ({result.returncode}): {result.stderr.strip()}", stacklevel=2)


# ====================================================================================================== resuming
def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: _plain(value)}


def model_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(key, checkpoint value, config value)`` for every module hyper-parameter that differs (nested keys dotted).

    Lists and tuples compare alike; Lightning's private keys (``_instantiator``, ``_class_path``) and keys that do
    not change what a run computes (:data:`RESUME_FREE_KEYS`) are ignored.
    """
    def clean(h: Mapping[str, Any]) -> dict[str, Any]:
        return _flatten({k: v for k, v in h.items() if not str(k).startswith("_") and k not in RESUME_FREE_KEYS})

    a, b = clean(saved), clean(current)
    missing = object()
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, missing), b.get(key, missing)
        if va != vb:
            out.append((key, None if va is missing else va, None if vb is missing else vb))
    return out


def _describe(checkpoint: Mapping[str, Any]) -> str:
    return f"epoch {checkpoint.get('epoch', '?')}, step {checkpoint.get('global_step', '?')}"


def _candidates(ckpt_path: str, ckpt_dir: Path) -> tuple[Path, list[Path]]:
    if ckpt_path == "last":
        return ckpt_dir / LAST, [ckpt_dir / LAST, ckpt_dir / PREVIOUS]
    path = Path(ckpt_path)
    if path.name == LAST:
        return path, [path, path.with_name(PREVIOUS)]
    return path, [path]


def prepare_resume(ckpt_path: str | None, *, ckpt_dir: str | os.PathLike, model: pl.LightningModule,
                   trainer: pl.Trainer | None = None, argv: Sequence[str] | None = None) -> str | None:
    """Resolve and check ``vit3d fit --ckpt_path`` before Lightning loads it; returns the path to resume from.

    - ``last``: ``<ckpt_dir>/last.ckpt``; when there is none yet, ``None`` (a new run, so a job script can always
      pass ``--ckpt_path last``). Under SLURM, a requeued job (``SLURM_RESTART_COUNT`` > 0) resumes from ``last``
      even without ``--ckpt_path``.
    - a truncated or corrupt ``last.ckpt`` falls back to ``previous.ckpt`` beside it, with a warning; when no
      complete one is left, a :class:`~vit3d.errors.CheckpointError` names the file.
    - the checkpoint's model hyper-parameters must equal the config's (after the data module's links):
      LightningCLI would otherwise replace the config's model with the checkpoint's without a word.

    The loaded checkpoint is handed to the trainer's :class:`AtomicCheckpointIO` so the file is read once, and
    ``argv`` (the ``fit`` command line) becomes the resume command the end-of-fit summary prints.

    Raises:
        CheckpointError: unreadable checkpoint without a complete fallback, or a model that differs.
        MissingInputError: ``--ckpt_path`` names a file that does not exist.
    """
    ckpt_dir = Path(ckpt_dir)
    last_cb = next((c for c in trainer.callbacks if isinstance(c, LastCheckpoint)), None) if trainer else None
    command = (last_cb or LastCheckpoint).command
    if last_cb is not None and argv is not None:
        last_cb.resume_command = resume_command(argv, command)
    if ckpt_path is None and os.environ.get("SLURM_RESTART_COUNT", "0") not in ("", "0") and \
            (ckpt_dir / LAST).is_file():
        print(f"{command}: requeued SLURM job (restart {os.environ['SLURM_RESTART_COUNT']}): resuming from "
              f"{ckpt_dir / LAST}", file=sys.stderr)
        ckpt_path = "last"
    if ckpt_path is None or ckpt_path in ("best", "hpc") or not _is_local_file_protocol(ckpt_path):
        return ckpt_path
    wanted, candidates = _candidates(ckpt_path, ckpt_dir)
    if ckpt_path == "last" and not any(p.is_file() for p in candidates):
        print(f"{command}: --ckpt_path last: no checkpoint in {ckpt_dir} yet; starting a new run", file=sys.stderr)
        return None
    failure: CheckpointError | None = None
    for path in candidates:
        if not path.is_file():
            if path == wanted and ckpt_path != "last":
                load_checkpoint_file(path)  # raises MissingInputError naming it
            continue
        try:
            checkpoint = load_checkpoint_file(path)
        except CheckpointError as err:
            failure = failure or err
            continue
        if path != wanted:
            reason = failure.what if failure is not None else "missing"
            warnings.warn(f"{wanted} is unusable ({reason}); resuming from {path} ({_describe(checkpoint)}) instead: "
                          "the steps after it are trained again", stacklevel=2)
            print(f"{command}: warning: {wanted.name} is unusable; resuming from {path} "
                  f"({_describe(checkpoint)})", file=sys.stderr)
        _check_model(checkpoint, model, path)
        if trainer is not None and isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO):
            trainer.strategy.checkpoint_io.preload(path, checkpoint)
        return str(path)
    assert failure is not None
    raise CheckpointError(failure.what, file=failure.file,
                          fix=f"no complete checkpoint to fall back to ({PREVIOUS} missing or unreadable); give "
                              "another one with --ckpt_path, or remove --ckpt_path to start afresh")


def _check_model(checkpoint: Mapping[str, Any], model: pl.LightningModule, path: Path) -> None:
    saved = checkpoint.get("hyper_parameters")
    if not saved:
        return
    diffs = model_differences(saved, dict(model.hparams))
    if not diffs:
        return
    shown = "; ".join(f"{key}: {old!r} in the checkpoint, {new!r} in the config" for key, old, new in diffs[:8])
    more = f"; and {len(diffs) - 8} more" if len(diffs) > 8 else ""
    raise CheckpointError(
        f"the config's model differs from the checkpoint's in {len(diffs)} key(s): {shown}{more}", file=path,
        fix="to resume, use the checkpoint's model settings; to start a new run from its weights instead, drop "
            f"--ckpt_path and set --model.net.init_args.pretrained {path}")


def resume_command(argv: Sequence[str], command: str = LastCheckpoint.command) -> str:
    """``<command> <argv without --ckpt_path> --ckpt_path last`` (``argv`` may start with the ``fit``
    subcommand)."""
    args = list(argv)
    if args and args[0] == "fit":
        args = args[1:]
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg == "--ckpt_path":
            skip = True
            continue
        if arg.startswith("--ckpt_path="):
            continue
        out.append(arg)
    return shlex.join([*command.split(), *out, "--ckpt_path", "last"])
