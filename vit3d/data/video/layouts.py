"""Dataset folder layouts for video classification, and the one table of video file extensions.

- ``root/<split>/<class>/<video>`` (``train``, ``val``, ``test`` sub-folders);
- a flat ``root/<class>/<video>``, with a seeded validation (and test) split stratified by class
  (``val_fraction``, ``test_fraction``);
- UCF101 split files (``classInd.txt``, ``trainlist0N.txt``, ``testlist0N.txt``) and HMDB51 split files
  (``<class>_test_splitN.txt`` with 1 = train, 2 = test, 0 = unused), the videos under ``root/<class>/``.

Every file under the root is either a row or listed in :attr:`FolderTable.ignored` with the reason (another
extension, outside a class folder, left out by the split files), so nothing is dropped without a word.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vit3d.errors import ConfigError, InputError

from ..inputs import VIDEO_SUFFIXES

__all__ = ["SPLIT_NAMES", "VIDEO_SUFFIXES", "FolderTable", "is_video_file", "read_video_folder",
           "stratified_split"]

SPLIT_NAMES = ("train", "val", "test")
_SPLIT_FILE_NAMES = {"classind.txt"}


def is_video_file(path: str | os.PathLike) -> bool:
    """Whether the file name ends with one of :data:`VIDEO_SUFFIXES` (case-insensitive)."""
    return str(path).lower().endswith(VIDEO_SUFFIXES)


@dataclass
class FolderTable:
    """Rows (``path``, ``label``, ``split``) read from a folder, the classes in index order, and the files left out.

    Attributes:
        rows: one dict per video.
        classes: class names in index order (from ``classInd.txt``, else the sorted training class folders).
        ignored: ``(file, reason)`` for every file under the root that is not a row.
        layout: ``'split folders'``, ``'class folders'``, ``'ucf101 split files'`` or ``'hmdb51 split files'``.
    """

    rows: list[dict[str, Any]]
    classes: list[str]
    ignored: list[tuple[str, str]] = field(default_factory=list)
    layout: str = ""


def stratified_split(labels: Sequence[str], fractions: dict[str, float], seed: int) -> list[str]:
    """Split names per item, stratified by label and seeded: ``fractions`` of each class go to each named split
    (rounded, at least one item when a fraction is positive and the class has two or more items), the rest to
    ``'train'``."""
    total = sum(fractions.values())
    if any(f < 0 for f in fractions.values()) or total >= 1:
        raise ConfigError(f"split fractions {fractions} must be >= 0 and sum to less than 1",
                          fix="e.g. val_fraction=0.1")
    labels = list(labels)
    out = ["train"] * len(labels)
    rng = np.random.default_rng(seed)
    for label in sorted(set(labels)):
        members = [i for i, lab in enumerate(labels) if lab == label]
        members = [members[j] for j in rng.permutation(len(members))]
        pos = 0
        for name, frac in fractions.items():
            n = int(round(frac * len(members)))
            if frac > 0 and n == 0 and len(members) - pos >= 2:
                n = 1
            n = min(n, len(members) - pos - 1)  # keep one training item per class
            for i in members[pos:pos + max(n, 0)]:
                out[i] = name
            pos += max(n, 0)
    return out


def _walk(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() or (p.exists() and not p.is_dir()))


def _class_rows(folder: Path, split: str | None, ignored: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Rows of ``folder/<class>/...`` (nested folders within a class are walked); other files are ignored."""
    rows = []
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            for f in _walk(entry):
                if is_video_file(f):
                    rows.append({"path": str(f), "label": entry.name, "split": split})
                else:
                    ignored.append((str(f), f"not a video file extension ({f.suffix or 'none'}); known: "
                                            f"{' '.join(VIDEO_SUFFIXES)}"))
        elif entry.name.lower() not in _SPLIT_FILE_NAMES:
            ignored.append((str(entry), "not inside a class folder (expected <root>/<class>/<video>)"))
    return rows


def _train_classes(rows: Sequence[dict[str, Any]]) -> list[str]:
    train = {r["label"] for r in rows if r.get("split") in ("train", None)}
    return sorted(train or {r["label"] for r in rows})


