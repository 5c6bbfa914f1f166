"""Clip samplers: small strategy objects choosing where clips start, as pytorchvideo's clip samplers do.

A sampler sees a timeline ``[lo, hi]`` (frame indices when clips step by frames, seconds when they step by a
target frame rate) and the ``span`` one clip covers, and returns :class:`ClipStart` named tuples. The dataset
turns start positions into frame indices through the video's real timestamps
(:func:`positions_to_indices`), so variable frame rates and start offsets need no frame-rate arithmetic.
"""

from __future__ import annotations

import abc
from typing import Literal, NamedTuple

import numpy as np

from vit3d.errors import ConfigError
from vit3d.layers.helpers import check_choice

__all__ = ["ClipSampler", "ClipStart", "MultiClipSampler", "RandomClipSampler", "UniformClipSampler", "get_sampler",
           "positions_to_indices"]


class ClipStart(NamedTuple):
    """Where one clip starts on the timeline and its index among the video's clips."""

    start: float
    clip_index: int


class ClipSampler(abc.ABC):
    """Base: clip starts inside ``[lo, hi - span]`` (or at ``lo`` when the clip is longer than the timeline)."""

    num_clips = 1

    @abc.abstractmethod
    def __call__(self, lo: float, hi: float, span: float, rng: np.random.Generator | None = None, *,
                 discrete: bool = False) -> list[ClipStart]:
        """Clip starts; ``discrete`` timelines (frame indices) get integer starts."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _snap(value: float, discrete: bool) -> float:
    return float(np.floor(value + 0.5)) if discrete else float(value)


class UniformClipSampler(ClipSampler):
    """The clip in the middle of the timeline: deterministic, for validation."""

    def __call__(self, lo: float, hi: float, span: float, rng: np.random.Generator | None = None, *,
                 discrete: bool = False) -> list[ClipStart]:
        slack = max(hi - lo - span, 0.0)
        return [ClipStart(_snap(lo + slack / 2, discrete), 0)]


class RandomClipSampler(ClipSampler):
    """A clip at a uniformly random start: for training. ``rng`` should come from the sample's seed."""

    def __call__(self, lo: float, hi: float, span: float, rng: np.random.Generator | None = None, *,
                 discrete: bool = False) -> list[ClipStart]:
        slack = max(hi - lo - span, 0.0)
        rng = rng if rng is not None else np.random.default_rng()
        if discrete:
            return [ClipStart(float(lo + rng.integers(0, int(np.floor(slack + 1e-9)) + 1)), 0)]
        return [ClipStart(float(lo + rng.uniform(0.0, slack)), 0)]


class MultiClipSampler(ClipSampler):
    """``num_clips`` clips evenly spread over the timeline (centres of equal segments): for multi-view testing."""

    def __init__(self, num_clips: int = 3) -> None:
        if num_clips < 1:
            raise ConfigError(f"num_clips={num_clips} must be at least 1")
        self.num_clips = num_clips

    def __call__(self, lo: float, hi: float, span: float, rng: np.random.Generator | None = None, *,
                 discrete: bool = False) -> list[ClipStart]:
        slack = max(hi - lo - span, 0.0)
        return [ClipStart(_snap(lo + slack * (i + 0.5) / self.num_clips, discrete), i) for i in range(self.num_clips)]

    def __repr__(self) -> str:
        return f"MultiClipSampler(num_clips={self.num_clips})"


def get_sampler(name: Literal["uniform", "random", "multi"] | ClipSampler, num_clips: int = 1) -> ClipSampler:
    """A sampler by name; ``'multi'`` spreads ``num_clips`` clips."""
    if isinstance(name, ClipSampler):
        return name
    check_choice("sampler", name, ("uniform", "random", "multi"))
    if name == "multi":
        return MultiClipSampler(num_clips)
    return UniformClipSampler() if name == "uniform" else RandomClipSampler()


def positions_to_indices(positions: np.ndarray, times: np.ndarray | None, first: int, last: int) -> np.ndarray:
    """Frame indices of clip positions, clipped to the frames ``[first, last]``.

    Args:
        positions: frame positions (``times`` None: rounded to the nearest frame) or seconds since the first
            frame (then the frame shown at that time: the last one whose timestamp is not later).
        times: ``(N,)`` seconds since the first frame of every decodable frame, ascending.
        first: first usable frame index.
        last: last usable frame index (inclusive).
    """
    if times is None:
        idx = np.floor(np.asarray(positions, dtype=np.float64) + 0.5).astype(np.int64)
    else:  # 1 microsecond of slack: a position computed as k / fps may land a rounding error before its frame
        idx = np.searchsorted(times, np.asarray(positions, dtype=np.float64) + 1e-6, side="right") - 1
    return np.clip(idx, first, last).astype(np.int64)
