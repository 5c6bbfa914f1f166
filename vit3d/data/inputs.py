"""What counts as one input: the extension tables and :func:`discover_inputs` for files, folders, globs and CSVs.

Training folder scans, ``vit3d predict`` and ``vit3d explain`` all turn what the user typed into inputs here, so
they agree on every file:

- a volume or clip file is one input (a DICOM file is recognised by its ``DICM`` preamble, with or without a
  suffix);
- a folder that directly holds DICOM files is one input, the series (MONAI's ``PydicomReader`` and SimpleITK read
  a series from its folder), never one input per slice; its sub-folders are walked on their own;
- any other folder is walked recursively;
- a glob (``scans/**/*.nii.gz``) is expanded, each match treated as above;
- a ``.csv`` is read and the paths of its ``column`` (``image`` or ``path`` unless told) are the inputs, resolved
  against the CSV's folder.

Nothing is dropped silently: files in a walked folder that are not inputs (unknown extension, masks named
``*_mask.*``, sidecar files) are listed in :attr:`Inputs.ignored` with the reason, and logged.
"""

from __future__ import annotations

import csv
import glob
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vit3d.errors import ConfigError, InputError, MissingInputError

__all__ = ["VIDEO_SUFFIXES", "VOLUME_SUFFIXES", "IgnoredFile", "Inputs", "discover_inputs", "is_dicom_file"]

logger = logging.getLogger("vit3d.data")

Kind = Literal["volume", "clip"]

VOLUME_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".ima")
"""Volume files read by :func:`vit3d.data.io.read_volume` (NIfTI with nibabel, DICOM with pydicom, the rest with
SimpleITK). DICOM files without a suffix are recognised by content."""

VIDEO_SUFFIXES: tuple[str, ...] = (
    ".mp4", ".m4v", ".mov", ".qt", ".mkv", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".mpg", ".mpeg", ".m2v",
    ".vob", ".3gp", ".3g2", ".ogv", ".flv", ".f4v", ".wmv", ".asf", ".mxf", ".dv", ".divx", ".y4m",
)
"""The one table of clip containers (what FFmpeg, and so PyAV and decord, open): training folders, predict and
explain all use it."""

# Files that sit beside images without being inputs: segmentation masks and the sidecars of split formats.
MASK_SUFFIXES = ("_mask.nii.gz", "_mask.nii", "_mask.nrrd", "_mask.mha", "_seg.nii.gz", "_seg.nii")
_SIDECARS = (".raw", ".zraw", ".json", ".txt", ".csv", ".md", ".bvec", ".bval")
_CSV_COLUMNS = ("image", "path")


@dataclass(frozen=True)
class IgnoredFile:
    """A file found while walking a folder that is not an input, and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class Inputs(list):
    """The inputs found (a ``list[str]`` of files and DICOM series folders) plus :attr:`ignored` files."""

    def __init__(self, items: Sequence[str] = (), ignored: Sequence[IgnoredFile] = ()) -> None:
        super().__init__(items)
        self.ignored: list[IgnoredFile] = list(ignored)


def is_dicom_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a DICOM Part 10 file: 128 bytes of preamble, then ``DICM`` (any suffix or none)."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _suffix_of(name: str, suffixes: Sequence[str]) -> str | None:
    low = name.lower()
    return next((s for s in suffixes if low.endswith(s)), None)


def _classify(path: Path, kind: Kind) -> tuple[str, str]:
    """``('input' | 'dicom' | 'ignored', reason)`` for one file."""
    name = path.name
    if name.startswith("."):
        return "ignored", "hidden file"
    low = name.lower()
    if kind == "volume":
        if low == "dicomdir":
            return "ignored", "a DICOMDIR index, not an image (the series beside it are read from their folders)"
        if low.endswith(MASK_SUFFIXES):
            return "ignored", "a mask (name ends in _mask/_seg), not an image"
        if low.endswith((".dcm", ".ima")) or is_dicom_file(path):
            return "dicom", ""
        if _suffix_of(name, VOLUME_SUFFIXES):
            return "input", ""
        if low.endswith(_SIDECARS):
            return "ignored", "sidecar file"
        return "ignored", f"not a volume (known suffixes: {', '.join(VOLUME_SUFFIXES)}, or a DICOM file)"
    if _suffix_of(name, VIDEO_SUFFIXES):
        return "input", ""
    return "ignored", f"not a clip (known suffixes: {', '.join(VIDEO_SUFFIXES)})"


def _walk(folder: Path, kind: Kind, found: list[str], ignored: list[IgnoredFile]) -> None:
    """Add the inputs under ``folder``; a folder with DICOM files directly inside is one series input."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise InputError(f"cannot list folder ({exc.strerror})", file=folder, fix="check its permissions") from None
    dicom, files, subdirs = [], [], []
    for entry in entries:
        if entry.is_dir():
            if not entry.name.startswith("."):
                subdirs.append(entry)
            continue
        what, reason = _classify(entry, kind)
        if what == "dicom":
            dicom.append(entry)
        elif what == "input":
            files.append(str(entry))
        else:
            ignored.append(IgnoredFile(str(entry), reason))
    if dicom:
        found.append(str(folder))  # one series, read from its folder
    found.extend(files)
    for sub in subdirs:
        _walk(sub, kind, found, ignored)


