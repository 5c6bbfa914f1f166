"""Fixtures the pipeline tests share."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def volumes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 synthetic CT volumes (16x32x32, two lesion shapes) with train/val/test splits; the dataset CSV."""
    from vit3d.data.synthetic import make_volume_dataset

    root = tmp_path_factory.mktemp("volumes")
    return make_volume_dataset(root, num_samples=16, shape=(16, 32, 32), num_classes=2, seed=0,
                               val_fraction=0.25, test_fraction=0.25)
