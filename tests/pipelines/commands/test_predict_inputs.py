"""`vit3d predict` on a folder of DICOM series: one row per series, found by vit3d.data.inputs.discover_inputs."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipelines.cli import main as vit3d
from tests.data.helpers import write_dicom_series


def test_predict_a_folder_of_series_gives_one_row_per_series(tmp_path: Path) -> None:
    from vit3d.data.synthetic import make_volume_dataset

    table = make_volume_dataset(tmp_path / "train", num_samples=8, shape=(16, 32, 32), num_classes=2, seed=0,
                                val_fraction=0.25, test_fraction=0.25)
    config = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "precision": "32-true", "enable_progress_bar": False,
                    "enable_model_summary": False, "max_steps": 1, "limit_val_batches": 0,
                    "default_root_dir": str(tmp_path / "run")},
        "model": {"net": {"class_path": "pipelines.networks.vit_tiny_patch16_3d",
                          "init_args": {"patch_size": [8, 16, 16], "embed_dim": 24, "depth": 1, "num_heads": 2}}},
        "data": {"class_path": "pipelines.datamodules.VolumeDataModule",
                 "init_args": {"data": str(table), "dataset": {"img_size": [16, 32, 32]}, "batch_size": 4,
                               "num_workers": 0}},
    }
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(config))
    assert vit3d(["fit", "-c", str(cfg)]) == 0
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()

    rng = np.random.default_rng(0)
    site = tmp_path / "site"
    for name in ("p1", "p2", "p3"):
        series = write_dicom_series(site / name / "ct", rng.normal(0, 60, size=(20, 36, 40)).astype(np.int16),
                                    spacing=(2.0, 1.0, 1.0))
        if name == "p3":  # a PACS export: no file suffixes
            for f in series.iterdir():
                f.rename(f.with_suffix(""))
    preds = tmp_path / "preds.csv"
    assert vit3d(["predict", "--ckpt_path", str(ckpt), "--data.predict_data", str(site),
                  "--predictions.output", str(preds),
                  "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path / "p"),
                  "--trainer.precision", "32-true"]) == 0
    with preds.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(Path(r["path"]).parent.name for r in rows) == ["p1", "p2", "p3"]  # a row per series, not per slice
    for row in rows:
        assert float(row["prob_sphere"]) + float(row["prob_tube"]) == pytest.approx(1.0, abs=1e-5)
