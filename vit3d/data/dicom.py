"""DICOM series folders: one series, every slice readable, slices evenly spaced without gaps or duplicates.

A folder is one volume only if its slices make one: MONAI's and SimpleITK's readers stack whatever they
find, so a folder with a missing slice, two series of the same size or a truncated file would be read as a
plausible but wrong volume. :func:`scan_series` reads every slice's header (pydicom; pixel data deferred, so
memory stays small), and refuses the folder with the specific reason before any voxel is read.
"""

from __future__ import annotations

import os
import stat
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .common import SampleError, SampleTooLargeError
from .limits import VolumeLimits

__all__ = ["DicomSeries", "scan_series"]

_SKIP_SUFFIXES = {".txt", ".json", ".xml", ".md", ".csv", ".html", ".pdf", ".png", ".jpg", ".jpeg", ".zip", ".db"}


@dataclass(frozen=True)
class DicomSeries:
    """One checked series: its ``uid``, its slice ``files`` ordered along the slice normal, the slice
    ``spacing`` (mm, None for a single file) and ``shape`` (slices, rows, columns)."""

    uid: str
    files: tuple[str, ...]
    spacing: float | None
    shape: tuple[int, int, int]


def _slices(folder: Path) -> list[Path]:
    out = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.name.upper() == "DICOMDIR" or entry.suffix.lower() in _SKIP_SUFFIXES:
            continue
        try:
            mode = entry.stat().st_mode
        except OSError as exc:
            raise SampleError(str(folder), f"slice {entry.name} cannot be read ({exc.strerror})",
                              fix="fix or remove that file") from None
        if stat.S_ISDIR(mode):
            continue  # nested series are inputs of their own
        if not stat.S_ISREG(mode):
            raise SampleError(str(folder), f"{entry.name} is not a regular file (a FIFO, device or socket): it is "
                                           "refused without being opened", fix="remove it from the series folder")
        out.append(entry)
    return out


