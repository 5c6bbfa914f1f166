"""``vit3d bench``: the command writes the library's benchmark result as JSON; user errors are one line."""

from __future__ import annotations

import json

import pytest

from pipelines.cli import main as vit3d
from pipelines.commands import bench


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
