"""Reading one volume through MONAI's image loading, with the checks every row must pass.

Readers are picked by path: NIfTI with nibabel, DICOM series folders (or ``.dcm`` files) with pydicom, and
everything else SimpleITK reads (NRRD, MHA/MHD, ...) through :class:`SimpleITKReader`, a MONAI
``ImageReader`` (MONAI's own ``ITKReader`` needs the ``itk`` package, which is much heavier).
All readers give a channel-first ``MetaTensor`` ``(C, x, y, z)`` with a RAS affine.

Before a reader runs, :mod:`vit3d.data.limits` checks the path (FIFOs, devices, permissions, empty files) and
what the header declares (voxel cap, compression ratio, truncation), and :mod:`vit3d.data.dicom` checks a
series folder (one series, no gaps or duplicates, every slice complete); after it, the geometry (a finite,
invertible affine with voxel sizes in a sane range) and the values (finite) are checked.
"""

from __future__ import annotations

import functools
import logging
import os
import stat
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from vit3d.errors import ConfigError

from .common import SampleError, SampleTooLargeError
from .dicom import scan_series
from .limits import VolumeLimits, check_geometry, check_header, check_path

__all__ = ["VolumeReader", "read_volume", "reader_for"]  # + SimpleITKReader, built on first use

On2D = Literal["error", "slice"]
On4D = Literal["error", "first", "mean"]


@functools.cache
def _simpleitk_reader_class() -> type:
    """Build the SimpleITK reader class on first use, so that importing this module does not import MONAI."""
    from monai.data import ImageReader
    from monai.utils import ensure_tuple

    class SimpleITKReader(ImageReader):
        """MONAI ``ImageReader`` backed by SimpleITK: NRRD, MHA/MHD, NIfTI, and DICOM series folders.

        Arrays come back in ``(x, y, z[, c])`` order with a RAS affine, as MONAI's ``ITKReader`` gives them.
        """

        def verify_suffix(self, filename: Sequence[str] | str) -> bool:
            return True  # chosen explicitly by :func:`reader_for`

        def read(self, data: Sequence[str] | str, **kwargs: Any) -> Any:
            import SimpleITK as sitk

            images = []
            for name in ensure_tuple(data):
                name = str(name)
                if os.path.isdir(name):
                    series = sitk.ImageSeriesReader()
                    files = series.GetGDCMSeriesFileNames(name)
                    if not files:
                        raise ConfigError(f"no DICOM series found in folder {name}")
                    series.SetFileNames(files)
                    images.append(series.Execute())
                else:
                    images.append(sitk.ReadImage(name))
            return images if len(images) > 1 else images[0]

        def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
            import SimpleITK as sitk

            if isinstance(img, (list, tuple)):
                if len(img) != 1:
                    raise ConfigError("SimpleITKReader reads one image per row")
                img = img[0]
            ndim, comps = img.GetDimension(), img.GetNumberOfComponentsPerPixel()
            arr = sitk.GetArrayFromImage(img)  # (z, y, x[, c])
            order = tuple(reversed(range(ndim))) + ((ndim,) if comps > 1 else ())
            arr = np.ascontiguousarray(arr.transpose(order))
            direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(ndim, ndim)
            affine = np.eye(ndim + 1)
            affine[:ndim, :ndim] = direction * np.asarray(img.GetSpacing())[None, :]
            affine[:ndim, ndim] = img.GetOrigin()
            flip = np.eye(ndim + 1)  # ITK's LPS world -> RAS, as MONAI's readers report
            flip[0, 0] = flip[1, 1] = -1
            affine = flip @ affine
            meta = {
                "affine": affine, "original_affine": affine.copy(), "spatial_shape": np.asarray(arr.shape[:ndim]),
                "original_channel_dim": -1 if comps > 1 else float("nan"), "space": "RAS",
            }
            return arr, meta

    return SimpleITKReader


def __getattr__(name: str) -> Any:
    if name == "SimpleITKReader":
        return _simpleitk_reader_class()
    raise AttributeError(name)


