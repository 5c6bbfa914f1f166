"""Video clips for classification: metadata probing, decoders, clip samplers, transforms, folder layouts, dataset.

One job per module, as in pytorchvideo:

- :mod:`.meta`: real frame timestamps, size, rotation and last decodable frame of a file (:func:`probe`), cached
  by path, size and mtime (:class:`MetadataCache`);
- :mod:`.decoders`: PyAV, decord and torchcodec returning the same frames for the same request;
- :mod:`.samplers`: where clips start (uniform, random, multi-clip), on frame or time timelines;
- :mod:`.transforms`: spatial functions on ``(T, C, H, W)`` tensors;
- :mod:`.layouts`: the video extension table and dataset folder layouts (split folders, class folders with a
  seeded validation split, UCF101 / HMDB51 split files);
- :mod:`.dataset`: :class:`VideoClipDataset` and multi-view averaging.

decord, PyAV and torchcodec are imported where they are used.
"""

from .dataset import Clip, VideoClipDataset, VideoValidationReport, average_views
from .decoders import DECODERS, DecordDecoder, PyAVDecoder, TorchCodecDecoder, VideoDecoder, get_decoder
from .layouts import VIDEO_SUFFIXES, FolderTable, is_video_file, read_video_folder
from .meta import MetadataCache, VideoMeta, VideoProbeError, probe, probe_many
from .samplers import (
    ClipSampler,
    ClipStart,
    MultiClipSampler,
    RandomClipSampler,
    UniformClipSampler,
    get_sampler,
)
from .transforms import (
    KINETICS_MEAN,
    KINETICS_STD,
    center_crop,
    cover_resize,
    cover_size,
    crop,
    denormalize,
    normalize,
    resize,
    short_side_resize,
    three_crops,
    to_normalized,
)

__all__ = [
    "DECODERS", "KINETICS_MEAN", "KINETICS_STD", "VIDEO_SUFFIXES", "Clip", "ClipSampler", "ClipStart",
    "DecordDecoder", "FolderTable", "MetadataCache", "MultiClipSampler", "PyAVDecoder", "RandomClipSampler",
    "TorchCodecDecoder", "UniformClipSampler", "VideoClipDataset", "VideoDecoder", "VideoMeta", "VideoProbeError",
    "VideoValidationReport", "average_views", "center_crop", "cover_resize", "cover_size", "crop", "denormalize",
    "get_decoder", "get_sampler", "is_video_file", "normalize", "probe", "probe_many", "read_video_folder", "resize",
    "short_side_resize", "three_crops", "to_normalized",
]
