"""How many DataLoader workers a training step needs: one worker's sample rate against what a step consumes.

A DataLoader worker is one process with one torch thread (PyTorch sets ``torch.set_num_threads(1)`` in its
workers) and, for clips, one decoder thread. :func:`measure_samples` times a dataset under those conditions, in
seconds of this process's CPU time: what one otherwise idle core gives, whatever else runs on the machine. A
step of ``step_time_s`` seconds on ``batch`` samples consumes ``batch / step_time_s`` samples per second, so
``ceil(demand / rate)`` workers keep it fed (:func:`workers_needed`), provided the machine has that many spare
cores (:func:`available_cores`). ``benchmarks/data_bench.py`` prints the same arithmetic per data source.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vit3d.errors import ConfigError

__all__ = ["LoaderDemand", "SampleRate", "available_cores", "loader_demand", "measure_samples", "workers_needed"]


@dataclass(frozen=True)
class SampleRate:
    """Samples of one dataset timed in one process: count, CPU seconds and wall-clock seconds.

    ``per_worker`` (samples per CPU second) is what one DataLoader worker delivers on a core of its own;
    ``wall`` is lower when other jobs share the cores.
    """

    samples: int
    cpu_s: float
    wall_s: float

    @property
    def per_worker(self) -> float:
        return self.samples / max(self.cpu_s, 1e-9)

    @property
    def wall(self) -> float:
        return self.samples / max(self.wall_s, 1e-9)


def workers_needed(demand: float, per_worker: float) -> int:
    """DataLoader workers that deliver ``demand`` samples/s at ``per_worker`` samples/s each: ``ceil(ratio)``."""
    if per_worker <= 0:
        raise ConfigError(f"a worker rate of {per_worker} samples/s cannot feed anything")
    return max(1, math.ceil(demand / per_worker - 1e-9))


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@dataclass(frozen=True)
class LoaderDemand:
    """One worker's measured rate against a training step's consumption.

    Attributes:
        rate: the measured samples.
        step_time_s: seconds per training step (forward, backward, optimiser) on the accelerator.
        batch: samples per step (per device).
        demand: samples per second the step consumes, ``batch / step_time_s``.
        workers: DataLoader workers that feed it, ``ceil(demand / rate.per_worker)``.
        cores: cores available to this process; more workers than that cannot all run at once.
    """

    rate: SampleRate
    step_time_s: float
    batch: int
    demand: float
    workers: int
    cores: int

    @property
    def fits(self) -> bool:
        """Whether the workers fit on this machine's cores beside the training process itself."""
        return self.workers <= max(1, self.cores - 1)

    def to_dict(self) -> dict[str, Any]:
        return {"samples_timed": self.rate.samples, "cpu_s": self.rate.cpu_s, "wall_s": self.rate.wall_s,
                "samples_per_s_per_worker": self.rate.per_worker, "samples_per_s_wall": self.rate.wall,
                "step_time_s": self.step_time_s, "batch": self.batch, "demand_samples_per_s": self.demand,
                "workers_needed": self.workers, "cores": self.cores, "fits_cores": self.fits}

    def describe(self) -> str:
        """One readable line: the rate, the demand and the worker count."""
        return (f"one worker: {self.rate.per_worker:.1f} samples/s (CPU time); a {self.step_time_s:g} s step of "
                f"{self.batch} samples consumes {self.demand:.1f} samples/s: {self.workers} DataLoader worker(s) "
                f"feed it ({self.cores} cores here)")


def loader_demand(rate: SampleRate, *, step_time_s: float, batch: int, cores: int | None = None) -> LoaderDemand:
    """How many workers at ``rate`` feed a step of ``step_time_s`` seconds on ``batch`` samples."""
    if not step_time_s > 0:
        raise ConfigError(f"step time {step_time_s} s must be positive", fix="e.g. --step-time 0.25")
    if batch < 1:
        raise ConfigError(f"batch {batch} must be at least 1")
    demand = batch / step_time_s
    return LoaderDemand(rate=rate, step_time_s=float(step_time_s), batch=int(batch), demand=demand,
                        workers=workers_needed(demand, rate.per_worker),
                        cores=available_cores() if cores is None else int(cores))


def _keys(dataset: Any, indices: Sequence[int], seed: int) -> list[Any]:
    """Per-sample seeded keys for vit3d's table datasets (all random draws from the key), plain indices else."""
    from .seeding import SampleKey, sample_seed
    from .table import TableDataset

    if isinstance(dataset, TableDataset):
        return [SampleKey(i, sample_seed(seed, 0, i)) for i in indices]
    return list(indices)


def measure_samples(dataset: torch.utils.data.Dataset, *, samples: int = 8, threads: int = 1,
                    seed: int = 0) -> SampleRate:
    """Time ``samples`` items of ``dataset`` as a DataLoader worker loads them (``threads`` torch threads).

    The items are spread over the dataset. Each is loaded once untimed first, which pays what a run pays once
    per file, not per sample (imports, a video's metadata probe, a disk-cache write), then again with another
    seed, timed: the steady-state cost of a sample in a training epoch.

    Raises:
        ConfigError: an empty dataset, or ``samples < 1``.
    """
    n = len(dataset)
    if n == 0:
        raise ConfigError("the dataset is empty: nothing to time")
    if samples < 1:
        raise ConfigError(f"samples={samples} must be at least 1")
    indices = [int(i) for i in np.linspace(0, n - 1, num=min(samples, n)).round()]
    indices = [indices[k % len(indices)] for k in range(samples)]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for key in _keys(dataset, sorted(set(indices)), seed + 1):
            dataset[key]
        keys = _keys(dataset, indices, seed)
        c0, w0 = time.process_time(), time.perf_counter()
        for key in keys:
            dataset[key]
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    finally:
        torch.set_num_threads(before)
    return SampleRate(samples=len(keys), cpu_s=cpu, wall_s=wall)


