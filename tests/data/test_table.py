"""TableDataset: the one base for row-per-input datasets (split, classes, labels, validate, on_error, skips)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from vit3d.data import FailedSample, Row, TableDataset, collate
from vit3d.data.common import MissingFileError, SampleError
from vit3d.data.seeding import SampleKey
from vit3d.errors import InputError


class NumberDataset(TableDataset):
    """A dataset whose 'files' are text files holding one number: the smallest real subclass of the base."""

    def __init__(self, data: Any, *, split: str | None = None, on_error: str = "raise", views: int = 1) -> None:
        self.views = views
        super().__init__(data, split=split, label_key="label", path_keys=("path",), on_error=on_error)

    @property
    def views_per_row(self) -> int:
        return self.views

    def _read(self, path: str) -> float:
        if not os.path.isfile(path):
            raise MissingFileError(path, "file not found; check the path")
        try:
            return float(Path(path).read_text())
        except ValueError:
            raise SampleError(path, "not a number") from None

    def check_row(self, row: Row) -> list[InputError]:
        try:
            self._read(row.values["path"])
        except InputError as err:
            return [err]
        return []

    def load(self, row: Row, *, view: int, seed: int | None) -> dict[str, Any]:
        noise = np.random.default_rng(seed).normal() if seed is not None else 0.0
        return {"image": torch.tensor([self._read(row.values["path"]) + noise, float(view)])}


@pytest.fixture()
def table(tmp_path: Path) -> Path:
    for name, text in [("a", "1"), ("b", "2"), ("c", "3"), ("d", "x"), ("e", "5"), ("f", "6")]:
        (tmp_path / f"{name}.txt").write_text(text)
    csv = tmp_path / "t.csv"
    csv.write_text("path,label,split\n"
                   "a.txt,cat,train\nb.txt,dog,train\nd.txt,cat,train\nmissing.txt,dog,train\n"
                   "c.txt,zebra,val\ne.txt,,val\nf.txt,dog,val\n"
                   "a.txt,,test\nb.txt,,test\n")
    return csv


def test_split_classes_and_labels_from_the_training_split(table: Path) -> None:
    train, val, test = (NumberDataset(table, split=s) for s in ("train", "val", "test"))
    assert train.classes == val.classes == ["cat", "dog"]  # 'zebra' (val only) is not a class
    assert [r.index for r in val.rows] == [4, 5, 6] and len(val) == 3
    report = val.validate(num_workers=2)
    assert report.rows == [4, 5] and report.source == f"{table} (split 'val')"
    zebra, empty = report
    assert zebra.file.endswith("c.txt") and zebra.reason.startswith(
        "unknown label 'zebra': the classes (from the training split) are ['cat', 'dog']; fix the label")
    assert empty.file.endswith("e.txt") and empty.reason == ("empty label in row 5 of a labelled split; "
                                                            "fill in the 'label' column or remove the row")
    assert not test.labelled and not test.validate() and int(test[0]["label"]) == -1  # unlabelled: label -1
    with pytest.raises(SampleError, match=r"unknown label 'zebra'.*\(.*c.txt\)"):
        val[0]


def test_validate_reports_files_and_raise_names_them(table: Path) -> None:
    ds = NumberDataset(table, split="train")
    report = ds.validate()
    assert [(b.row, Path(b.file).name, b.reason) for b in report] == [
        (2, "d.txt", "not a number"), (3, "missing.txt", "file not found; check the path")]
    assert str(report).startswith(f"2 of 4 rows of {table} (split 'train') are unusable:\n  row 2: ")
    with pytest.raises(MissingFileError, match=r"file not found \(.*missing.txt\); check the path"):
        ds[3]
    sample = ds[0]
    assert sample["id"].endswith("a.txt") and int(sample["label"]) == 0 and sample["view"] == 0


def test_skip_returns_failed_samples_logged_once_per_row(table: Path, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    ds = NumberDataset(table, split="train", on_error="skip", views=3)
    with caplog.at_level(logging.WARNING, logger="vit3d.data"):
        items = [ds[i] for i in range(len(ds))] + [ds[i] for i in range(len(ds))]  # two epochs, three views
    failed = [s for s in items if isinstance(s, FailedSample)]
    assert len(failed) == 12 and {f.reason for f in failed} == {"not a number", "file not found; check the path"}
    assert [r.getMessage().split(": ")[0] for r in caplog.records] == ["skipping row 2", "skipping row 3"]
    batch = collate(items[6:12])  # the three views of d.txt and of missing.txt: nothing to compute
    assert set(batch) == {"failed"} and len(batch["failed"]) == 6


def test_skip_logs_once_across_worker_processes_and_epochs(table: Path, tmp_path: Path) -> None:
    log = tmp_path / "skips.log"
    handler = logging.FileHandler(log)  # inherited by forked workers, unlike pytest's in-memory capture
    logger = logging.getLogger("vit3d.data")
    logger.addHandler(handler)
    try:
        ds = NumberDataset(table, split="train", on_error="skip", views=2)
        loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=2, collate_fn=collate)
        counts = [sum(len(b["failed"]) for b in loader) for _ in range(2)]  # new workers every epoch
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert counts == [4, 4]  # 2 bad rows x 2 views, each epoch
    lines = log.read_text().splitlines()
    assert sorted(line.split(":")[0] for line in lines) == ["skipping row 2", "skipping row 3"], lines


def test_sample_keys_seed_every_random_draw(table: Path) -> None:
    ds = NumberDataset(table, split="train")
    a, b, c = ds[SampleKey(0, 7)], ds[SampleKey(0, 7)], ds[SampleKey(0, 8)]
    assert torch.equal(a["image"], b["image"]) and not torch.equal(a["image"], c["image"])
    assert float(ds[0]["image"][0]) == 1.0  # a plain index: no seed, no noise in this dataset


def test_bad_on_error(table: Path) -> None:
    with pytest.raises(ValueError, match=r"on_error='ignore' is not one of \['raise', 'skip'\]"):
        NumberDataset(table, on_error="ignore")


def test_errors_raised_in_loader_workers_keep_their_type(table: Path) -> None:
    """DataLoader re-raises a worker's error as ``type(err)(message)``: still an InputError, still one message."""
    ds = NumberDataset(table, split="train")
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, [3]), num_workers=1, collate_fn=collate)
    with pytest.raises(MissingFileError) as info:
        next(iter(loader))
    assert isinstance(info.value, InputError) and "file not found (" in str(info.value)
