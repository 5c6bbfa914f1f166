"""``vit3d bench``: the command writes the library's benchmark result as JSON (model mode) or the loader workers a
config's training data needs (data mode); user errors are one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pipelines.cli import main as vit3d
from pipelines.commands import bench

from ..helpers import write_yaml


def test_bench_cli_writes_json(tmp_path, capsys):

    out = tmp_path / "r.json"
    rc = bench.main(["--model", "vit_tiny_patch16_3d", "--input", "3x4x32x32", "--patch-size", "2x16x16",
                     "--depth", "1", "--batch", "2", "--steps", "1", "--precision", "bf16", "--no-peak",
                     "--grad-checkpointing", "--out", str(out)])
    assert rc == 0
    assert "NaN" not in out.read_text()  # strict JSON: the skipped peak is null
    data = json.loads(out.read_text())
    assert data["matmul_peak_flops"] is None
    assert json.loads(capsys.readouterr().out) == data
    assert data["precision"] == "bf16-mixed" and data["batch"] == 2 and data["options"]["grad_checkpointing"]
    assert data["peak_memory_bytes"] > 0 and data["median_step_s"] > 0
    with pytest.raises(ValueError, match="unknown model"):
        bench.main(["--model", "vit_tiny_patch16", "--input", "3x4x32x32"])
    with pytest.raises(ValueError, match="CxS"):
        bench.main(["--model", "vit_tiny_patch16_3d", "--input", "3-4-32-32"])


def test_bench_user_errors_are_config_errors(capsys: pytest.CaptureFixture) -> None:
    assert vit3d(["bench", "--model", "vit_tiny_patch16_3d", "--input", "3x4x32x32", "--batch", "0"]) == 2
    assert capsys.readouterr().err.strip() == ("vit3d bench: error: --batch 0 must be at least 1")


def _demand_oracle(data: dict) -> None:
    """The worker count is the closed form from the measured rate: ceil(batch / step_time / rate)."""
    rate = data["samples_timed"] / data["cpu_s"]
    assert data["samples_per_s_per_worker"] == pytest.approx(rate)
    demand = data["batch"] / data["step_time_s"]
    assert data["demand_samples_per_s"] == pytest.approx(demand)
    assert data["workers_needed"] == max(1, math.ceil(demand / rate))
    assert data["fits_cores"] == (data["workers_needed"] <= max(1, data["cores"] - 1))


def test_bench_data_mode_volumes(volumes: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """-c builds the training split as `vit3d fit` does; JSON on stdout, the readable line on stderr."""
    config = write_yaml(tmp_path / "vol.yaml", {"data": {
        "class_path": "pipelines.datamodules.VolumeDataModule",
        "init_args": {"data": "elsewhere.csv", "dataset": {"img_size": [16, 32, 32], "preset": "ct"},
                      "batch_size": 3, "num_workers": 2}}})
    out = tmp_path / "d.json"
    assert bench.main(["-c", str(config), "--data", str(volumes), "--step-time", "0.5", "--samples", "3",
                       "--out", str(out)]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data == json.loads(out.read_text())
    assert {"mode", "configs", "data", "dataset", "num_workers_configured", "samples_timed", "cpu_s", "wall_s",
            "samples_per_s_per_worker", "samples_per_s_wall", "step_time_s", "batch", "demand_samples_per_s",
            "workers_needed", "cores", "fits_cores"} == set(data)
    assert data["mode"] == "data" and data["data"] == str(volumes) and data["num_workers_configured"] == 2
    assert data["batch"] == 3 and data["samples_timed"] == 3  # the config's batch size by default
    assert "VolumeDataset" in data["dataset"]
    _demand_oracle(data)
    assert f"{data['workers_needed']} DataLoader worker(s)" in captured.err


def test_bench_data_mode_clips_and_a_step_no_machine_feeds(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from vit3d.data.synthetic import make_clip_dataset

    csv = make_clip_dataset(tmp_path / "clips", num_samples=8, frames=6, size=(32, 32))
    base = write_yaml(tmp_path / "base.yaml", {"seed_everything": 0, "trainer": {"max_epochs": 1}})
    clips = write_yaml(tmp_path / "clips.yaml", {"data": {
        "class_path": "pipelines.datamodules.VideoDataModule",
        "init_args": {"data": str(csv), "dataset": {"frames": 4, "stride": 1, "img_size": [24, 24]},
                      "batch_size": 2}}})
    # a 1 microsecond step of 64 clips: 64 million clips/s, more workers than any machine has
    assert bench.main(["-c", str(base), "-c", str(clips), "--step-time", "1e-6", "--batch", "64",
                       "--samples", "2"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["batch"] == 64 and "VideoClipDataset" in data["dataset"] and "train=True" in data["dataset"]
    _demand_oracle(data)
    assert data["workers_needed"] > data["cores"] and not data["fits_cores"]
    assert "warning:" in captured.err and "exceed" in captured.err


def test_bench_modes_are_exclusive_and_data_errors_are_one_line(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    config = write_yaml(tmp_path / "nodata.yaml", {"trainer": {"max_epochs": 1}})
    for argv, message in [
        (["bench"], "give either --model"),
        (["bench", "--model", "vit_tiny_patch16_3d", "-c", str(config)], "give either --model"),
        (["bench", "-c", str(config)], "needs --step-time"),
        (["bench", "-c", str(config), "--step-time", "0.1"], "no data module in"),
        (["bench", "-c", str(tmp_path / "missing.yaml"), "--step-time", "0.1"], "config not found"),
    ]:
        assert vit3d(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("vit3d bench: error: ") and message in err and "\n" not in err, err
