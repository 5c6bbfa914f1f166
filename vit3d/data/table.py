"""``TableDataset``: the one base for datasets with a row per input (a table of files and labels).

It owns what every such dataset does the same way, so the volume and clip datasets share one implementation:

- reading the table (a UTF-8 CSV, a list of dicts, or a layout a subclass turns into rows), resolving paths;
- selecting the split and the classes (from the training split), indexing labels;
- ``validate()``: every row checked once before training (labels, then each row's files, in parallel), one
  :class:`~vit3d.data.common.ValidationReport` naming every unusable row;
- ``on_error``: ``'raise'`` raises the :class:`~vit3d.errors.InputError`; ``'skip'`` returns a
  :class:`~vit3d.data.common.FailedSample` and logs each bad row once per dataset object, across epochs, views
  and DataLoader worker processes.

Writing a dataset on it::

    class MyDataset(TableDataset):
        def __init__(self, data, *, split=None, classes=None, on_error="raise", root=None, size=8):
            self.size = size                      # set what the hooks need first
            super().__init__(data, split=split, classes=classes, label_key="label", path_keys=("path",),
                             on_error=on_error, root=root)

        def check_row(self, row):                 # validate(): the errors of one row's files (threads)
            return [] if os.path.isfile(row.values["path"]) else [MissingFileError(row.values["path"], "...")]

        def load(self, row, *, view, seed):       # one sample; raise an InputError for a bad input
            rng = np.random.default_rng(seed)     # seed is None for a plain int index
            return {"image": read(row.values["path"], rng)}

The base's ``__getitem__`` accepts an int or a :class:`~vit3d.data.seeding.SampleKey`, turns the index into
``(row, view)`` (``views_per_row`` views per row, e.g. clips x crops for multi-view testing), indexes the label
and adds ``label`` (int64 scalar), ``id`` (:meth:`sample_id`) and ``view`` to the dict :meth:`load` returns.
An :class:`~vit3d.errors.InputError` raised by :meth:`load` or by the label is handled by ``on_error``; any
other exception is a bug and propagates with its traceback.
"""

from __future__ import annotations

import abc
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, NamedTuple

import torch
from torch.utils.data import Dataset

from vit3d.errors import InputError
from vit3d.layers.helpers import check_choice

from .common import (
    BadRow,
    FailedSample,
    SampleError,
    ValidationReport,
    error_reason,
    infer_classes,
    label_index,
    read_table,
    select_split,
)
from .seeding import SampleKey, split_key

__all__ = ["OnError", "Row", "TableDataset"]

logger = logging.getLogger("vit3d.data")

OnError = Literal["raise", "skip"]


class Row(NamedTuple):
    """One row of the table: its ``index`` in the whole table (as reports name it) and its ``values``."""

    index: int
    values: dict[str, Any]


