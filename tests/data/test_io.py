"""Readers through MONAI's LoadImage: NIfTI (nibabel's own files too), DICOM series, NRRD and MHA."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from nibabel.testing import data_path

from vit3d.data.common import MissingFileError, SampleError
from vit3d.data.io import SimpleITKReader, read_volume

from .helpers import write_dicom_series, write_nifti, write_sitk


def test_nibabel_shipped_nifti_matches_nibabel() -> None:
    path = os.path.join(data_path, "anatomical.nii")
    img = nib.load(path)
    vol = read_volume(path)
    assert tuple(vol.shape) == (1, *img.shape)
    np.testing.assert_allclose(vol[0].numpy(), img.get_fdata(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(vol.affine.numpy(), img.affine, atol=1e-5)


def test_nibabel_shipped_anisotropic_nifti_via_simpleitk_agrees() -> None:
    """Two independent readers (nibabel, SimpleITK with LPS->RAS) give the same voxels and affine."""
    path = os.path.join(data_path, "standard.nii.gz")  # spacing (1, 3, 2)
    a, b = read_volume(path), read_volume(path, reader=SimpleITKReader())
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_allclose(a.affine.numpy(), b.affine.numpy(), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(a.affine.numpy()[:3, :3], axis=0), (1.0, 3.0, 2.0), atol=1e-6)


def test_nibabel_shipped_4d_series() -> None:
    path = os.path.join(data_path, "example4d.nii.gz")
    with pytest.raises(SampleError, match=r"4D series with 2 volumes of shape \(128, 96, 24\) where a 3D volume "
                                          r"is expected \(.*example4d.nii.gz\); pass on_4d='first' or 'mean'"):
        read_volume(path)
    data = nib.load(path).get_fdata()
    np.testing.assert_allclose(read_volume(path, on_4d="first")[0].numpy(), data[..., 0], atol=1e-4)
    np.testing.assert_allclose(read_volume(path, on_4d="mean")[0].numpy(), data.mean(-1), atol=1e-3)


def test_dicom_series_voxels_and_spacing(tmp_path: Path) -> None:
    vol = (np.arange(4 * 5 * 6).reshape(4, 5, 6) * 7 - 50).astype(np.int16)  # (slices, rows, cols)
    folder = write_dicom_series(tmp_path / "series", vol, spacing=(2.5, 0.8, 0.6), origin=(-10.0, 20.0, 30.0))
    img = read_volume(folder)
    # MONAI order (x, y, z) = (columns, rows, slices)
    np.testing.assert_array_equal(img[0].numpy(), vol.transpose(2, 1, 0).astype(np.float32))
    aff = img.affine.numpy()
    np.testing.assert_allclose(np.linalg.norm(aff[:3, :3], axis=0), (0.6, 0.8, 2.5), atol=1e-6)
    np.testing.assert_allclose(aff[:3, 3], (10.0, -20.0, 30.0), atol=1e-6)  # LPS origin -> RAS
    by_sitk = read_volume(folder, reader=SimpleITKReader())
    np.testing.assert_array_equal(by_sitk.numpy(), img.numpy())
    np.testing.assert_allclose(by_sitk.affine.numpy(), aff, atol=1e-6)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_simpleitk_formats(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(0)
    vol_zyx = rng.normal(size=(5, 6, 7)).astype(np.float32)
    path = write_sitk(tmp_path / f"vol{suffix}", vol_zyx, spacing_xyz=(0.5, 0.7, 3.0), origin=(1.0, 2.0, 3.0))
    img = read_volume(path)
    np.testing.assert_array_equal(img[0].numpy(), vol_zyx.transpose(2, 1, 0))
    np.testing.assert_allclose(img.affine.numpy(), np.array([[-0.5, 0, 0, -1.0], [0, -0.7, 0, -2.0],
                                                             [0, 0, 3.0, 3.0], [0, 0, 0, 1]]), atol=1e-6)


def test_read_errors(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match=r"file not found \(.*nope.nii.gz\); check the path"):
        read_volume(tmp_path / "nope.nii.gz")
    bad = tmp_path / "corrupt.nii.gz"
    bad.write_bytes(b"this is not a NIfTI file" * 10)
    with pytest.raises(SampleError, match=r"corrupt.nii.gz"):
        read_volume(bad)
    flat = write_nifti(tmp_path / "flat.nii.gz", np.ones((8, 9), dtype=np.float32))
    with pytest.raises(SampleError, match=r"2D image of shape \(8, 9\) where a 3D volume is expected "
                                          r"\(.*flat.nii.gz\); pass on_2d='slice'"):
        read_volume(flat)
    sl = read_volume(flat, on_2d="slice")
    assert tuple(sl.shape) == (1, 8, 9, 1) and sl.affine.shape == (4, 4)
    arr = np.zeros((4, 4, 4), dtype=np.float32)
    arr[0, 0, 0], arr[1, 1, 1], arr[2, 2, 2] = np.nan, np.inf, -np.inf
    nan = write_nifti(tmp_path / "nan.nii.gz", arr)
    with pytest.raises(SampleError, match=r"1 NaN and 2 infinite voxels \(.*nan.nii.gz\)"):
        read_volume(nan)
    assert torch.isfinite(read_volume(write_nifti(tmp_path / "ok.nii.gz", np.nan_to_num(arr)))).all()


@pytest.mark.parametrize("kind", ["nifti", "dicom"])
def test_building_a_reader_logs_nothing_about_missing_gpu_codecs(kind: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """MONAI's LoadImage builds its GPU DICOM reader too, which logs that nvImageCodec is missing on every machine
    without it; vit3d chooses the reader itself, so a user's output holds none of that."""
    import warnings

    import vit3d.data.io as io

    monkeypatch.setattr(io, "_LOADERS", {})  # a loader is built once per process: build it again here
    arr = np.random.default_rng(0).random((6, 8, 8), dtype=np.float32)
    path = write_nifti(tmp_path / "a.nii.gz", arr) if kind == "nifti" else write_dicom_series(tmp_path / "s", arr)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level("DEBUG"):
        warnings.simplefilter("always")
        read_volume(path)
    assert not [r for r in caplog.records if "nvImageCodec" in r.getMessage()]
    assert not [w for w in caught if "nvImageCodec" in str(w.message)]