def _from_csv(table: Path, column: str | None) -> list[str]:
    with table.open(newline="") as f:
        reader = csv.DictReader(f)
        fields = [c.strip() for c in (reader.fieldnames or [])]
        rows = [{k.strip(): (v or "").strip() for k, v in r.items() if k} for r in reader]
    wanted = [column] if column else [c for c in _CSV_COLUMNS if c in fields]
    if not wanted or wanted[0] not in fields:
        raise InputError(f"the CSV has no {column or ' or '.join(_CSV_COLUMNS)!r} column (columns: {fields})",
                         file=table, fix="name the column of input paths (column=...)")
    out = []
    for i, row in enumerate(rows):
        value = row.get(wanted[0], "")
        if not value:
            raise InputError(f"row {i} has an empty {wanted[0]!r} cell", file=table, fix="fill or remove the row")
        p = Path(value).expanduser()
        out.append(str(p if p.is_absolute() else table.parent / p))
    return out


def discover_inputs(path: str | os.PathLike | Sequence[str | os.PathLike], kind: Kind = "volume", *,
                    column: str | None = None) -> Inputs:
    """The inputs named by ``path``: a file, a folder, a glob, a CSV, or a list of those.

    Args:
        path: what the user gave. A list is expanded item by item, in order.
        kind: ``'volume'`` (NIfTI, NRRD, MHA, DICOM series, ...) or ``'clip'`` (mp4, webm, ...).
        column: for a CSV, the column of paths (default: ``image``, else ``path``).

    Returns:
        :class:`Inputs`: file paths and DICOM series folders, in a stable (sorted) order without duplicates, with
        the files that were seen and skipped in ``ignored``.

    Raises:
        MissingInputError: a path that does not exist, or a glob that matches nothing.
        InputError: nothing usable was found (the message lists what was there instead).
    """
    if kind not in ("volume", "clip"):
        raise ConfigError(f"kind={kind!r} is not 'volume' or 'clip'")
    items = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not items:
        raise InputError("no inputs given", fix="pass a file, a folder, a glob pattern or a CSV")
    found: list[str] = []
    ignored: list[IgnoredFile] = []
    for item in items:
        text = str(item)
        p = Path(text).expanduser()
        if p.is_dir():
            _walk(p, kind, found, ignored)
        elif p.is_file():
            if p.suffix.lower() == ".csv":
                found.extend(_from_csv(p, column))
            else:
                found.append(str(p))  # named explicitly: the reader decides whether it can use it
        elif glob.has_magic(text):
            matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
            if not matches:
                raise MissingInputError("the glob pattern matches nothing", file=text,
                                        fix="check the pattern (quote it so the shell does not expand it)")
            for m in matches:
                mp = Path(m)
                if mp.is_dir():
                    _walk(mp, kind, found, ignored)
                    continue
                what, reason = _classify(mp, kind)
                if what == "ignored":
                    ignored.append(IgnoredFile(m, reason))
                elif what == "dicom":
                    found.append(str(mp.parent))
                else:
                    found.append(m)
        else:
            raise MissingInputError("no such file or folder", file=text, fix="check the path")
    unique = list(dict.fromkeys(found))
    for bad in ignored:
        logger.warning("not an input, skipped: %s", bad)
    if not unique:
        seen = "; ".join(str(b) for b in ignored[:3]) + (" ..." if len(ignored) > 3 else "")
        suffixes = VOLUME_SUFFIXES if kind == "volume" else VIDEO_SUFFIXES
        raise InputError(f"no {kind} inputs found" + (f" (seen: {seen})" if seen else ""),
                         file=", ".join(str(i) for i in items),
                         fix=f"give files ending in {', '.join(suffixes)}" +
                             (", DICOM files or series folders" if kind == "volume" else "") +
                             ", a folder of them, a glob pattern or a CSV")
    return Inputs(unique, ignored)