def _read_header(path: Path, folder: str) -> object | None:
    """The slice's header (pixel data deferred), None for a file that is not DICOM at all."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not os.access(path, os.R_OK):
        raise SampleError(folder, f"slice {path.name}: permission denied", fix="grant read access (chmod u+r)")
    if path.stat().st_size == 0:
        raise SampleError(folder, f"slice {path.name} is an empty file (0 bytes)", fix="copy the series again")
    try:
        return pydicom.dcmread(path, defer_size=1024)
    except InvalidDicomError:
        return None
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for a damaged file
        raise SampleError(folder, f"slice {path.name} is unreadable ({type(exc).__name__}: {exc})",
                          fix="copy the series again, or remove the damaged slice and accept the gap") from None


def _check_pixels(ds: object, path: Path, folder: str) -> None:
    """A native (uncompressed) slice must hold all the pixel bytes it declares."""
    raw = ds.get_item("PixelData")
    if raw is None:
        raise SampleError(folder, f"slice {path.name} has no pixel data", fix="remove it from the series folder")
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and syntax.is_compressed:
        return
    need = int(ds.Rows) * int(ds.Columns) * int(getattr(ds, "SamplesPerPixel", 1) or 1) * \
        int(getattr(ds, "NumberOfFrames", 1) or 1) * max(1, int(getattr(ds, "BitsAllocated", 16)) // 8)
    tell = getattr(raw, "value_tell", None)
    have = path.stat().st_size - tell if tell is not None else len(raw.value or b"")
    if have < need:
        raise SampleError(folder, f"slice {path.name} is truncated: {max(have, 0):,} of {need:,} pixel bytes",
                          fix="copy the series again, or remove the damaged slice")


def scan_series(folder: str | os.PathLike, *, series_uid: str | None = None,
                limits: VolumeLimits | None = None, tolerance: float = 0.01) -> DicomSeries:
    """Check a DICOM series folder and order its slices, reading headers only.

    Args:
        folder: the folder.
        series_uid: the SeriesInstanceUID to read when the folder holds several series.
        limits: the voxel cap (default :class:`~vit3d.data.limits.VolumeLimits`).
        tolerance: relative deviation of a slice gap from the median gap that still counts as uniform.

    Raises:
        SampleError: no DICOM slice; several series and none chosen (or the chosen one absent); a slice that is
            unreadable, truncated, of another size or orientation, or without a position; two slices at one
            position; a gap (missing slices) or irregular spacing.
        SampleTooLargeError: more voxels than ``limits.max_voxels``.
    """
    limits = limits or VolumeLimits()
    folder = Path(folder)
    name = str(folder)
    series: dict[str, list[tuple[Path, object]]] = defaultdict(list)
    for path in _slices(folder):
        ds = _read_header(path, name)
        if ds is None or "PixelData" not in ds:
            continue  # not an image slice (another file kept beside the series)
        series[str(getattr(ds, "SeriesInstanceUID", ""))].append((path, ds))
    if not series:
        raise SampleError(name, "a folder without DICOM image slices",
                          fix="point the row at a DICOM series folder or an image file")
    if series_uid is not None:
        if series_uid not in series:
            raise SampleError(name, f"series {series_uid} is not in the folder, which holds "
                                    f"{_describe(series)}", fix="choose one of these SeriesInstanceUIDs")
        uid = series_uid
    elif len(series) > 1:
        raise SampleError(name, f"the folder holds {len(series)} DICOM series: {_describe(series)}",
                          fix="put each series in its own folder, or choose one with dicom_series=<uid>")
    else:
        uid = next(iter(series))
    slices = series[uid]
    for path, ds in slices:
        _check_pixels(ds, path, name)
    first = slices[0][1]
    size = (int(first.Rows), int(first.Columns))
    odd = [p.name for p, ds in slices if (int(ds.Rows), int(ds.Columns)) != size]
    if odd:
        raise SampleError(name, f"slices of different sizes: {len(odd)} not {size[0]}x{size[1]} (e.g. {odd[0]})",
                          fix="separate the series, or remove the odd slices")
    frames = sum(int(getattr(ds, "NumberOfFrames", 1) or 1) for _, ds in slices)
    voxels = frames * size[0] * size[1]
    if voxels > limits.max_voxels:
        raise SampleTooLargeError(name, f"the series declares {frames}x{size[0]}x{size[1]} = {voxels:,} voxels, "
                                        f"more than max_voxels={limits.max_voxels:,}",
                                  fix="crop or downsample the series, or raise max_voxels")
    if len(slices) == 1:
        return DicomSeries(uid, (str(slices[0][0]),), None, (frames, *size))
    return _order(name, uid, slices, size, tolerance)


def _describe(series: dict[str, list]) -> str:
    return ", ".join(f"{uid or '(no SeriesInstanceUID)'} ({len(files)} files)" for uid, files in series.items())


def _order(name: str, uid: str, slices: list, size: tuple[int, int], tolerance: float) -> DicomSeries:
    missing = [p.name for p, ds in slices if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds]
    if missing:
        raise SampleError(name, f"{len(missing)} slice(s) without ImagePositionPatient/ImageOrientationPatient "
                                f"(e.g. {missing[0]}): the slices cannot be ordered",
                          fix="convert the series with a tool that keeps the geometry (e.g. dcm2niix)")
    iop = np.array([float(v) for v in slices[0][1].ImageOrientationPatient])
    if not np.isfinite(iop).all() or np.linalg.norm(iop[:3]) < 1e-6 or np.linalg.norm(iop[3:]) < 1e-6:
        raise SampleError(name, f"invalid ImageOrientationPatient {iop.tolist()}", fix="fix the series headers")
    tilted = [p.name for p, ds in slices
              if not np.allclose([float(v) for v in ds.ImageOrientationPatient], iop, atol=1e-4)]
    if tilted:
        raise SampleError(name, f"slices with different orientations (e.g. {tilted[0]}): not one volume",
                          fix="separate the series (e.g. a localiser mixed with the axial slices)")
    normal = np.cross(iop[:3], iop[3:])
    pos = np.array([np.dot(normal, [float(v) for v in ds.ImagePositionPatient]) for _, ds in slices])
    if not np.isfinite(pos).all():
        raise SampleError(name, "slice positions that are not finite", fix="fix the series headers")
    order = np.argsort(pos, kind="stable")
    pos = pos[order]
    files = [str(slices[i][0]) for i in order]
    gaps = np.diff(pos)
    dup = np.flatnonzero(gaps < 1e-4)
    if dup.size:
        i = int(dup[0])
        raise SampleError(name, f"{dup.size} duplicate slice position(s): {Path(files[i]).name} and "
                                f"{Path(files[i + 1]).name} are both at {pos[i]:.2f} mm",
                          fix="remove the duplicates (often a second copy or another series)")
    step = float(np.median(gaps))
    off = np.flatnonzero(np.abs(gaps - step) > tolerance * step + 1e-3)
    if off.size:
        i = int(off[0])
        missing = gaps[i] / step - 1
        if abs(missing - round(missing)) < 0.1 and round(missing) >= 1:
            raise SampleError(name, f"{int(round(missing))} missing slice(s) between {Path(files[i]).name} "
                                    f"({pos[i]:.2f} mm) and {Path(files[i + 1]).name} ({pos[i + 1]:.2f} mm), "
                                    f"where slices are {step:.3g} mm apart ({off.size} gap(s) in all)",
                              fix="copy the complete series; stacking it as is would distort the anatomy")
        raise SampleError(name, f"irregular slice spacing: {gaps[i]:.3g} mm between {Path(files[i]).name} and "
                                f"{Path(files[i + 1]).name}, where most slices are {step:.3g} mm apart "
                                f"({off.size} such gap(s))",
                          fix="resample the series to uniform spacing (e.g. with dcm2niix, then read the NIfTI)")
    return DicomSeries(uid, tuple(files), step, (len(files), *size))
