"""Shared fixtures: deterministic seeds and a tmp output folder."""

from __future__ import annotations

import csv

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def volume_rows(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, str]]:
    """Two synthetic CT volumes (16x32x32) with lesion masks: their CSV rows with absolute paths."""
    from vit3d.data.synthetic import make_volume_dataset

    root = tmp_path_factory.mktemp("vols")
    table = make_volume_dataset(root, num_samples=2, shape=(16, 32, 32))
    with open(table) as f:
        rows = list(csv.DictReader(f))
    return [{k: str(root / v) if k in ("image", "mask") else v for k, v in row.items()} for row in rows]
