"""Small synthetic datasets written once per test session (real NIfTI and mp4 files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vit3d.data import synthetic


@pytest.fixture(scope="session")
def volume_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic.make_volume_dataset(tmp_path_factory.mktemp("volumes"), num_samples=12, shape=(16, 32, 32),
                                         spacing=(2.0, 1.0, 1.0), num_classes=3, seed=0)


@pytest.fixture(scope="session")
def clip_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic.make_clip_dataset(tmp_path_factory.mktemp("clips"), num_samples=12, frames=8, size=(32, 64),
                                       fps=8, num_classes=4, seed=0, val_fraction=0.25)