def read_video_folder(root: str | os.PathLike, *, val_fraction: float = 0.0, test_fraction: float = 0.0,
                      seed: int = 0, split_files: str | os.PathLike | None = None, fold: int = 1) -> FolderTable:
    """Rows of a video dataset folder (see the module docstring for the layouts).

    Args:
        root: the dataset folder.
        val_fraction: share of each class's training videos moved to a ``val`` split (seeded, stratified) when
            the layout has no validation split of its own.
        test_fraction: the same for a ``test`` split (flat class folders only).
        seed: seed of those splits.
        split_files: folder holding UCF101 or HMDB51 split files (may be ``root``); videos under ``root/<class>/``.
        fold: which split files (``trainlist0{fold}.txt`` / ``_test_split{fold}.txt``), 1 to 3.

    Raises:
        MissingInputError: ``root`` or the split files do not exist.
        InputError: no videos were found.
    """
    from vit3d.errors import MissingInputError

    root = Path(root)
    if not root.is_dir():
        raise MissingInputError(f"dataset folder {root} does not exist", file=root,
                                fix="point data= at a folder of <class>/<video> (or a CSV)")
    ignored: list[tuple[str, str]] = []
    if split_files is not None:
        table = _read_split_files(root, Path(split_files), fold, ignored)
    elif any((root / s).is_dir() for s in SPLIT_NAMES):
        rows = []
        for entry in sorted(root.iterdir()):
            if entry.is_dir() and entry.name in SPLIT_NAMES:
                rows += _class_rows(entry, entry.name, ignored)
            elif entry.is_dir():
                ignored += [(str(f), f"not under a split folder ({'/'.join(SPLIT_NAMES)})") for f in _walk(entry)]
            else:
                ignored.append((str(entry), f"not under a split folder ({'/'.join(SPLIT_NAMES)})"))
        if test_fraction:
            raise ConfigError(f"test_fraction={test_fraction} applies to flat class folders; {root} has split "
                              "folders", file=root, fix="add a test/ folder or set test_fraction=0")
        table = FolderTable(rows, _train_classes(rows), ignored, "split folders")
    else:
        rows = _class_rows(root, "train", ignored)
        table = FolderTable(rows, sorted({r["label"] for r in rows}), ignored, "class folders")
        if test_fraction:
            _carve(table.rows, {"test": test_fraction}, seed)
    if not table.rows:
        raise InputError(f"no videos ({' '.join(VIDEO_SUFFIXES)}) found under {root} ({len(ignored)} other files)",
                         file=root, fix="expected <root>/<class>/<video>, <root>/<split>/<class>/<video> or "
                                        "split files; or give a CSV with path,label columns")
    if val_fraction and not any(r["split"] == "val" for r in table.rows):
        _carve(table.rows, {"val": val_fraction}, seed + 1)
    elif val_fraction:
        raise ConfigError(f"val_fraction={val_fraction} given but {root} already has a validation split",
                          file=root, fix="set val_fraction=0 (or remove the val/ folder)")
    return table


def _carve(rows: list[dict[str, Any]], fractions: dict[str, float], seed: int) -> None:
    """Move a stratified share of the training rows to the named splits, in place."""
    train = [r for r in rows if r["split"] == "train"]
    for r, name in zip(train, stratified_split([r["label"] for r in train], fractions, seed), strict=True):
        r["split"] = name


def _lines(path: Path) -> list[str]:
    with path.open(encoding="utf-8-sig", errors="strict") as f:
        return [line.strip() for line in f if line.strip()]


def _read_split_files(root: Path, folder: Path, fold: int, ignored: list[tuple[str, str]]) -> FolderTable:
    from vit3d.errors import MissingInputError

    if fold not in (1, 2, 3):
        raise ConfigError(f"split fold {fold} is not 1, 2 or 3 (UCF101 and HMDB51 ship three folds)")
    if not folder.is_dir():
        raise MissingInputError(f"split-file folder {folder} does not exist", file=folder,
                                fix="point split_files= at the folder holding trainlist0N.txt or *_test_splitN.txt")
    ucf_train, ucf_test = folder / f"trainlist0{fold}.txt", folder / f"testlist0{fold}.txt"
    hmdb = sorted(folder.glob(f"*_test_split{fold}.txt"))
    listed: dict[str, tuple[str, str]] = {}  # relative path -> (label, split)
    if ucf_train.is_file() and ucf_test.is_file():
        layout = "ucf101 split files"
        class_ind = folder / "classInd.txt"
        classes: list[str] = []
        if class_ind.is_file():
            entries = sorted((int(a), b) for a, b in (line.split(maxsplit=1) for line in _lines(class_ind)))
            classes = [b for _, b in entries]
        for split, f in (("train", ucf_train), ("test", ucf_test)):
            for line in _lines(f):
                rel = line.split()[0].replace("\\", "/")
                listed[rel] = (rel.split("/")[0], split)
        if not classes:
            classes = sorted({lab for lab, _ in listed.values()})
    elif hmdb:
        layout = "hmdb51 split files"
        for f in hmdb:
            label = re.sub(rf"_test_split{fold}\.txt$", "", f.name)
            for line in _lines(f):
                name, _, code = line.rpartition(" ")
                split = {"1": "train", "2": "test"}.get(code.strip())
                rel = f"{label}/{name.strip()}"
                listed[rel] = (label, split or "unused")
        classes = sorted({lab for lab, _ in listed.values()})
    else:
        raise MissingInputError(f"no split files for fold {fold} in {folder}", file=folder,
                                fix=f"expected trainlist0{fold}.txt + testlist0{fold}.txt (UCF101) or "
                                    f"<class>_test_split{fold}.txt (HMDB51)")
    rows, unused = [], set()
    for rel, (label, split) in listed.items():
        if split == "unused":
            unused.add(rel)
            continue
        rows.append({"path": str(root / rel), "label": label, "split": split})
    known = {str(root / rel) for rel in listed}
    split_dir = folder.resolve()
    for f in _walk(root):
        if str(f) in known and f.relative_to(root).as_posix() not in unused:
            continue
        if f.parent.resolve() == split_dir and f.suffix.lower() == ".txt":
            continue  # the split files themselves
        rel = f.relative_to(root).as_posix()
        reason = (f"marked 0 (unused) in the fold-{fold} split files" if rel in unused else
                  f"not listed in the fold-{fold} split files" if is_video_file(f) else
                  f"not a video file extension ({f.suffix or 'none'})")
        ignored.append((str(f), reason))
    return FolderTable(rows, classes, ignored, layout)
