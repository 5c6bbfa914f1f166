"""Pieces shared by the volume and video datasets: tables, labels, bad-row reports, errors and collation."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["BadRow", "FailedSample", "SampleError", "ValidationReport", "collate", "read_table"]

logger = logging.getLogger("vit3d.data")


class SampleError(ValueError):
    """A sample that cannot be used; the message names the file, the reason and, where there is one, the fix."""

    def __init__(self, file: str | os.PathLike, reason: str) -> None:
        self.file, self.reason = str(file), reason
        super().__init__(f"{self.file}: {reason}")


class MissingFileError(SampleError, FileNotFoundError):
    """A row points at a file or folder that does not exist."""


@dataclass(frozen=True)
class BadRow:
    """One row that :meth:`validate` rejected: its index in the table, the file and why."""

    row: int
    file: str
    reason: str

    def __str__(self) -> str:
        return f"row {self.row}: {self.file}: {self.reason}"


@dataclass(frozen=True)
class FailedSample:
    """What a dataset returns with ``on_error='skip'`` for a sample it cannot load: the file and the reason."""

    id: str
    reason: str


class ValidationReport(list):
    """The list of :class:`BadRow` returned by ``validate()``; empty (falsy) when every row is usable."""

    def __init__(self, rows: Iterable[BadRow] = (), total: int = 0) -> None:
        super().__init__(rows)
        self.total = total

    def format_report(self) -> str:
        """A human-readable report: a summary line, then one line per bad row."""
        if not self:
            return f"all {self.total} rows are usable"
        lines = [f"{len(self)} of {self.total} rows are unusable:"]
        lines += [f"  {bad}" for bad in self]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format_report()


def _find_sample_error(exc: BaseException) -> SampleError | None:
    """The SampleError at the root of ``exc`` (MONAI wraps transform errors in RuntimeErrors)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, SampleError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def as_sample_error(exc: BaseException, file: str) -> SampleError:
    """``exc`` as a SampleError naming ``file`` (the original one when a SampleError is in the chain)."""
    found = _find_sample_error(exc)
    if found is not None:
        return found
    return SampleError(file, f"{type(exc).__name__}: {exc}")


def handle_error(err: SampleError, on_error: str) -> None:
    """Raise ``err`` (``on_error='raise'``) or log it as a skipped sample (``'skip'``)."""
    if on_error == "raise":
        raise err
    logger.warning("skipping sample %s", err)


def read_table(data: str | os.PathLike | Sequence[Mapping[str, Any]], *, path_keys: Sequence[str],
               root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Rows of a CSV file or a list of dicts, with the ``path_keys`` columns resolved to absolute paths.

    Relative paths are resolved against ``root``, else the CSV's folder, else the working directory.

    Raises:
        FileNotFoundError: the CSV does not exist.
        ValueError: a required column is missing.
    """
    if isinstance(data, (str, os.PathLike)):
        table = Path(data)
        if not table.is_file():
            raise FileNotFoundError(f"dataset table {table} does not exist; pass a CSV path or a list of dicts")
        with table.open(newline="") as f:
            rows = [{k.strip(): (v.strip() if isinstance(v, str) else v) for k, v in r.items() if k}
                    for r in csv.DictReader(f)]
        base = Path(root) if root is not None else table.parent
        source = str(table)
    else:
        rows = [dict(r) for r in data]
        base = Path(root) if root is not None else Path.cwd()
        source = "the list of dicts"
    for key in path_keys:
        missing = [i for i, r in enumerate(rows) if key not in r]
        if missing:
            cols = sorted(rows[missing[0]].keys())
            raise ValueError(f"column {key!r} is missing from {source} (row {missing[0]} has {cols}); "
                             f"name the image column(s) with image_keys=/path_key=")
        for r in rows:
            value = r[key]
            if value is None or str(value) == "":
                continue
            p = Path(str(value)).expanduser()
            r[key] = str(p if p.is_absolute() else (base / p))
    return rows


def select_split(rows: list[dict[str, Any]], split: str | Sequence[str] | None) -> list[tuple[int, dict]]:
    """``(row index, row)`` pairs of the rows in ``split`` (all rows when ``split`` is None)."""
    if split is None:
        return list(enumerate(rows))
    wanted = {split} if isinstance(split, str) else set(split)
    if rows and not any("split" in r for r in rows):
        raise ValueError(f"split={split!r} was asked for but the table has no 'split' column; "
                         "add one (train/val/test) or pass split=None")
    return [(i, r) for i, r in enumerate(rows) if r.get("split") in wanted]


def infer_classes(rows: Sequence[Mapping[str, Any]], label_key: str,
                  classes: Sequence[str] | None) -> list[str]:
    """The class names: ``classes`` as given, else the sorted distinct labels of *all* rows.

    Labels that are all integers are sorted numerically (``"2" < "10"``). Empty labels are unlabelled rows.
    """
    if classes is not None:
        out = [str(c) for c in classes]
        if len(set(out)) != len(out):
            raise ValueError(f"classes {out} has duplicates")
        return out
    labels = {str(r[label_key]) for r in rows if r.get(label_key) not in (None, "")}
    if labels and all(lab.lstrip("-").isdigit() for lab in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def label_index(value: Any, classes: Sequence[str], file: str) -> int:
    """Class index of ``value`` (-1 when empty); raises a SampleError for a label not in ``classes``."""
    if value is None or str(value) == "":
        return -1
    try:
        return list(classes).index(str(value))
    except ValueError:
        raise SampleError(file, f"unknown label {str(value)!r}; known classes are {list(classes)} "
                                "(pass classes=[...] to fix the list)") from None


def collate(batch: Sequence[Mapping[str, Any] | None]) -> dict[str, Any] | None:
    """Collate samples into a batch, dropping ``None`` (skipped) samples.

    ``image`` and ``label`` are stacked into plain tensors (MONAI MetaTensors are unwrapped), ``view`` becomes
    an int64 tensor, ``id`` a list of str; other tensor entries are stacked when their shapes agree.

    Returns:
        The batch dict, or ``None`` when every sample was skipped.
    """
    failed = [s for s in batch if isinstance(s, FailedSample)]
    samples = [s for s in batch if s is not None and not isinstance(s, FailedSample)]
    if not samples:
        return None
    out: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if key == "view" or (key != "id" and all(isinstance(v, (int, bool)) for v in values)):
            out[key] = torch.as_tensor(values, dtype=torch.int64)
        elif all(isinstance(v, torch.Tensor) for v in values) and len({tuple(v.shape) for v in values}) == 1:
            values = [v.as_tensor() if hasattr(v, "as_tensor") else v for v in values]
            out[key] = torch.stack(values)
        else:
            out[key] = values
    out["failed"] = failed
    return out
