"""Writers of small real files for the data tests: DICOM series (pydicom), NRRD / MHA (SimpleITK), NIfTI."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np


def write_dicom_series(folder: Path, vol: np.ndarray, spacing: Sequence[float] = (2.5, 0.8, 0.6),
                       origin: Sequence[float] = (-10.0, 20.0, 30.0)) -> Path:
    """Write ``vol`` ``(slices, rows, cols)`` int16 as an axial CT series, one file per slice.

    ``spacing`` is (slice, row, column) in mm; ``origin`` the first slice's ImagePositionPatient (LPS, mm).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    for k, sl in enumerate(vol):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.PatientID, ds.InstanceNumber = "CT", "synthetic", k + 1
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + k * spacing[0]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [spacing[1], spacing[2]], spacing[0]
        ds.Rows, ds.Columns = sl.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = sl.astype(np.int16).tobytes()
        ds.save_as(folder / f"slice_{k:03d}.dcm", enforce_file_format=True)
    return folder


def write_sitk(path: Path, vol_zyx: np.ndarray, spacing_xyz: Sequence[float], origin: Sequence[float]) -> Path:
    """Write ``vol_zyx`` with SimpleITK (NRRD, MHA, ... by extension); identity direction (LPS)."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(vol_zyx)
    img.SetSpacing(tuple(float(s) for s in spacing_xyz))
    img.SetOrigin(tuple(float(o) for o in origin))
    sitk.WriteImage(img, str(path))
    return path


def write_nifti(path: Path, arr: np.ndarray, zooms: Sequence[float] | None = None) -> Path:
    """Write ``arr`` as NIfTI with a diagonal affine of ``zooms`` (default 1 mm)."""
    zooms = list(zooms or [1.0] * min(arr.ndim, 3))
    aff = np.eye(4)
    for i, z in enumerate(zooms[:3]):
        aff[i, i] = z
    nib.save(nib.Nifti1Image(arr, aff), path)
    return path
