"""Callbacks the CLI tests load by class path (this folder is put on sys.path / PYTHONPATH by the tests)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import lightning.pytorch as pl
import torch


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


class InitialWeights(pl.Callback):
    """Write the network's weights at fit start (before any step) to ``path`` (safetensors)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in pl_module.model.state_dict().items()}, self.path)
