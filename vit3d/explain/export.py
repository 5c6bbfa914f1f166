"""Write attention maps where people look at them: NIfTI overlays and GIF/mp4 clips (PNG montages: montage.py).

A map computed in model space (after the eval preprocessing: orientation, spacing, crop/pad) is brought back
onto the ORIGINAL file's voxel grid before it is written as NIfTI, so it opens as an overlay on the input volume
in 3D Slicer or ITK-SNAP. Two ways are offered:

- :func:`resample_to_reference`: pure geometry. The preprocessed MetaTensor's affine maps model voxels to world
  coordinates and the file's affine maps file voxels to world; each file voxel samples the map at
  ``inv(model_affine) @ file_affine @ voxel`` (linear or nearest, zero outside). Every MONAI spatial transform
  keeps the affine exact, so this inverts orientation, spacing and crop/pad together.
- :func:`invert_with_transform`: MONAI's own inverse (``transform.inverse``) replayed from the operations the
  MetaTensor recorded.

matplotlib (Agg), PIL and PyAV are imported inside the functions that need them.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from vit3d.errors import ConfigError
from vit3d.layers import check_choice

__all__ = ["invert_with_transform", "normalize_map", "overlay_rgb", "resample_to_reference", "save_clip_overlay",
           "save_nifti"]

ArrayLike = np.ndarray | torch.Tensor


def _np(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)


def normalize_map(amap: ArrayLike, mode: Literal["minmax", "max"] = "minmax") -> np.ndarray:
    """Scale a map to ``[0, 1]`` as float32.

    ``'minmax'`` stretches min..max to 0..1 (all zeros for a constant map); ``'max'`` divides a non-negative map
    by its maximum, so relevance that is small but present (rollout's share for every token) stays above 0.
    """
    check_choice("mode", mode, ("minmax", "max"))
    a = _np(amap).astype(np.float32)
    lo, hi = float(a.min()), float(a.max())
    if mode == "max":
        if lo < 0:
            raise ConfigError(f"mode='max' needs a non-negative map, its minimum is {lo}; use mode='minmax'")
        return np.zeros_like(a) if hi <= 0 else a / hi
    return np.zeros_like(a) if hi - lo <= 0 else (a - lo) / (hi - lo)


def _display_map(amap: ArrayLike, floor: float) -> np.ndarray:
    """Map in ``[0, 1]`` for display: values at or below the ``floor`` quantile become 0 (drawn transparent).

    Rollout maps carry a large near-uniform share (the residual identity), so a plain min-max overlay tints the
    whole body; stretching above a quantile shows where the map rises above its typical level.
    """
    if not 0.0 <= floor < 1.0:
        raise ConfigError(f"floor={floor} must be a quantile in [0, 1)")
    a = normalize_map(amap)
    q = float(np.quantile(a, floor)) if floor > 0 else 0.0
    return np.clip((a - q) / max(1.0 - q, 1e-12), 0.0, 1.0).astype(np.float32)


def _heat_rgba(a: np.ndarray, cmap: str, alpha: float) -> np.ndarray:
    """Colour the display map, opacity rising with the value up to ``alpha``."""
    import matplotlib

    rgba = matplotlib.colormaps[cmap](a)
    rgba[..., 3] = alpha * np.sqrt(a)  # sqrt: mid values stay visible, zeros vanish
    return rgba


def _affine(a: ArrayLike, name: str) -> np.ndarray:
    out = np.asarray(_np(a), dtype=np.float64)
    if out.shape != (4, 4):
        raise ConfigError(f"{name} must be a 4x4 affine (voxel -> world), got shape {out.shape}")
    return out


def resample_to_reference(amap: ArrayLike, model_affine: ArrayLike, reference_affine: ArrayLike,
                          reference_shape: Sequence[int], *,
                          interpolation: Literal["linear", "nearest"] = "linear") -> np.ndarray:
    """Resample a 3D map from model space onto a reference (original file) voxel grid.

    Args:
        amap: ``(X, Y, Z)`` map indexed like the preprocessed image tensor (channel dropped).
        model_affine: 4x4 voxel-to-world affine of the preprocessed image (``MetaTensor.affine``).
        reference_affine: 4x4 voxel-to-world affine of the original file (``nibabel.load(f).affine``).
        reference_shape: the original file's 3 spatial sizes.
        interpolation: ``'linear'`` (trilinear) or ``'nearest'``.

    Returns:
        float32 array of ``reference_shape``; voxels that fall outside the model's field of view are 0.
    """
    check_choice("interpolation", interpolation, ("linear", "nearest"))
    src = torch.as_tensor(_np(amap))
    if src.ndim != 3 or len(reference_shape) != 3:
        raise ConfigError(f"resample_to_reference works on 3D maps and grids, got map {tuple(src.shape)} and "
                         f"reference shape {tuple(reference_shape)}")
    to_model = np.linalg.inv(_affine(model_affine, "model_affine")) @ _affine(reference_affine, "reference_affine")
    to_model_t = torch.as_tensor(to_model, dtype=torch.float64)
    shape = tuple(int(s) for s in reference_shape)
    sizes = torch.tensor(src.shape, dtype=torch.float64)
    mode = "bilinear" if interpolation == "linear" else "nearest"
    out = np.zeros(shape, dtype=np.float32)
    j, k = torch.meshgrid(torch.arange(shape[1], dtype=torch.float64), torch.arange(shape[2], dtype=torch.float64),
                          indexing="ij")
    slab = max(1, 2_000_000 // max(1, shape[1] * shape[2]))  # bound the sampling grid's memory on big scans
    for start in range(0, shape[0], slab):
        i = torch.arange(start, min(shape[0], start + slab), dtype=torch.float64)
        ii = i[:, None, None].expand(-1, *j.shape)
        vox = torch.stack([ii, j.expand_as(ii), k.expand_as(ii), torch.ones_like(ii)], dim=-1)
        coords = (vox @ to_model_t.T)[..., :3]
        # grid_sample wants (x, y, z) = (last, middle, first) axis, normalised to [-1, 1] on voxel centres.
        norm = 2.0 * coords / (sizes - 1).clamp_min(1.0) - 1.0
        grid = norm.flip(-1).float()[None]
        sampled = F.grid_sample(src[None, None], grid, mode=mode, padding_mode="zeros", align_corners=True)
        out[start:start + len(i)] = sampled[0, 0].numpy()
    return out


def invert_with_transform(amap: ArrayLike, image: Any, transform: Any, *, key: str | None = None) -> np.ndarray:
    """Map a model-space map back to the original grid with MONAI's inverse of the eval transform.

    Args:
        amap: map with the preprocessed image's spatial shape.
        image: the preprocessed ``monai.data.MetaTensor`` whose ``applied_operations`` record the transform.
        transform: the eval transform (array ``Compose``, or a dictionary one when ``key`` is given).
        key: the image key of a dictionary transform.

    Returns:
        The map on the original grid, float32, channel dropped.
    """
    from monai.data import MetaTensor

    if not isinstance(image, MetaTensor) or not image.applied_operations:
        raise ConfigError("invert_with_transform needs the preprocessed MetaTensor with its applied_operations "
                         "(keep MONAI's track_meta on); use resample_to_reference with the affines otherwise")
    src = torch.as_tensor(_np(amap))
    if tuple(src.shape) != tuple(image.shape[1:]):
        raise ConfigError(f"map shape {tuple(src.shape)} differs from the image's spatial shape {tuple(image.shape[1:])}")
    meta = {k: v for k, v in image.meta.items() if k != "affine"}
    mt = MetaTensor(src[None], affine=image.affine.clone(), meta=meta,
                    applied_operations=[dict(op) for op in image.applied_operations])
    inverted = transform.inverse({key: mt})[key] if key is not None else transform.inverse(mt)
    return np.asarray(inverted.detach().cpu().numpy()[0], dtype=np.float32)


def save_nifti(amap: ArrayLike, path: str | Path, affine: ArrayLike, *, reference: str | Path | None = None) -> Path:
    """Write a 3D map as float32 NIfTI with ``affine`` (both sform and qform), ready to overlay on the input.

    Args:
        amap: ``(X, Y, Z)`` map on the grid that ``affine`` describes.
        path: output ``.nii`` / ``.nii.gz`` file.
        affine: 4x4 voxel-to-world affine, normally the original file's.
        reference: the original file; its sform/qform codes and units are copied so viewers treat the overlay
            exactly like the volume.
    """
    import nibabel as nib

    arr = _np(amap).astype(np.float32)
    if arr.ndim != 3:
        raise ConfigError(f"save_nifti writes 3D maps, got shape {arr.shape}")
    aff = _affine(affine, "affine")
    img = nib.Nifti1Image(arr, aff)
    scode, qcode = 1, 1
    if reference is not None:
        ref = nib.load(str(reference))
        if (tuple(ref.shape[:3]) + (1,) * (3 - len(ref.shape)))[:3] != arr.shape:  # a 2D file is one slice
            raise ConfigError(f"map shape {arr.shape} differs from the reference {reference} shape {ref.shape[:3]}; "
                             "resample the map onto the reference grid first (resample_to_reference)")
        scode = int(ref.header["sform_code"]) or 1
        qcode = int(ref.header["qform_code"]) or 1
        img.header.set_xyzt_units(*ref.header.get_xyzt_units())
    img.set_sform(aff, code=scode)
    img.set_qform(aff, code=qcode)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def _display(volume: np.ndarray) -> np.ndarray:
    """Scale intensities to [0, 1] between the 1st and 99th percentile (CT windows vary too much to fix one)."""
    lo, hi = np.percentile(volume, [1, 99])
    if hi <= lo:
        hi = lo + 1.0
    return np.clip((volume - lo) / (hi - lo), 0.0, 1.0)


def overlay_rgb(frames: ArrayLike, amap: ArrayLike, *, cmap: str = "jet", alpha: float = 0.6,
                floor: float = 0.0) -> np.ndarray:
    """Blend a map onto frames: ``(T, H, W)`` grey or ``(T, H, W, 3)`` / ``(3, T, H, W)`` colour -> uint8 ``(T, H, W, 3)``.

    The opacity of the map rises with its value up to ``alpha`` (see :func:`save_montage` for ``floor``).
    """
    f = _np(frames)
    if f.ndim == 4 and f.shape[0] in (1, 3) and f.shape[-1] not in (1, 3):
        f = np.moveaxis(f, 0, -1)  # (C, T, H, W) as the model sees clips
    if f.ndim == 4 and f.shape[-1] == 1:
        f = f[..., 0]
    if f.ndim == 3:
        f = np.repeat(f[..., None], 3, axis=-1)
    if f.ndim != 4 or f.shape[-1] != 3:
        raise ConfigError(f"frames of shape {_np(frames).shape} are not (T, H, W), (T, H, W, 3) or (C, T, H, W)")
    a = _display_map(amap, floor)
    if a.shape != f.shape[:3]:
        raise ConfigError(f"map shape {a.shape} differs from the frames' (T, H, W) {f.shape[:3]}")
    f = f / 255.0 if f.max() > 1.5 and f.min() >= 0 else _display(f)
    rgba = _heat_rgba(a, cmap, alpha)
    w = rgba[..., 3:]
    return (np.clip((1 - w) * f + w * rgba[..., :3], 0, 1) * 255).round().astype(np.uint8)


def frame_durations(frame_times: Sequence[float] | None, n: int, fps: float) -> list[float]:
    """Seconds each of ``n`` frames is shown: the gaps between the frames' real times, else ``1 / fps``.

    The last frame lasts as long as the median gap (it has no successor). Times that do not increase (a clip
    sampled backwards or with repeats) fall back to ``1 / fps``.
    """
    if not fps > 0:
        raise ConfigError(f"fps={fps} must be > 0")
    if frame_times is None or n < 2:
        return [1.0 / fps] * n
    t = np.asarray(frame_times, dtype=np.float64)
    if t.shape != (n,):
        raise ConfigError(f"{t.size} frame times for {n} frames")
    gaps = np.diff(t)
    if not (gaps > 0).all():
        return [1.0 / fps] * n
    return [*gaps.tolist(), float(np.median(gaps))]


def save_clip_overlay(frames: ArrayLike, amap: ArrayLike, path: str | Path, *, fps: float = 8.0, cmap: str = "jet",
                      alpha: float = 0.6, min_size: int = 256, floor: float = 0.9,
                      frame_times: Sequence[float] | None = None) -> Path:
    """Animated GIF (``.gif``) or H.264 mp4 (``.mp4``) of a clip with the map overlaid, one frame per time step.

    Small frames are enlarged (nearest neighbour, integer factor) until the shorter side reaches ``min_size``.
    With ``frame_times`` (seconds of each sampled frame in the source clip) the animation plays at the clip's
    real pace: a GIF holds each frame until the next one's time, an mp4 runs at the mean rate of the samples;
    without them, at ``fps``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    check_choice("clip file suffix", suffix, (".gif", ".mp4"))
    rgb = overlay_rgb(frames, amap, cmap=cmap, alpha=alpha, floor=floor)
    durations = frame_durations(frame_times, len(rgb), fps)
    factor = max(1, -(-min_size // min(rgb.shape[1:3])))
    rgb = rgb.repeat(factor, axis=1).repeat(factor, axis=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".gif":
        from PIL import Image

        images = [Image.fromarray(fr) for fr in rgb]
        # GIF delays are in 10 ms units; PIL takes milliseconds and rounds
        images[0].save(path, save_all=True, append_images=images[1:], loop=0,
                       duration=[max(10, round(1000 * d)) for d in durations])
        return path
    import av

    fps = 1.0 / float(np.mean(durations))

    h, w = rgb.shape[1] // 2 * 2, rgb.shape[2] // 2 * 2  # yuv420p needs even sizes
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for fr in rgb:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(fr[:h, :w]), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
