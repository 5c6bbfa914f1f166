"""Spatial clip transforms: pure functions on ``(T, C, H, W)`` float tensors (short-side resize, crops, flip,
normalisation), as pytorchvideo's functional transforms are."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["KINETICS_MEAN", "KINETICS_STD", "center_crop", "cover_resize", "cover_size", "crop", "denormalize",
           "normalize", "resize", "short_side_resize", "three_crops", "to_normalized"]

KINETICS_MEAN = (0.45, 0.45, 0.45)
KINETICS_STD = (0.225, 0.225, 0.225)


def short_side_resize(clip: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``(T, C, H, W)`` float frames so that the shorter side is ``size`` (bilinear, antialiased)."""
    h, w = clip.shape[-2:]
    scale = size / min(h, w)
    new = (max(size, int(round(h * scale))), max(size, int(round(w * scale))))
    if new == (h, w):
        return clip
    return F.interpolate(clip, size=new, mode="bilinear", align_corners=False, antialias=scale < 1)


def cover_resize(clip: torch.Tensor, size: tuple[int, int], factor: float = 1.0) -> torch.Tensor:
    """Resize ``(T, C, H, W)`` frames, keeping the aspect ratio, to the smallest size covering ``size`` x ``factor``."""
    h, w = clip.shape[-2:]
    scale = max(size[0] / h, size[1] / w) * factor
    new = (max(size[0], int(round(h * scale))), max(size[1], int(round(w * scale))))
    if new == (h, w):
        return clip
    return F.interpolate(clip, size=new, mode="bilinear", align_corners=False, antialias=scale < 1)


def cover_size(height: int, width: int, size: tuple[int, int], factor: float = 1.0,
               short_side: int | None = None) -> tuple[int, int]:
    """The frame size :func:`short_side_resize` (to ``short_side x factor``, when given) then :func:`cover_resize`
    (by ``factor`` without ``short_side``) make of ``(height, width)`` frames: the size to crop ``size`` from.

    Computed up front so that a decoder can scale to it while converting to RGB, and no float resize follows.
    """
    h, w = height, width
    if short_side:
        s = int(round(short_side * factor))
        scale = s / min(h, w)
        h, w, factor = max(s, int(round(h * scale))), max(s, int(round(w * scale))), 1.0
    scale = max(size[0] / h, size[1] / w) * factor
    return max(size[0], int(round(h * scale))), max(size[1], int(round(w * scale)))


def resize(clip: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(T, C, H, W)`` frames (any dtype) resized to ``size``: float32 in the input's value range, bilinear,
    antialiased when shrinking; the input itself when it has that size already."""
    h, w = clip.shape[-2:]
    if (h, w) == tuple(size):
        return clip
    return F.interpolate(clip.float(), size=tuple(size), mode="bilinear", align_corners=False,
                         antialias=size[0] < h or size[1] < w)


def crop(clip: torch.Tensor, size: tuple[int, int], top: int, left: int) -> torch.Tensor:
    return clip[..., top:top + size[0], left:left + size[1]]


def center_crop(clip: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    h, w = clip.shape[-2:]
    return crop(clip, size, (h - size[0]) // 2, (w - size[1]) // 2)


def three_crops(clip: torch.Tensor, size: tuple[int, int]) -> list[torch.Tensor]:
    """Start, centre and end crops along the longer side (the SlowFast / X3D three-crop test)."""
    h, w = clip.shape[-2:]
    if w >= h:
        lefts = [0, (w - size[1]) // 2, w - size[1]]
        return [crop(clip, size, (h - size[0]) // 2, left) for left in lefts]
    tops = [0, (h - size[0]) // 2, h - size[0]]
    return [crop(clip, size, top, (w - size[1]) // 2) for top in tops]


def normalize(clip: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(T, C, H, W)`` in [0, 1] -> ``(x - mean) / std`` per channel."""
    m = torch.as_tensor(mean, dtype=clip.dtype).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=clip.dtype).view(1, -1, 1, 1)
    return (clip - m) / s


def to_normalized(clip: torch.Tensor, mean: Sequence[float], std: Sequence[float], scale: float = 255.0
                  ) -> torch.Tensor:
    """``(T, C, H, W)`` frames with values in ``[0, scale]`` (uint8 or float, any strides) -> normalised
    ``(C, T, H, W)`` float32, contiguous: one copy that converts and transposes, then in-place arithmetic.

    ``(x / scale - mean) / std``, the same as :func:`normalize` on ``clip / scale`` up to float rounding.
    """
    out = torch.empty((clip.shape[1], clip.shape[0], *clip.shape[2:]), dtype=torch.float32)
    out.copy_(clip.transpose(0, 1))
    s = torch.as_tensor(std, dtype=torch.float32)
    m = torch.as_tensor(mean, dtype=torch.float32)
    return out.mul_((1.0 / (scale * s)).view(-1, 1, 1, 1)).sub_((m / s).view(-1, 1, 1, 1))


def denormalize(clip: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Inverse of :func:`normalize`: ``(T, C, H, W)`` or ``(C, T, H, W)`` (channels first when ``dim0 == 3``
    and not ``dim1 == 3``) back to [0, 1] colour."""
    channels_first = clip.shape[0] == len(mean) and clip.shape[1] != len(mean)
    shape = (-1, 1, 1, 1) if channels_first else (1, -1, 1, 1)
    m = torch.as_tensor(mean, dtype=clip.dtype).view(shape)
    s = torch.as_tensor(std, dtype=clip.dtype).view(shape)
    return (clip * s + m).clamp(0, 1)
