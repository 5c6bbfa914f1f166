"""Per-sample random streams, so that augmentation does not depend on workers, prefetching or resumption.

A training sampler may yield :class:`SampleKey` ``(index, seed)`` pairs instead of plain indices; the datasets
draw every random choice of that sample (clip start, crop, flip, MONAI/TorchIO random transforms) from
``seed``. The seed is a pure function of ``(base seed, epoch, sample index, rank)``, so a run that is killed and
resumed mid-epoch, or run with another number of loader workers, sees exactly the same augmented samples.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

__all__ = ["SampleKey", "sample_seed", "split_key"]


class SampleKey(NamedTuple):
    """A dataset index with the seed of its random draws."""

    index: int
    seed: int


def sample_seed(seed: int, epoch: int, index: int, rank: int = 0) -> int:
    """A 63-bit seed from ``(seed, epoch, index, rank)``; nearby inputs give unrelated streams (BLAKE2b)."""
    payload = b"".join(int(v).to_bytes(8, "little", signed=True) for v in (seed, epoch, index, rank))
    return int.from_bytes(hashlib.blake2b(payload, digest_size=8).digest(), "little") >> 1


def split_key(key: int | SampleKey) -> tuple[int, int | None]:
    """``(index, seed)`` of a key; a plain integer index has no seed (the dataset's own stream is used)."""
    if isinstance(key, tuple):
        return int(key[0]), int(key[1])
    return int(key), None
