"""Per-sample random streams, so that augmentation does not depend on workers, prefetching or resumption.

A training sampler may yield :class:`SampleKey` ``(index, seed)`` pairs instead of plain indices; the datasets
draw every random choice of that sample (clip start, crop, flip, MONAI/TorchIO random transforms) from
``seed``. The seed is a pure function of ``(base seed, epoch, sample index, rank)``, so a run that is killed and
resumed mid-epoch, or run with another number of loader workers, sees exactly the same augmented samples.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import Iterator
from typing import NamedTuple

__all__ = ["SampleKey", "sample_seed", "seeded_global_rngs", "split_key"]


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


@contextlib.contextmanager
def seeded_global_rngs(seed: int) -> Iterator[None]:
    """Seed torch's, NumPy's and Python's global generators from ``seed`` inside the block, then restore them.

    For transforms that draw from the global generators (TorchIO, user functions): they repeat for a given seed,
    and the caller's streams (e.g. the model's dropout in a ``num_workers=0`` loader) are left as they were.
    """
    import numpy as np
    import torch

    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
