"""Callbacks the CLI tests load by class path (this folder is put on sys.path / PYTHONPATH by the tests)."""

from __future__ import annotations

import hashlib
import io
import os
import time
from pathlib import Path
from typing import Any
from unittest import mock

import lightning.pytorch as pl
import torch

from pipelines.checkpointing import AtomicCheckpointIO


class CrashAtStep(pl.Callback):
    """Raise mid-epoch once ``global_step`` reaches ``step``: a killed run, after its last checkpoint."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step >= self.step:
            raise RuntimeError(f"simulated kill at step {trainer.global_step}")


class WeightsHash(pl.Callback):
    """Each rank writes ``rank<r>.txt`` with the SHA-256 of its final weights and its global step."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        h = hashlib.sha256()
        for name, tensor in sorted(pl_module.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        Path(self.out_dir).mkdir(parents=True, exist_ok=True)
        (Path(self.out_dir) / f"rank{trainer.global_rank}.txt").write_text(
            f"{h.hexdigest()} {trainer.global_step} {trainer.world_size} {torch.distributed.is_initialized()}")


class BatchLog(pl.Callback):
    """Append ``step epoch batch_idx lr ids`` per training batch to ``path`` (debugging resumption)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: dict,
                             batch_idx: int) -> None:
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        with open(self.path, "a") as f:
            f.write(f"{trainer.global_step} {trainer.current_epoch} {batch_idx} {lr:.8g} "
                    f"{','.join(Path(i).name for i in batch['id'])} {pl_module.mix_seed}\n")


class StepMarker(pl.Callback):
    """Write ``global_step`` to ``path`` after every optimiser step, then sleep ``sleep`` s (a window for killers)."""

    def __init__(self, path: str, sleep: float = 0.0) -> None:
        self.path, self.sleep = path, sleep

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        tmp = f"{self.path}.{os.getpid()}"
        Path(tmp).write_text(str(trainer.global_step))
        os.replace(tmp, self.path)
        time.sleep(self.sleep)


class PausingCheckpointIO(AtomicCheckpointIO):
    """On its ``pause_at``-th save, write half the checkpoint, write ``marker`` and hang (for a SIGKILL).

    The test kills the process then: a kill in the middle of a checkpoint write, through the real
    :func:`pipelines.checkpointing.atomic_save` code path (only ``torch.save`` is slowed down).
    """

    def __init__(self, marker: str, pause_at: int = 3) -> None:
        super().__init__()
        self.marker, self.pause_at, self.count = marker, pause_at, 0

    def save_checkpoint(self, checkpoint: dict, path: Any, storage_options: Any = None) -> None:
        self.count += 1
        if self.count != self.pause_at:
            return super().save_checkpoint(checkpoint, path, storage_options)
        real_save = torch.save

        def half_then_hang(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
            buf = io.BytesIO()
            real_save(obj, buf, *args, **kwargs)
            data = buf.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            Path(self.marker).write_text(str(path))
            while True:
                time.sleep(1)

        with mock.patch("torch.save", half_then_hang):
            return super().save_checkpoint(checkpoint, path, storage_options)


def run_fit(argv: list[str], log: str) -> None:
    """``vit3d fit *argv`` with stdout and stderr in ``log``, exiting with its status (a process target)."""
    import sys

    from pipelines.cli import main

    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - for the process's whole life
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.exit(main(["fit", *argv]))


class InitialWeights(pl.Callback):
    """Write the network's weights at fit start (before any step) to ``path`` (safetensors)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in pl_module.model.state_dict().items()}, self.path)
