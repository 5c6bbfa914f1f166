"""Reading one volume through MONAI's image loading, with the checks every row must pass.

Readers are picked by path: NIfTI with nibabel, DICOM series folders (or ``.dcm`` files) with pydicom, and
everything else SimpleITK reads (NRRD, MHA/MHD, ...) through :class:`SimpleITKReader`, a MONAI
``ImageReader`` (MONAI's own ``ITKReader`` needs the ``itk`` package, which is much heavier).
All readers give a channel-first ``MetaTensor`` ``(C, x, y, z)`` with a RAS affine.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from .common import MissingFileError, SampleError

__all__ = ["read_volume", "reader_for"]  # SimpleITKReader is built lazily by __getattr__

On2D = Literal["error", "slice"]
On4D = Literal["error", "first", "mean"]


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
                        raise ValueError(f"no DICOM series found in folder {name}")
                    series.SetFileNames(files)
                    images.append(series.Execute())
                else:
                    images.append(sitk.ReadImage(name))
            return images if len(images) > 1 else images[0]

        def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
            import SimpleITK as sitk

            if isinstance(img, (list, tuple)):
                if len(img) != 1:
                    raise ValueError("SimpleITKReader reads one image per row")
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


_READER_CLASSES: dict[str, type] = {}


def __getattr__(name: str) -> Any:
    if name == "SimpleITKReader":
        if "sitk" not in _READER_CLASSES:
            _READER_CLASSES["sitk"] = _simpleitk_reader_class()
        return _READER_CLASSES["sitk"]
    raise AttributeError(name)


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
        with warnings.catch_warnings():  # LoadImage registers every reader, GPU ones too, and warns about them
            warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
            _LOADERS[key] = LoadImage(reader=reader or reader_for(path), image_only=True,
                                      ensure_channel_first=True, dtype=np.float32)
    return _LOADERS[key]


def read_volume(path: str | os.PathLike, *, on_2d: On2D = "error", on_4d: On4D = "error",
                reader: Any = None) -> Any:
    """Load one 3D volume as a channel-first MetaTensor ``(1, x, y, z)`` (RAS affine), checking it.

    Args:
        path: a NIfTI, NRRD or MHA file, or a DICOM series folder.
        on_2d: ``'error'`` rejects 2D images; ``'slice'`` reads them as one-slice volumes.
        on_4d: ``'error'`` rejects 4D series; ``'first'`` keeps the first volume, ``'mean'`` averages them.
        reader: a MONAI reader (name or instance) to use instead of the one picked by :func:`reader_for`.

    Raises:
        MissingFileError: ``path`` does not exist.
        SampleError: unreadable or corrupt file, wrong dimensionality, NaN or infinite voxels, or no voxels.
    """
    from monai.data import MetaTensor
    path = str(path)
    if not os.path.exists(path):
        raise MissingFileError(path, "file not found; check the path (relative paths are resolved against "
                                     "the CSV's folder or root=)")
    try:
        img = _loader(path, reader)(path)
    except Exception as exc:  # noqa: BLE001 - every reader failure is reported the same way
        cause = exc.__cause__ or exc
        raise SampleError(path, f"unreadable or corrupt file ({type(cause).__name__}: "
                                f"{str(cause).splitlines()[0] if str(cause) else ''})") from exc
    if not isinstance(img, MetaTensor):
        img = MetaTensor(torch.as_tensor(img))
    shape = tuple(img.shape)
    spatial = img.ndim - 1
    if img.numel() == 0:
        raise SampleError(path, f"the image has no voxels (shape {shape})")
    if spatial == 3 and shape[-1] == 1:  # a single slice stored as (x, y, 1)
        img, spatial = img[..., 0], 2
        img.affine = _drop_last_axis(img.affine)
    if spatial == 2:
        if on_2d == "error":
            raise SampleError(path, f"2D image of shape {shape[1:]} where a 3D volume is expected; "
                                    "pass on_2d='slice' to read it as a one-slice volume")
        img = _add_last_axis(img)
    elif spatial != 3:
        raise SampleError(path, f"{spatial}D image of shape {shape} where a 3D volume is expected")
    if img.shape[0] > 1:
        if on_4d == "error":
            raise SampleError(path, f"4D series with {img.shape[0]} volumes of shape {tuple(img.shape[1:])} "
                                    "where a 3D volume is expected; pass on_4d='first' or 'mean' to take one")
        img = img[:1] if on_4d == "first" else img.mean(dim=0, keepdim=True)
    values = img.as_tensor().numpy()
    if not np.isfinite(values).all():  # NumPy: cheaper than torch's intra-op threads on a busy machine
        n_nan = int(np.isnan(values).sum())
        n_inf = int(np.isinf(values).sum())
        raise SampleError(path, f"{n_nan} NaN and {n_inf} infinite voxels; fix or clean the file "
                                "(e.g. numpy.nan_to_num) before training")
    return img


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
