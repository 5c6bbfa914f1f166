"""vit3d.data.throughput: the worker arithmetic (closed form) and the timing of a real dataset's samples."""

from __future__ import annotations

import math

import pytest
import torch

from vit3d.data import VolumeDataset
from vit3d.data.throughput import SampleRate, available_cores, loader_demand, measure_samples, workers_needed
from vit3d.errors import ConfigError


def test_workers_needed_is_the_ceiling_of_demand_over_rate() -> None:
    assert workers_needed(32.0, 8.0) == 4  # exactly divisible: no extra worker
    assert workers_needed(33.0, 8.0) == 5
    assert workers_needed(0.5, 8.0) == 1  # a loader has at least one worker
    for demand, rate in [(80.0, 7.3), (300.0, 29.5), (64.0, 64.0)]:
        assert workers_needed(demand, rate) == math.ceil(demand / rate)
    with pytest.raises(ConfigError, match="cannot feed"):
        workers_needed(10.0, 0.0)


def test_loader_demand_from_a_rate() -> None:
    rate = SampleRate(samples=10, cpu_s=2.0, wall_s=4.0)  # 5 samples/s per worker, 2.5 wall-clock
    d = loader_demand(rate, step_time_s=0.25, batch=8, cores=4)
    assert (rate.per_worker, rate.wall) == (5.0, 2.5)
    assert d.demand == 32.0 and d.workers == 7 and not d.fits  # 7 workers + the trainer > 4 cores
    assert loader_demand(rate, step_time_s=1.0, batch=8, cores=16).fits
    row = d.to_dict()
    assert row["workers_needed"] == 7 and row["demand_samples_per_s"] == 32.0 and row["fits_cores"] is False
    assert "7 DataLoader worker(s)" in d.describe()
    with pytest.raises(ConfigError, match="must be positive"):
        loader_demand(rate, step_time_s=0.0, batch=8)
    with pytest.raises(ConfigError, match="at least 1"):
        loader_demand(rate, step_time_s=0.1, batch=0)
    assert available_cores() >= 1


def test_measure_samples_times_a_real_dataset_with_one_thread(volume_rows: list[dict[str, str]]) -> None:
    ds = VolumeDataset(volume_rows, img_size=(16, 32, 32), preset="ct", train=True)
    threads = torch.get_num_threads()
    rate = measure_samples(ds, samples=3)
    assert rate.samples == 3 and rate.cpu_s > 0 and rate.wall_s > 0
    assert torch.get_num_threads() == threads  # restored
    with pytest.raises(ConfigError, match="empty"):
        measure_samples([], samples=2)
    with pytest.raises(ConfigError, match="at least 1"):
        measure_samples(ds, samples=0)
