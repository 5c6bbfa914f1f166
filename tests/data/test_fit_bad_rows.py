"""``vit3d fit`` with ``on_error: skip`` over good rows and a corpus of hostile ones: it finishes, in bounded memory.

The fit runs as a real child process (``python -m pipelines.cli fit``) under a small parent that reports the
child's peak resident set size (``RUSAGE_CHILDREN``), so the bound covers everything the run allocated.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from . import corpus
from .helpers import write_nifti

PEAK_RSS_LIMIT_MB = 3 * 1024


@pytest.fixture()
def fit_config(tmp_path: Path) -> dict:
    """The one place the fit's config is written (its layout follows the CLI's; only this fixture knows it)."""
    return {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "precision": "32-true", "enable_progress_bar": False,
                    "enable_model_summary": False, "log_every_n_steps": 1, "max_epochs": 1,
                    "default_root_dir": str(tmp_path / "run")},
        "model": {"model": "vit_tiny_patch16_3d",
                  "model_args": {"embed_dim": 32, "depth": 1, "num_heads": 2, "patch_size": [4, 8, 8]}},
        "data": {"class_path": "pipelines.datamodules.VolumeDataModule",
                 "init_args": {"data": None, "img_size": [8, 16, 16], "batch_size": 2, "num_workers": 0,
                               "on_error": "skip"}},
    }


def _table(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(8):
        split = "train" if i < 6 else "val"
        write_nifti(folder / f"good{i}.nii.gz", rng.normal(40, 20, size=(16, 16, 8)).astype(np.float32))
        rows.append(f"good{i}.nii.gz,{'ab'[i % 2]},{split}")
    corpus.write_huge_header(folder / "huge.nii.gz")
    corpus.write_gzip_bomb(folder / "bomb.nii.gz")
    corpus.write_fifo(folder / "pipe.nii.gz")
    corpus.write_truncated_gzip(folder / "cut.nii.gz")
    corpus.write_text(folder / "notes.nii.gz")
    corpus.write_nifti_bytes(folder / "nan.nii.gz", (16, 16, 8), affine=np.diag([np.nan, 1, 1, 1]))
    corpus.write_series_with_gap(folder / "gap")
    (folder / "empty.nii.gz").write_bytes(b"")
    rows += ["huge.nii.gz,a,train", "bomb.nii.gz,b,train", "pipe.nii.gz,a,train", "cut.nii.gz,b,train",
             "notes.nii.gz,a,train", "nan.nii.gz,b,val", "gap,a,train", "empty.nii.gz,b,val", "missing.nii.gz,a,val",
             "good0.nii.gz,,train", "good1.nii.gz,zebra,val"]
    table = folder / "t.csv"
    table.write_text("image,label,split\n" + "\n".join(rows) + "\n")
    return table


def test_fit_skips_hostile_rows_in_bounded_memory(tmp_path: Path, fit_config: dict) -> None:
    fit_config["data"]["init_args"]["data"] = str(_table(tmp_path))
    cfg = tmp_path / "fit.yaml"
    cfg.write_text(yaml.safe_dump(fit_config))
    parent = ("import json, resource, subprocess, sys\n"
              "p = subprocess.run([sys.executable, '-m', 'pipelines.cli', 'fit', '-c', sys.argv[1]], "
              "capture_output=True, text=True)\n"
              "print(json.dumps({'rc': p.returncode, 'out': p.stdout[-4000:], 'err': p.stderr[-8000:], "
              "'rss_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))")
    res = subprocess.run([sys.executable, "-c", parent, str(cfg)], capture_output=True, text=True, timeout=900,
                         cwd=Path(__file__).resolve().parents[2])
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result["rc"] == 0, result["err"]
    assert result["rss_mb"] < PEAK_RSS_LIMIT_MB, result["rss_mb"]
    print(f"peak RSS of the fit: {result['rss_mb']:.0f} MB")
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    log = result["out"] + result["err"]
    for name in ("huge.nii.gz", "bomb.nii.gz", "pipe.nii.gz", "cut.nii.gz", "notes.nii.gz", "gap"):
        assert name in log, (name, log)