@dataclass(frozen=True)
class VolumeReader:
    """How volumes are read: the MONAI reader, the limits checked before reading, the DICOM series to pick.

    Pass one as ``reader=`` to :func:`read_volume` (the datasets build theirs from their arguments).

    Args:
        reader: a MONAI reader (name or instance); None picks one by file type (:func:`reader_for`).
        limits: voxel cap, compression ratio and voxel-size range (:class:`~vit3d.data.limits.VolumeLimits`).
        dicom_series: the SeriesInstanceUID to read from DICOM folders that hold several series.
    """

    reader: Any = None
    limits: VolumeLimits = field(default_factory=VolumeLimits)
    dicom_series: str | None = None


def _reader_kind(path: str) -> str:
    name = path.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nibabel"
    if os.path.isdir(path) or name.endswith(".dcm"):
        return "pydicom"
    return "simpleitk"


def reader_for(path: str | os.PathLike) -> Any:
    """The MONAI reader for ``path``: nibabel for NIfTI, pydicom for DICOM, SimpleITK for the rest."""
    from monai.data import NibabelReader, PydicomReader

    kind = _reader_kind(str(path))
    if kind == "nibabel":
        return NibabelReader()
    if kind == "pydicom":
        return PydicomReader()
    return __getattr__("SimpleITKReader")()


_LOADERS: dict[Any, Any] = {}


def _loader(path: str, reader: Any) -> Any:
    """A cached MONAI ``LoadImage`` for the reader of ``path`` (building one registers every MONAI reader)."""
    from monai.transforms import LoadImage

    key = _reader_kind(path) if reader is None else (reader if isinstance(reader, str) else id(reader))
    if key not in _LOADERS:
        # LoadImage registers every reader, GPU ones too, which warn (and log) that nvImageCodec is missing on
        # machines without it: nothing a CPU user can act on, and vit3d picks the reader itself.
        plugin_log = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
        level = plugin_log.level
        plugin_log.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
                _LOADERS[key] = LoadImage(reader=reader or reader_for(path), image_only=True,
                                          ensure_channel_first=True, dtype=np.float32)
        finally:
            plugin_log.setLevel(level)
    return _LOADERS[key]


def read_volume(path: str | os.PathLike, *, on_2d: On2D = "error", on_4d: On4D = "error",
                reader: Any = None) -> Any:
    """Load one 3D volume as a channel-first MetaTensor ``(1, x, y, z)`` (RAS affine), checking it.

    Args:
        path: a NIfTI, NRRD or MHA file, a DICOM file, or a DICOM series folder.
        on_2d: ``'error'`` rejects 2D images; ``'slice'`` reads them as one-slice volumes.
        on_4d: ``'error'`` rejects 4D series; ``'first'`` keeps the first volume, ``'mean'`` averages them.
        reader: a :class:`VolumeReader` (reader, limits, DICOM series), or a MONAI reader (name or instance) to
            use with the default limits instead of the one picked by :func:`reader_for`.

    Raises:
        MissingFileError: ``path`` does not exist.
        SampleTooLargeError: the header declares more than the limits allow (nothing is read).
        SampleError: a FIFO, device or socket; permission denied; an empty file; content that is not an image
            or not the format its name says; a truncated or corrupt file; a DICOM folder that is not one
            complete, evenly spaced series; wrong dimensionality; bad geometry; NaN or infinite voxels.
    """
    from monai.data import MetaTensor

    opts = reader if isinstance(reader, VolumeReader) else VolumeReader(reader=reader)
    path = str(path)
    st = check_path(path, folder_ok=True)
    series = None
    if stat.S_ISDIR(st.st_mode):
        series = scan_series(path, series_uid=opts.dicom_series, limits=opts.limits)
    else:
        check_header(path, opts.limits, file_size=st.st_size)
    try:
        if series is not None and opts.dicom_series is not None:  # one series of several: read just its files
            img = _read_dicom_files(series.files)
        else:
            img = _loader(path, opts.reader)(path)
    except MemoryError:
        raise SampleTooLargeError(path, "out of memory while reading it",
                                  fix="lower max_voxels so that such files are refused before reading") from None
    except Exception as exc:  # noqa: BLE001 - after the checks above, a reader failure is this file's damage
        raise SampleError(path, _reader_failure(exc)) from exc
    if not isinstance(img, MetaTensor):
        img = MetaTensor(torch.as_tensor(img))
    shape = tuple(img.shape)
    spatial = img.ndim - 1
    if img.numel() == 0:
        raise SampleError(path, f"the image has no voxels (shape {shape})", fix="the file holds an empty array")
    if spatial == 3 and shape[-1] == 1:  # a single slice stored as (x, y, 1)
        img, spatial = img[..., 0], 2
        img.affine = _drop_last_axis(img.affine)
    if spatial == 2:
        if on_2d == "error":
            raise SampleError(path, f"2D image of shape {shape[1:]} where a 3D volume is expected; "
                                    "pass on_2d='slice' to read it as a one-slice volume")
        img = _add_last_axis(img)
    elif spatial != 3:
        raise SampleError(path, f"unsupported dimensionality: a {spatial}D image of shape {shape} where a 3D "
                                "volume is expected", fix="convert it to a 3D volume")
    if img.shape[0] > 1:
        if on_4d == "error":
            raise SampleError(path, f"4D series with {img.shape[0]} volumes of shape {tuple(img.shape[1:])} "
                                    "where a 3D volume is expected; pass on_4d='first' or 'mean' to take one")
        img = img[:1] if on_4d == "first" else img.mean(dim=0, keepdim=True)
    check_geometry(path, img.affine, opts.limits)
    values = img.as_tensor().numpy()
    if not np.isfinite(values).all():  # NumPy: cheaper than torch's intra-op threads on a busy machine
        n_nan = int(np.isnan(values).sum())
        n_inf = int(np.isinf(values).sum())
        raise SampleError(path, f"{n_nan} NaN and {n_inf} infinite voxels; fix or clean the file "
                                "(e.g. numpy.nan_to_num) before training")
    return img


