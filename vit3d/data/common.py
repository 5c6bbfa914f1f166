"""Pieces shared by the volume and video datasets: tables, labels, bad-row reports, errors and collation.

The dataset base that puts them together (reading, split selection, classes, ``validate()``, ``on_error``) is
:class:`vit3d.data.table.TableDataset`.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from vit3d.errors import ConfigError, InputError, MissingInputError, ResourceLimitError, UserError

__all__ = [
    "BadRow", "FailedSample", "MissingFileError", "SampleError", "SampleTooLargeError", "ValidationReport",
    "collate", "find_input_error", "infer_classes", "label_index", "read_table", "select_split",
]

logger = logging.getLogger("vit3d.data")


class SampleError(InputError):
    """One input (a row's file) that cannot be used: ``reason`` says why, ``file`` names it.

    Printed as every :class:`vit3d.errors.UserError` is: ``<what> (<file>); <fix>``. When ``fix`` is not given,
    the part of ``reason`` after its first ``"; "`` is the fix (``"file not found; check the path"``).

    Args:
        file: the file or folder concerned.
        reason: what is wrong, optionally followed by ``"; "`` and the fix.
        fix: the fix, when it is not part of ``reason``.

    A single argument is a whole message without a file: PyTorch's DataLoader re-raises an error of a worker
    process as ``type(err)(message)``, and this keeps its type (so the ``vit3d`` command still reports it as a
    user error).
    """

    def __init__(self, file: str | os.PathLike, reason: str | None = None, *, fix: str | None = None) -> None:
        if reason is None:  # SampleError(message), as DataLoader workers re-raise it
            super().__init__(str(file))
            return
        what = str(reason)
        if fix is None and "; " in what:
            what, fix = what.split("; ", 1)
        super().__init__(what, file=file, fix=fix)

    @property
    def reason(self) -> str:
        """What is wrong and the fix, without the file: ``"<what>; <fix>"``."""
        return f"{self.what}; {self.fix}" if self.fix else self.what

    def __reduce__(self) -> tuple:
        return (_rebuild_sample_error, (type(self), self.file, self.what, self.fix))


def _rebuild_sample_error(cls: type[SampleError], file: str, what: str, fix: str | None) -> SampleError:
    return cls(file, what, fix=fix)


class MissingFileError(SampleError, MissingInputError):
    """A row points at a file or folder that does not exist."""


class SampleTooLargeError(SampleError, ResourceLimitError):
    """An input whose declared size exceeds a limit, refused before its voxels are read."""


def find_input_error(exc: BaseException) -> InputError | None:
    """The :class:`~vit3d.errors.InputError` at the root of ``exc`` (MONAI wraps transform errors in
    ``RuntimeError``\\ s), or None when there is none: then ``exc`` is a bug and keeps its traceback."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, InputError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def as_sample_error(exc: BaseException, file: str) -> InputError:
    """``exc`` as an input error naming ``file`` (the original one when an InputError is in the chain).

    Kept for datasets not yet built on :class:`vit3d.data.table.TableDataset`; the base handles only
    :class:`~vit3d.errors.InputError` and lets other exceptions (bugs) propagate.
    """
    found = find_input_error(exc)
    return found if found is not None else SampleError(file, f"{type(exc).__name__}: {exc}")


def handle_error(err: InputError, on_error: str) -> None:
    """Raise ``err`` (``on_error='raise'``) or log it as a skipped sample (``'skip'``).

    Kept for datasets not yet built on :class:`vit3d.data.table.TableDataset`, which logs once per row and
    returns a :class:`FailedSample` instead.
    """
    if on_error == "raise":
        raise err
    logger.warning("skipping sample %s", err)


def error_reason(err: UserError) -> str:
    """``err`` without its file: ``"<what>; <fix>"``."""
    return f"{err.what}; {err.fix}" if err.fix else err.what


class FailedSample(NamedTuple):
    """A sample that could not be loaded with ``on_error='skip'``: its ``id`` (the file) and the ``reason``.

    Returned by a dataset's ``__getitem__`` in place of the sample; :func:`collate` gathers them under
    ``batch["failed"]`` so that a run can count skips and a prediction table can hold one row per input.
    Immutable and typed like a frozen dataclass, but a named tuple: Lightning moves batches to the device
    with ``apply_to_collection``, which rebuilds named tuples and refuses frozen dataclasses.
    """

    id: str
    reason: str

    def __str__(self) -> str:
        return f"{self.id}: {self.reason}"


@dataclass(frozen=True)
class BadRow:
    """One row that ``validate()`` rejected: its index in the table, the file and why."""

    row: int
    file: str
    reason: str

    def __str__(self) -> str:
        return f"row {self.row}: {self.file}: {self.reason}" if self.file else f"row {self.row}: {self.reason}"


class ValidationReport(list):
    """The list of :class:`BadRow` returned by ``validate()``; empty (falsy) when every row is usable.

    Args:
        rows: the bad rows, in table order.
        total: how many rows were checked.
        source: the table (CSV path) and split the rows come from, for the report's first line.
    """

    def __init__(self, rows: Iterable[BadRow] = (), total: int = 0, source: str | None = None) -> None:
        super().__init__(rows)
        self.total = total
        self.source = source

    @property
    def rows(self) -> list[int]:
        """Indices (in the table) of the unusable rows, each once."""
        return sorted({b.row for b in self})

    def format_report(self) -> str:
        """A human-readable report: a summary line, then one line per bad row."""
        where = f" of {self.source}" if self.source else ""
        if not self:
            return f"all {self.total} rows{where} are usable"
        lines = [f"{len(self.rows)} of {self.total} rows{where} are unusable:"]
        lines += [f"  {bad}" for bad in self]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format_report()


# ---------------------------------------------------------------------------------------------- tables


def _read_csv(table: Path) -> list[dict[str, Any]]:
    """Rows of a UTF-8 CSV (a byte-order mark is accepted), with the file named in every error."""
    try:
        text = table.read_bytes().decode("utf-8-sig")
    except PermissionError:
        raise InputError("permission denied reading the table", file=table,
                         fix="make the CSV readable (chmod u+r) or copy it somewhere readable") from None
    except UnicodeDecodeError as err:
        line = err.object[: err.start].count(b"\n") + 1
        raise InputError(f"the table is not UTF-8 text: byte 0x{err.object[err.start]:02x} on line {line} cannot "
                         "be decoded", file=table,
                         fix="save it as UTF-8 (Excel: 'CSV UTF-8'; or iconv -f latin1 -t utf-8 in.csv > out.csv)"
                         ) from None
    if "\x00" in text:
        raise InputError("the table holds NUL bytes: it is a binary file, not a CSV", file=table,
                         fix="point data= at the CSV file")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise InputError("the table is empty (no header line)", file=table,
                         fix="write a header line such as 'image,label,split' and one row per sample") from None
    names = [h.strip() for h in header]
    dupes = sorted({n for n in names if n and names.count(n) > 1})
    if dupes:
        raise InputError(f"the table has duplicate columns {dupes}", file=table, fix="give every column its own name")
    rows = []
    for line_no, values in enumerate(reader, start=2):
        if not any(v.strip() for v in values):
            continue  # blank line
        if len(values) > len(names):
            raise InputError(f"line {line_no} has {len(values)} fields but the header has {len(names)}",
                             file=table, fix="quote fields that contain commas, or remove the extra fields")
        rows.append({n: v.strip() for n, v in zip(names, values, strict=False) if n})
    return rows


def read_table(data: str | os.PathLike | Sequence[Mapping[str, Any]], *, path_keys: Sequence[str],
               root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Rows of a CSV file or a list of dicts, with the ``path_keys`` columns resolved to absolute paths.

    CSVs are read as UTF-8 (a byte-order mark, as Excel writes it, is accepted). Relative paths are resolved
    against ``root``, else the CSV's folder, else the working directory.

    Raises:
        MissingInputError: the CSV does not exist.
        InputError: the CSV is not UTF-8 text, is empty, has duplicate columns or ragged lines, or a required
            column is missing.
    """
    if isinstance(data, (str, os.PathLike)):
        table = Path(data)
        if not table.exists():
            raise MissingInputError("dataset table not found", file=table,
                                    fix="pass a CSV path (or a list of dicts)")
        if table.is_dir():
            raise InputError("dataset table is a folder", file=table, fix="pass the CSV file inside it")
        rows = _read_csv(table)
        base = Path(root) if root is not None else table.parent
        source: str | None = str(table)
    else:
        rows = [dict(r) for r in data]
        base = Path(root) if root is not None else Path.cwd()
        source = None
    for key in path_keys:
        missing = [i for i, r in enumerate(rows) if key not in r]
        if missing:
            cols = sorted(rows[missing[0]].keys())
            raise InputError(f"column {key!r} is missing (row {missing[0]} has {cols})",
                             file=source or "the list of dicts",
                             fix="name the image column(s) with image_keys=/path_key=")
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
        raise InputError(f"split={split!r} was asked for but the table has no 'split' column",
                         fix="add one (train/val/test) or pass split=None")
    return [(i, r) for i, r in enumerate(rows) if r.get("split") in wanted]


def _is_empty(value: Any) -> bool:
    return value is None or str(value).strip() == ""


def infer_classes(rows: Sequence[Mapping[str, Any]], label_key: str,
                  classes: Sequence[str] | None) -> list[str]:
    """The class names: ``classes`` as given, else the sorted distinct labels of the training rows.

    The training rows are those whose ``split`` is ``"train"`` when the table has any; otherwise every row
    (then the caller's table is the training table). A label seen only in validation or test rows is not a
    class: ``validate()`` reports such rows. Labels that are all integers are sorted numerically
    (``"2" < "10"``). Empty labels are unlabelled rows.
    """
    if classes is not None:
        out = [str(c) for c in classes]
        if len(set(out)) != len(out):
            raise ConfigError(f"classes {out} has duplicates; list each class once")
        return out
    train = [r for r in rows if r.get("split") == "train"]
    labels = {str(r[label_key]) for r in (train or rows) if not _is_empty(r.get(label_key))}
    if labels and all(lab.lstrip("-").isdigit() for lab in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def label_index(value: Any, classes: Sequence[str], file: str) -> int:
    """Class index of ``value`` (-1 when empty); raises a SampleError for a label not in ``classes``."""
    if _is_empty(value):
        return -1
    try:
        return list(classes).index(str(value))
    except ValueError:
        raise SampleError(file, f"unknown label {str(value)!r}: the classes (from the training split) are "
                                f"{list(classes)}",
                          fix="fix the label, add training rows of that class, or pass classes=[...]") from None


# ---------------------------------------------------------------------------------------------- batches


def collate(batch: Sequence[Mapping[str, Any] | FailedSample | None]) -> dict[str, Any]:
    """Collate samples into a batch; failed (skipped) samples are gathered under ``"failed"``.

    ``image`` and ``label`` are stacked into plain tensors (MONAI MetaTensors are unwrapped), ``view`` becomes
    an int64 tensor, ``id`` a list of str; other tensor entries are stacked when their shapes agree.

    Returns:
        The batch dict, always with ``"failed"``: the list of :class:`FailedSample` (often empty). When every
        sample failed, the dict holds only ``"failed"``.
    """
    failed = [s for s in batch if isinstance(s, FailedSample)]
    samples = [s for s in batch if s is not None and not isinstance(s, FailedSample)]
    out: dict[str, Any] = {}
    if samples:
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
