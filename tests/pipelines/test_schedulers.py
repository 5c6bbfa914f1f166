"""WarmupCosineLR against its closed form, and its state across a save/load."""

from __future__ import annotations

import math

import pytest
import torch

from pipelines.schedulers import WarmupCosineLR


def _closed_form(step: int, warmup: int, total: int, base: float, floor: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = min(1.0, (step - warmup) / (total - warmup))
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


def _opt(lrs: tuple[float, ...] = (1e-3,)) -> torch.optim.Optimizer:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs]
    return torch.optim.SGD(groups, lr=lrs[0])


def test_matches_closed_form_per_group() -> None:
    opt = _opt((1e-3, 2.5e-4))
    sched = WarmupCosineLR(opt, warmup_steps=5, total_steps=40, min_lr_ratio=0.1)
    for step in range(45):
        for group, base in zip(opt.param_groups, (1e-3, 2.5e-4), strict=True):
            assert group["lr"] == pytest.approx(_closed_form(step, 5, 40, base, 0.1), rel=1e-9)
        opt.step()
        sched.step()


def test_fractional_warmup_set_after_construction() -> None:
    opt = _opt()
    sched = WarmupCosineLR(opt, warmup_steps=0.25)  # total unknown until the trainer says
    sched.set_total_steps(20)
    assert sched.warmup_steps == 5
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 / 5)  # step 0 recomputed, not the full lr
    for _ in range(20):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_state_dict_round_trip() -> None:
    opt = _opt()
    sched = WarmupCosineLR(opt, warmup_steps=3, total_steps=30)
    for _ in range(7):
        opt.step()
        sched.step()
    state = sched.state_dict()
    opt2 = _opt()
    sched2 = WarmupCosineLR(opt2, warmup_steps=3, total_steps=30)
    sched2.load_state_dict(state)
    opt2.step()
    sched2.step()
    opt.step()
    sched.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])


@pytest.mark.parametrize("kwargs", [{"warmup_steps": -1}, {"min_lr_ratio": 2.0}, {"total_steps": 0}])
def test_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        WarmupCosineLR(_opt(), **kwargs)