def _reader_failure(exc: BaseException) -> str:
    """The specific reason behind a reader's exception (truncated data, else the reader's own first line)."""
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen:
        chain.append(exc)
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    for e in chain:
        if isinstance(e, (EOFError, zlib.error)) or "ended before the end-of-stream" in str(e):
            return ("truncated: the compressed data ends early or is corrupt; the file was not copied "
                    "completely, copy it again")
    cause = chain[-1]
    text = str(cause).strip().splitlines()[0][:200] if str(cause).strip() else ""
    return f"unreadable or corrupt file ({type(cause).__name__}: {text})"


def _read_dicom_files(files: Sequence[str]) -> Any:
    """One series from its ordered slice files, through SimpleITK (as :class:`SimpleITKReader` reads folders)."""
    import SimpleITK as sitk
    from monai.data import MetaTensor

    series = sitk.ImageSeriesReader()
    series.SetFileNames(list(files))
    arr, meta = _simpleitk_reader_class()().get_data(series.Execute())
    out = MetaTensor(torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None])
    out.affine = torch.as_tensor(meta["affine"], dtype=torch.float64)
    return out


def _drop_last_axis(affine: torch.Tensor) -> torch.Tensor:
    keep = [0, 1, 3]
    return affine[[0, 1, 3]][:, keep]


def _add_last_axis(img: Any) -> Any:
    """``(C, x, y)`` MetaTensor -> ``(C, x, y, 1)`` with a 4x4 affine (unit spacing along the new axis)."""
    from monai.data import MetaTensor

    aff2 = torch.as_tensor(img.affine, dtype=torch.float64)
    aff = torch.eye(4, dtype=torch.float64)
    aff[:2, :2], aff[:2, 3] = aff2[:2, :2], aff2[:2, 2]
    out = MetaTensor(img.as_tensor()[..., None], meta=dict(img.meta))
    out.affine = aff
    return out


def file_stamp(path: str) -> tuple[str, float, int]:
    """``(path, mtime, size)`` of a file, or of the newest file in a folder (for cache keys)."""
    p = Path(path)
    try:
        if p.is_dir():
            stats = [f.stat() for f in p.iterdir() if f.is_file()]
            return path, max((s.st_mtime for s in stats), default=0.0), sum(s.st_size for s in stats)
        st = p.stat()
        return path, st.st_mtime, st.st_size
    except OSError:
        return path, -1.0, -1
