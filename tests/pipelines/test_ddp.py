"""Two-process DDP on CPU (gloo): `vit3d fit` in a subprocess; both ranks must end with the same weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

PROBES = Path(__file__).parent / "probes"
REPO = Path(__file__).resolve().parents[2]


def test_two_process_ddp_ranks_agree(tmp_path: Path) -> None:
    from vit3d.data.synthetic import make_volume_dataset

    csv_path = make_volume_dataset(tmp_path / "vol", num_samples=16, shape=(16, 32, 32), num_classes=2, seed=0,
                                   val_fraction=0.25, test_fraction=0.25)
    config = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 2, "strategy": "ddp", "precision": "32-true",
                    "max_steps": 3, "enable_progress_bar": False, "enable_model_summary": False,
                    "log_every_n_steps": 1, "default_root_dir": str(tmp_path / "run"),
                    "callbacks": [{"class_path": "vit3d_test_probes.WeightsHash",
                                   "init_args": {"out_dir": str(tmp_path / "hashes")}}]},
        "model": {"net": {"class_path": "pipelines.networks.vit_tiny_patch16_3d",
                          "init_args": {"embed_dim": 32, "depth": 1, "num_heads": 2, "patch_size": [4, 8, 8]}},
                  "mixup_alpha": 0.4},
        "data": {"class_path": "pipelines.datamodules.VolumeDataModule",
                 "init_args": {"data": str(csv_path), "dataset": {"img_size": [16, 32, 32]}, "batch_size": 2,
                               "num_workers": 0}},
    }
    cfg = tmp_path / "ddp.yaml"
    cfg.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROBES), str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "MASTER_PORT": str(29500 + os.getpid() % 1000)}
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "fit", "-c", str(cfg)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [(tmp_path / "hashes" / f"rank{r}.txt").read_text().split() for r in (0, 1)]
    (h0, step0, world0, dist0), (h1, step1, world1, dist1) = ranks
    assert world0 == world1 == "2" and dist0 == dist1 == "True"
    assert step0 == step1 == "3"
    assert h0 == h1, "DDP ranks ended with different weights"
    assert (tmp_path / "run/checkpoints/last.ckpt").is_file()


@pytest.mark.parametrize("accelerator", ["cpu"])
def test_auto_precision_is_a_lightning_precision(accelerator: str) -> None:
    from pipelines.hardware import auto_precision, cpu_supports_bf16

    got = auto_precision(accelerator)
    assert got == ("bf16-mixed" if cpu_supports_bf16() else "32-true")
