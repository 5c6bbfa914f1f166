"""Datasets for 3D data: CT/MRI volumes, video clips, and seeded synthetic datasets written as real files.

MONAI, TorchIO, decord and PyAV are imported where they are used, so ``import vit3d.data`` stays fast.
"""

from . import synthetic
from .common import BadRow, FailedSample, SampleError, ValidationReport, collate
from .table import Row, TableDataset
from .video import VideoClipDataset, average_views
from .volume import VolumeDataset, load_volume

__all__ = [
    "BadRow", "FailedSample", "Row", "SampleError", "TableDataset", "ValidationReport", "VideoClipDataset",
    "VolumeDataset", "average_views", "collate", "load_volume", "synthetic",
]