class TableDataset(Dataset, abc.ABC):
    """A dataset with one row per input: table, split, classes, labels, ``validate()`` and ``on_error``.

    Args:
        data: a CSV path, a list of dicts, or anything :meth:`read_rows` of a subclass accepts (e.g. a folder).
        split: keep only rows whose ``split`` is this value (or one of these values); None keeps all.
        classes: class names in index order; default: the sorted distinct labels of the training split (rows
            whose ``split`` is ``train``, or every row when the table has no training rows).
        label_key: column holding the class name.
        path_keys: columns holding file paths (resolved against ``root``, else the CSV's folder).
        on_error: ``'raise'`` raises an error naming the file; ``'skip'`` returns a
            :class:`~vit3d.data.common.FailedSample` (gathered by :func:`vit3d.data.collate` under
            ``"failed"``) and logs each bad row once.
        root: folder against which relative paths are resolved.

    A split is *labelled* when any of its rows has a label; then an empty label is an error (reported by
    ``validate()`` with its row, and raised or skipped at load time), not an unlabelled sample.
    """

    def __init__(self, data: Any, *, split: str | Sequence[str] | None = None,
                 classes: Sequence[str] | None = None, label_key: str = "label",
                 path_keys: Sequence[str] = ("image",), on_error: OnError = "raise",
                 root: str | os.PathLike | None = None) -> None:
        check_choice("on_error", on_error, ("raise", "skip"))
        self.label_key, self.path_keys, self.on_error = label_key, tuple(path_keys), on_error
        all_rows, split = self.read_rows(data, split=split, root=root)
        self.classes = infer_classes(all_rows, label_key, classes)
        self.rows = [Row(i, r) for i, r in select_split(all_rows, split)]
        self.split = split
        self.table = str(data) if isinstance(data, (str, os.PathLike)) else None
        self._positions = {r.index: p for p, r in enumerate(self.rows)}
        self.labelled = any(str(r.values.get(label_key) or "").strip() for r in self.rows)
        # One flag per row, in shared memory so that DataLoader worker processes (forked or spawned, every
        # epoch anew unless persistent) see what another one has already logged.
        self._logged = torch.zeros(len(self.rows), dtype=torch.uint8)
        if on_error == "skip" and len(self.rows):
            self._logged.share_memory_()

    # ------------------------------------------------------------------------------------------ hooks

    def read_rows(self, data: Any, *, split: str | Sequence[str] | None,
                  root: str | os.PathLike | None) -> tuple[list[dict[str, Any]], str | Sequence[str] | None]:
        """All rows of ``data`` and the split to select from them (a folder layout may consume the split).

        The default reads a CSV or a list of dicts with :func:`~vit3d.data.common.read_table`.
        """
        return read_table(data, path_keys=self.path_keys, root=root), split

    @abc.abstractmethod
    def load(self, row: Row, *, view: int, seed: int | None) -> dict[str, Any]:
        """The sample of ``row`` (at least ``image``); raise an :class:`~vit3d.errors.InputError` for a bad input.

        Args:
            row: the row.
            view: which view of the row (``0 <= view < views_per_row``).
            seed: the seed of every random choice of this sample, or None (use the dataset's own stream).
        """

    @abc.abstractmethod
    def check_row(self, row: Row) -> Sequence[InputError]:
        """The errors of ``row``'s files (empty when usable); called by :meth:`validate` from threads."""

    @property
    def views_per_row(self) -> int:
        """Samples per row (1; multi-view testing has several)."""
        return 1

    def sample_id(self, row: Row) -> str:
        """The id of ``row``'s samples: its first path column."""
        return str(row.values.get(self.path_keys[0]))

    # ------------------------------------------------------------------------------------------ samples

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.rows) * self.views_per_row

    def label_of(self, row: Row) -> int:
        """Class index of ``row`` (-1 for an unlabelled row of an unlabelled split).

        Raises:
            SampleError: an empty label in a labelled split, or a label that is not one of ``classes``.
        """
        value = row.values.get(self.label_key)
        ident = self.sample_id(row)
        if value is None or str(value).strip() == "":
            if self.labelled:
                raise SampleError(ident, f"empty label in row {row.index} of a labelled split",
                                  fix=f"fill in the {self.label_key!r} column or remove the row")
            return -1
        return label_index(value, self.classes, ident)

    def __getitem__(self, key: int | SampleKey) -> dict[str, Any] | FailedSample:
        index, seed = split_key(key)
        position, view = divmod(index, self.views_per_row)
        row = self.rows[position]
        try:
            label = self.label_of(row)
            sample = self.load(row, view=view, seed=seed)
        except InputError as err:
            return self.failed(row, err)
        sample["label"] = torch.tensor(label, dtype=torch.int64)
        sample["id"] = self.sample_id(row)
        sample["view"] = view
        return sample

    def failed(self, row: Row, err: InputError) -> FailedSample:
        """Handle ``err`` for ``row`` by ``on_error``: raise it, or log it (once per row) and return a FailedSample."""
        if self.on_error == "raise":
            raise err
        ident = self.sample_id(row)
        reason = error_reason(err)
        if err.file and err.file != ident:  # e.g. the mask or a second channel of the row
            reason = f"{err.file}: {reason}"
        position = self._positions[row.index]
        if not self._logged[position]:
            self._logged[position] = 1
            logger.warning("skipping row %d: %s: %s", row.index, ident, reason)
        return FailedSample(ident, reason)

    # ------------------------------------------------------------------------------------------ checks

    def check_labels(self) -> list[BadRow]:
        """The rows whose label is empty (in a labelled split) or not one of ``classes``; reads no file."""
        bad = []
        for row in self.rows:
            try:
                self.label_of(row)
            except InputError as err:
                bad.append(BadRow(row.index, err.file or "", error_reason(err)))
        return bad

    def validate(self, num_workers: int | None = None) -> ValidationReport:
        """Check every row before training: its label (see :meth:`check_labels`) and its files (:meth:`check_row`).

        Args:
            num_workers: threads checking files in parallel (default: up to 4, at most the CPU count).

        Returns:
            A :class:`~vit3d.data.common.ValidationReport` (a list of
            :class:`~vit3d.data.common.BadRow`, in table order; empty when every row is usable).
        """
        labels = {b.row: b for b in self.check_labels()}
        workers = num_workers if num_workers is not None else min(4, os.cpu_count() or 1)

        def one(row: Row) -> list[BadRow]:
            found = [labels[row.index]] if row.index in labels else []
            for err in self.check_row(row):
                found.append(BadRow(row.index, err.file or "", error_reason(err)))
            return found

        with ThreadPoolExecutor(max(1, workers)) as pool:
            results = list(pool.map(one, self.rows))
        source = self.table
        if source is not None and self.split is not None:
            source = f"{source} (split {self.split!r})"
        return ValidationReport([b for r in results for b in r], total=len(self.rows), source=source)
