"""Learning-rate schedule: linear warm-up then cosine decay, stepped once per optimiser step."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from vit3d.errors import ConfigError


class WarmupCosineLR(LambdaLR):
    """Linear warm-up from ``lr / warmup_steps`` to ``lr``, then cosine decay to ``min_lr_ratio * lr``.

    The multiplier at step ``s`` (0-based) with ``W`` warm-up steps out of ``T`` is ``(s + 1) / W`` while
    ``s < W``, then ``m + (1 - m) * (1 + cos(pi * (s - W) / (T - W))) / 2``. Each parameter group keeps its own
    base lr, so layer-wise lr decay survives the schedule.

    Args:
        optimizer: the wrapped optimiser.
        warmup_steps: warm-up length in steps, or as a fraction of ``total_steps`` when a float below 1.
        total_steps: steps of the whole run; ``None`` lets :class:`~pipelines.module.ClassificationModule` fill in
            the trainer's estimate (``trainer.estimated_stepping_batches``) through :meth:`set_total_steps`.
        min_lr_ratio: final lr as a fraction of the base lr.
    """

    def __init__(self, optimizer: Optimizer, warmup_steps: int | float = 0.1, total_steps: int | None = None,
                 min_lr_ratio: float = 0.0) -> None:
        if warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be >= 0, got {warmup_steps}")
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise ConfigError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
        self.warmup = warmup_steps
        self.total_steps = total_steps
        self.min_lr_ratio = min_lr_ratio
        if total_steps is not None:
            self._check_total(total_steps)
        super().__init__(optimizer, self.multiplier)

    @staticmethod
    def _check_total(total_steps: int) -> None:
        if total_steps < 1:
            raise ConfigError(f"total_steps must be >= 1, got {total_steps}; set trainer.max_steps or max_epochs")

    def set_total_steps(self, total_steps: int) -> None:
        """Fix the run length once it is known (the trainer's estimate of optimiser steps)."""
        self._check_total(int(total_steps))
        self.total_steps = int(total_steps)
        # The lrs set at construction assumed an unknown length; recompute them for the current step.
        factor = self.multiplier(self.last_epoch)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    @property
    def warmup_steps(self) -> int:
        if isinstance(self.warmup, float) and self.warmup < 1.0:
            return int(round(self.warmup * (self.total_steps or 0)))
        return int(self.warmup)

    def multiplier(self, step: int) -> float:
        """lr multiplier at optimiser step ``step``."""
        warmup = self.warmup_steps
        if step < warmup:
            return (step + 1) / warmup
        total = self.total_steps
        if total is None or total <= warmup:
            return 1.0
        progress = min(1.0, (step - warmup) / (total - warmup))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def state_dict(self) -> dict:
        # The lambda is a bound method: drop it (LambdaLR would try to save its __dict__, i.e. this scheduler).
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "lr_lambdas")}

    def load_state_dict(self, state_dict: dict) -> None:
        self.__dict__.update(state_dict)
