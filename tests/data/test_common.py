"""Tables, class lists, collation, and the promise that importing vit3d.data imports no heavy library."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vit3d.data import BadRow, FailedSample, ValidationReport, collate
from vit3d.data.common import infer_classes, label_index, read_table, select_split


def test_import_is_lazy() -> None:
    code = ("import sys, vit3d, vit3d.data; "
            "print(sorted(m for m in ('monai', 'torchio', 'decord', 'av', 'nibabel', 'SimpleITK', 'pydicom') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_read_table_resolves_paths_against_the_csv(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    table = tmp_path / "sub" / "t.csv"
    table.write_text("image, label ,split\na.nii.gz, x ,train\n/abs/b.nii.gz,y,val\n")
    rows = read_table(table, path_keys=["image"])
    assert rows[0] == {"image": str(tmp_path / "sub" / "a.nii.gz"), "label": "x", "split": "train"}
    assert rows[1]["image"] == "/abs/b.nii.gz"
    assert [i for i, _ in select_split(rows, "val")] == [1]
    assert read_table([{"image": "c.nii"}], path_keys=["image"], root=tmp_path)[0]["image"] == str(tmp_path / "c.nii")


def test_classes() -> None:
    rows = [{"label": v} for v in ("10", "2", "1", "", "2")]
    assert infer_classes(rows, "label", None) == ["1", "2", "10"]  # numeric labels sort numerically
    split = [{"label": "a", "split": "train"}, {"label": "b", "split": "train"}, {"label": "zebra", "split": "val"}]
    assert infer_classes(split, "label", None) == ["a", "b"]  # classes come from the training split only
    assert infer_classes([{"label": "tube"}, {"label": "sphere"}], "label", None) == ["sphere", "tube"]
    assert infer_classes(rows, "label", ["b", "a"]) == ["b", "a"]
    assert label_index("", ["a"], "f") == -1 and label_index("a", ["a"], "f") == 0
    with pytest.raises(ValueError, match="duplicates"):
        infer_classes(rows, "label", ["a", "a"])


def test_collate() -> None:
    def sample(i: int) -> dict:
        return {"image": torch.full((1, 2, 3, 4), float(i)), "label": torch.tensor(i), "id": f"v{i}", "view": i % 2}

    bad = FailedSample("x.nii.gz", "empty file (0 bytes)")
    batch = collate([sample(0), bad, sample(1), sample(2)])
    assert batch["image"].shape == (3, 1, 2, 3, 4) and batch["image"][:, 0, 0, 0, 0].tolist() == [0, 1, 2]
    assert batch["label"].tolist() == [0, 1, 2] and batch["label"].dtype == torch.int64
    assert batch["id"] == ["v0", "v1", "v2"] and batch["view"].tolist() == [0, 1, 0]
    assert batch["failed"] == [bad] and collate([sample(0)])["failed"] == []
    assert collate([bad, bad]) == {"failed": [bad, bad]}  # nothing to compute: no image, label or id


def test_report() -> None:
    report = ValidationReport([BadRow(3, "x.nii", "broken"), BadRow(3, "", "empty label")], total=10)
    assert report and str(report) == "1 of 10 rows are unusable:\n  row 3: x.nii: broken\n  row 3: empty label"
    assert report.rows == [3]
    assert not ValidationReport([], total=2) and ValidationReport([], total=2).format_report() == "all 2 rows are usable"
