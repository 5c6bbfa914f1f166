"""Clip samplers on frame and time timelines; positions to frame indices through real timestamps."""

from __future__ import annotations

import numpy as np
import pytest

from vit3d.data.video import MultiClipSampler, RandomClipSampler, UniformClipSampler, get_sampler
from vit3d.data.video.samplers import positions_to_indices


def test_uniform_random_multi() -> None:
    assert UniformClipSampler()(0, 99, 14, discrete=True)[0].start == 43  # slack 85 -> 42.5 -> 43
    rng = np.random.default_rng(0)
    starts = {RandomClipSampler()(10, 49, 14, rng, discrete=True)[0].start for _ in range(300)}
    assert min(starts) == 10 and max(starts) == 35 and all(float(s).is_integer() for s in starts)
    cont = [RandomClipSampler()(0.0, 2.0, 0.5, rng)[0].start for _ in range(300)]
    assert 0 <= min(cont) < 0.05 and 1.45 < max(cont) <= 1.5
    m = MultiClipSampler(3)(0, 99, 3, discrete=True)
    assert [c.clip_index for c in m] == [0, 1, 2] and [c.start for c in m] == [16, 48, 80]
    assert UniformClipSampler()(0, 5, 10, discrete=True)[0].start == 0  # longer than the video: from the start
    with pytest.raises(ValueError, match="num_clips=0"):
        MultiClipSampler(0)
    with pytest.raises(ValueError, match="sampler='every' is not one of"):
        get_sampler("every")


def test_positions_on_a_variable_rate_timeline() -> None:
    times = np.array([0.0, 0.1, 0.2, 0.6, 0.7, 1.5])  # gaps: the frame shown at t is the last one not later
    idx = positions_to_indices(np.array([0.0, 0.25, 0.5, 0.65, 0.7, 1.0, 2.0]), times, 0, 5)
    assert idx.tolist() == [0, 2, 2, 3, 4, 4, 5]
    assert positions_to_indices(np.array([0.3 * 3]), np.array([0.0, 0.3, 0.6, 0.9]), 0, 3).tolist() == [3]
    assert positions_to_indices(np.array([1.4, 2.6, 9.0]), None, 1, 5).tolist() == [1, 3, 5]  # clipped
