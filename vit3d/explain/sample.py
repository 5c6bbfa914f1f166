"""Explain one preprocessed sample end to end: the map, the NIfTI on the file's own grid, the montage, the clip.

:func:`explain_sample` is what ``vit3d explain`` runs for each input. A volume larger than the model input
(preprocessed with ``fov='whole'``) is explained by sliding windows (:func:`vit3d.explain.explain_sliding`), so
the map covers the whole scan; it is written as NIfTI on the input file's grid and affine (an overlay for 3D
Slicer or ITK-SNAP), and the montage shows the file's own voxels in radiological convention. A clip gets a GIF or
mp4 at the clip's own pace and a colour montage titled with frame times.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from vit3d.errors import ConfigError, InputError, MissingInputError
from vit3d.layers import check_choice

from .export import normalize_map, resample_to_reference, save_clip_overlay, save_nifti
from .maps import Method, explain
from .montage import View, save_montage

__all__ = ["ExplainResult", "explain_sample", "input_stem", "mask_in_model_space", "original_grid", "unique_stems"]

_SUFFIXES = re.compile(r"(\.nii\.gz|\.nii|\.nrrd|\.nhdr|\.mha|\.mhd|\.dcm|\.ima|\.mp4|\.m4v|\.avi|\.mov|\.mkv|"
                       r"\.webm|\.mpe?g|\.ts|\.wmv|\.flv|\.3gp|\.ogv)$", re.IGNORECASE)


@dataclass
class ExplainResult:
    """What :func:`explain_sample` computed for one input.

    Attributes:
        label: predicted class name.
        probability: its softmax probability.
        probabilities: every class's probability, in class order.
        files: the files written.
        map: the map in model space scaled to a maximum of 1, ``(D, H, W)`` or ``(T, H, W)``.
        original_map: the map on the input file's grid (volumes with a known affine), else ``None``.
        original_affine: that grid's voxel-to-world affine.
        windows: sliding windows used (1 when the sample is the model's input size).
    """

    label: str
    probability: float
    probabilities: list[float]
    files: list[Path] = field(default_factory=list)
    map: np.ndarray | None = None
    original_map: np.ndarray | None = None
    original_affine: np.ndarray | None = None
    windows: int = 1


def input_stem(path: str | Path) -> str:
    """File name stem of the outputs for ``path`` (known image/clip suffixes dropped; a folder's own name)."""
    name = _SUFFIXES.sub("", Path(path).name)
    return name or "input"


def unique_stems(inputs: Sequence[str | Path]) -> list[str]:
    """Output stems for ``inputs``, one each: :func:`input_stem`, prefixed by parent folder names where two collide
    (``p1/ct`` and ``p2/ct`` become ``p1_ct`` and ``p2_ct``), so no output overwrites another."""
    paths = [Path(p) for p in inputs]
    depth = [0] * len(paths)
    while True:
        stems = ["_".join([*paths[i].parent.parts[len(paths[i].parent.parts) - depth[i]:], input_stem(paths[i])])
                 if depth[i] else input_stem(paths[i]) for i in range(len(paths))]
        clash = [i for i, s in enumerate(stems) if stems.count(s) > 1 and depth[i] < len(paths[i].parent.parts)]
        if not clash:
            return stems
        for i in clash:
            depth[i] += 1


def original_grid(image: Any, input_path: str | Path | None) -> tuple[np.ndarray, tuple[int, ...]] | None:
    """The input file's voxel-to-world affine and shape: from the NIfTI header, else from MONAI's metadata."""
    if input_path is not None and str(input_path).lower().endswith((".nii", ".nii.gz")):
        import nibabel as nib

        img = nib.load(str(input_path))
        shape = tuple(int(s) for s in img.shape[:3])
        return np.asarray(img.affine, dtype=np.float64), shape + (1,) * (3 - len(shape))  # a 2D image: one slice
    meta = getattr(image, "meta", None) or {}
    if "original_affine" in meta and "spatial_shape" in meta:
        shape = tuple(int(s) for s in np.asarray(meta["spatial_shape"]).reshape(-1)[:3])
        return np.asarray(meta["original_affine"], dtype=np.float64), shape
    return None


def mask_in_model_space(path: str | Path, image: Any) -> torch.Tensor:
    """A mask file resampled (nearest) onto the preprocessed image's grid through the two affines.

    Raises:
        MissingInputError: no such file.
        InputError: the image carries no affine (not preprocessed with the MONAI backend).
    """
    import nibabel as nib

    if not Path(path).is_file():
        raise MissingInputError("the mask file does not exist", file=path, fix="check the --mask path")
    if getattr(image, "affine", None) is None:
        raise InputError("a mask needs a volume preprocessed with the MONAI backend (an image with an affine)",
                         file=path, fix="set backend: monai in the data config")
    ref = nib.load(str(path))
    mask = resample_to_reference(np.asarray(ref.dataobj, dtype=np.float32), ref.affine, image.affine,
                                 tuple(image.shape[1:]), interpolation="nearest")
    return torch.from_numpy(mask)


def _display_source(image: Any, input_path: str | Path | None, on_2d: str, on_4d: str
                    ) -> tuple[np.ndarray, np.ndarray] | None:
    """The scan to show, ``(X, Y, Z)`` on the file's grid, and its RAS affine: the file itself when it reads."""
    if input_path is not None and Path(input_path).exists():
        from vit3d.data.io import read_volume

        vol = read_volume(input_path, on_2d=on_2d, on_4d=on_4d)  # type: ignore[arg-type]
        return vol.as_tensor()[0].numpy(), np.asarray(vol.affine, dtype=np.float64)
    return None


def explain_sample(model: nn.Module, image: torch.Tensor, *, kind: Literal["volume", "clip"], classes: Sequence[str],
                   out_dir: str | Path, stem: str, method: Method = "rollout", input_path: str | Path | None = None,
                   clip_format: Literal["gif", "mp4"] = "gif", num_slices: int = 12, alpha: float = 0.6,
                   cmap: str = "jet", mask: torch.Tensor | None = None, fps: float = 8.0, floor: float = 0.9,
                   view: View = "axial", overlap: float = 0.25, aggregate: str = "mean",
                   frame_times: Sequence[float] | None = None, on_2d: str = "error", on_4d: str = "error"
                   ) -> ExplainResult:
    """Explain one preprocessed sample and write the overlays.

    Args:
        model: the eval model.
        image: the preprocessed ``(C, *spatial)`` sample; for volumes a MONAI MetaTensor whose affine maps its
            ``(D, H, W)`` voxels to world coordinates, so the map can be written on the file's own grid. A
            volume larger than the model input is explained by sliding windows.
        kind: ``'volume'`` or ``'clip'``.
        classes: class names in label order.
        out_dir: output folder (created).
        stem: file name stem of the outputs.
        method: ``'rollout'``, ``'last'`` or ``'pool'`` (CCT).
        input_path: the original file or DICOM folder: the NIfTI is written on its grid (header or MONAI's
            metadata) and the montage shows its voxels.
        clip_format: ``'gif'`` or ``'mp4'`` for clips.
        num_slices: slices (frames) in the montage.
        alpha: overlay opacity at the map's maximum.
        cmap: matplotlib colormap.
        mask: optional ``(D, H, W)`` mask in model space, outlined on the montage.
        fps: frame rate of the clip overlay when ``frame_times`` is not known.
        floor: quantile of the map below which the overlays draw nothing (the NIfTI keeps the whole map).
        view: montage plane for volumes: ``'axial'``, ``'coronal'`` or ``'sagittal'``.
        overlap: sliding-window overlap for volumes larger than the model input.
        aggregate: how window logits combine (``'mean'``, ``'max'``, ``'attention'``).
        frame_times: seconds of each frame of a clip in its source file (titles and animation pace).
        on_2d, on_4d: how the input file is read again for display (as the dataset read it).
    """
    check_choice("kind", kind, ("volume", "clip"))
    check_choice("clip format", clip_format, ("gif", "mp4"))
    check_choice("view", view, ("axial", "coronal", "sagittal"))
    x = torch.as_tensor(image).float()
    spatial_dims = getattr(model, "spatial_dims", x.ndim - 1)
    if x.ndim == spatial_dims + 2:  # several views (multi-clip testing): explain the first
        x = x[0]
    if x.ndim != spatial_dims + 1:
        raise ConfigError(f"preprocessed sample of shape {tuple(image.shape)} is not (C, *spatial) for a "
                         f"{spatial_dims}-D model")
    device = next(model.parameters()).device
    from vit3d.inference import model_input_size

    windows = 1
    if kind == "volume" and tuple(x.shape[1:]) != model_input_size(model):
        from .sliding import explain_sliding

        result = explain_sliding(model, x[None], method=method, overlap=overlap,
                                 aggregate=aggregate)  # type: ignore[arg-type]
        windows = int(result.tokens.shape[0])
    else:
        result = explain(model, x[None].to(device), method=method)
    probs = result.logits.float().softmax(-1)[0].cpu()
    top = int(probs.argmax())
    label = classes[top] if top < len(classes) else str(top)
    # attention maps are non-negative: scaled by their maximum, every voxel a window saw keeps a positive value
    amap = normalize_map(result.map[0], "max" if float(result.map.min()) >= 0 else "minmax")
    out = ExplainResult(label=label, probability=float(probs[top]), probabilities=probs.tolist(), map=amap,
                        windows=windows)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    title = f"{stem}: {label} ({out.probability:.2f}), attention {method}"
    display = x.cpu()

    if kind == "clip":
        out.files.append(save_clip_overlay(display, amap, out_dir / f"{stem}_attn_{method}.{clip_format}", fps=fps,
                                           alpha=alpha, cmap=cmap, floor=floor, frame_times=frame_times))
        frames = display if display.shape[0] == 3 else display.mean(0)
        out.files.append(save_montage(frames, amap, out_dir / f"{stem}_montage_{method}.png", num_slices=num_slices,
                                      alpha=alpha, cmap=cmap, mask=mask, title=title, axis_name="frame",
                                      floor=floor, frame_times=frame_times))
        return out

    grid = original_grid(image, input_path)
    model_affine = getattr(image, "affine", None)
    nifti = out_dir / f"{stem}_attn_{method}.nii.gz"
    if grid is not None and model_affine is not None:
        ref_affine, ref_shape = grid
        out.original_map = resample_to_reference(amap, model_affine, ref_affine, ref_shape)
        out.original_affine = ref_affine
        reference = input_path if input_path and str(input_path).lower().endswith((".nii", ".nii.gz")) else None
        out.files.append(save_nifti(out.original_map, nifti, ref_affine, reference=reference))
    else:  # no geometry to go back with (e.g. a plain tensor): the map on the model's grid, unit spacing
        out.files.append(save_nifti(amap, out_dir / f"{stem}_attn_{method}_model_space.nii.gz", np.eye(4)))

    png = out_dir / f"{stem}_montage_{method}.png"
    source = _display_source(image, input_path, on_2d, on_4d) if model_affine is not None else None
    if source is not None:  # the whole scan as stored, in radiological convention
        vol, affine = source
        shown_map = resample_to_reference(amap, model_affine, affine, vol.shape)
        shown_mask = None if mask is None else resample_to_reference(
            mask, model_affine, affine, vol.shape, interpolation="nearest")
        out.files.append(save_montage(vol, shown_map, png, affine=affine, view=view, num_slices=num_slices,
                                      alpha=alpha, cmap=cmap, mask=shown_mask, title=title, floor=floor))
    elif model_affine is not None:  # the preprocessed volume, still in radiological convention
        out.files.append(save_montage(display[0], amap, png, affine=np.asarray(model_affine), view=view,
                                      num_slices=num_slices, alpha=alpha, cmap=cmap, mask=mask, title=title,
                                      floor=floor))
    else:
        out.files.append(save_montage(display[0], amap, png, num_slices=num_slices, alpha=alpha, cmap=cmap,
                                      mask=mask, title=title, floor=floor))
    return out
