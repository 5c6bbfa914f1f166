"""``vit3d explain``: where did a trained model look in one volume or clip.

Loads a checkpoint with :func:`pipelines.inference.load_for_inference` (the model in eval mode, its class names,
the data kind and the exact eval preprocessing), runs one forward pass with attention capture, and writes:

- volumes: ``<stem>_attn_<method>.nii.gz`` on the input file's own grid and affine (an overlay for 3D Slicer or
  ITK-SNAP) and ``<stem>_montage_<method>.png`` (slices of the preprocessed volume with the map);
- clips: ``<stem>_attn_<method>.gif`` (or ``.mp4``) and ``<stem>_montage_<method>.png`` (frames with the map).

It prints the predicted class and the files written.

Example:
    vit3d explain --ckpt outputs/demo/best.ckpt --input scan.nii.gz --out explain/ --method rollout
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vit3d.errors import ConfigError, MissingInputError
from vit3d.explain import (
    explain,
    normalize_map,
    resample_to_reference,
    save_clip_overlay,
    save_montage,
    save_nifti,
)

from . import CommandParser

__all__ = ["ExplainResult", "explain_sample", "main"]

METHODS = ("rollout", "last", "pool")


@dataclass
class ExplainResult:
    """What ``vit3d explain`` computed for one input.

    Attributes:
        label: predicted class name.
        probability: its softmax probability.
        probabilities: every class's probability, in class order.
        files: the files written.
        map: the normalised map ``[0, 1]`` in model space, ``(D, H, W)`` or ``(T, H, W)``.
        original_map: the map on the input file's grid (volumes with a known affine), else ``None``.
    """

    label: str
    probability: float
    probabilities: list[float]
    files: list[Path] = field(default_factory=list)
    map: np.ndarray | None = None
    original_map: np.ndarray | None = None


def _stem(path: str | Path) -> str:
    name = Path(path).name
    name = re.sub(r"(\.nii\.gz|\.nii|\.nrrd|\.mha|\.mhd|\.mp4|\.avi|\.mov|\.mkv|\.webm|\.dcm)$", "", name,
                  flags=re.IGNORECASE)
    return name or "input"


def original_grid(image: Any, input_path: str | Path | None) -> tuple[np.ndarray, tuple[int, ...]] | None:
    """The input file's voxel-to-world affine and shape: from the NIfTI header, else from MONAI's metadata."""
    if input_path is not None and str(input_path).lower().endswith((".nii", ".nii.gz")):
        import nibabel as nib

        img = nib.load(str(input_path))
        return np.asarray(img.affine, dtype=np.float64), tuple(int(s) for s in img.shape[:3])
    meta = getattr(image, "meta", None) or {}
    if "original_affine" in meta and "spatial_shape" in meta:
        shape = tuple(int(s) for s in np.asarray(meta["spatial_shape"]).reshape(-1)[:3])
        return np.asarray(meta["original_affine"], dtype=np.float64), shape
    return None


def explain_sample(model: nn.Module, image: torch.Tensor, *, kind: str, classes: Sequence[str], out_dir: str | Path,
                   stem: str, method: str = "rollout", input_path: str | Path | None = None,
                   clip_format: str = "gif", num_slices: int = 12, alpha: float = 0.6, cmap: str = "jet",
                   mask: torch.Tensor | None = None, fps: float = 8.0, floor: float = 0.9) -> ExplainResult:
    """Explain one preprocessed sample and write the overlays.

    Args:
        model: the eval model.
        image: the preprocessed ``(C, *spatial)`` sample; for volumes a MONAI MetaTensor whose affine maps its
            ``(D, H, W)`` voxels to world coordinates, so the map can be written on the file's own grid.
        kind: ``'volume'`` or ``'clip'``.
        classes: class names in label order.
        out_dir: output folder (created).
        stem: file name stem of the outputs.
        method: ``'rollout'``, ``'last'`` or ``'pool'`` (CCT).
        input_path: the original file (its NIfTI header gives the output grid; else MONAI's metadata does).
        clip_format: ``'gif'`` or ``'mp4'`` for clips.
        num_slices: slices (frames) in the montage.
        alpha: overlay opacity at the map's maximum.
        cmap: matplotlib colormap.
        mask: optional ``(D, H, W)`` mask in model space, outlined on the montage.
        fps: frame rate of the clip overlay.
        floor: quantile of the map below which the overlays draw nothing (the NIfTI keeps the whole map).
    """
    if kind not in ("volume", "clip"):
        raise ValueError(f"kind={kind!r} is not 'volume' or 'clip'")
    if clip_format not in ("gif", "mp4"):
        raise ValueError(f"clip format {clip_format!r} is not 'gif' or 'mp4'")
    x = torch.as_tensor(image).float()
    spatial_dims = getattr(model, "spatial_dims", x.ndim - 1)
    if x.ndim == spatial_dims + 2:  # several views (multi-clip testing): explain the first
        x = x[0]
    if x.ndim != spatial_dims + 1:
        raise ValueError(f"preprocessed sample of shape {tuple(image.shape)} is not (C, *spatial) for a "
                         f"{spatial_dims}-D model")
    device = next(model.parameters()).device
    result = explain(model, x[None].to(device), method=method)  # type: ignore[arg-type]
    probs = result.logits.float().softmax(-1)[0].cpu()
    top = int(probs.argmax())
    label = classes[top] if top < len(classes) else str(top)
    amap = normalize_map(result.map[0])
    out = ExplainResult(label=label, probability=float(probs[top]), probabilities=probs.tolist(), map=amap)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    title = f"{stem}: {label} ({out.probability:.2f}), attention {method}"
    display = x.cpu()

    if kind == "volume":
        grid = original_grid(image, input_path)
        model_affine = getattr(image, "affine", None)
        nifti = out_dir / f"{stem}_attn_{method}.nii.gz"
        if grid is not None and model_affine is not None:
            ref_affine, ref_shape = grid
            out.original_map = resample_to_reference(amap, model_affine, ref_affine, ref_shape)
            reference = input_path if input_path and str(input_path).lower().endswith((".nii", ".nii.gz")) else None
            out.files.append(save_nifti(out.original_map, nifti, ref_affine, reference=reference))
        else:  # no geometry to go back with (e.g. a plain tensor): the map on the model's grid, unit spacing
            out.files.append(save_nifti(amap, out_dir / f"{stem}_attn_{method}_model_space.nii.gz", np.eye(4)))
        out.files.append(save_montage(display, amap, out_dir / f"{stem}_montage_{method}.png", num_slices=num_slices,
                                      alpha=alpha, cmap=cmap, mask=mask, title=title, floor=floor))
    else:
        out.files.append(save_clip_overlay(display, amap, out_dir / f"{stem}_attn_{method}.{clip_format}", fps=fps,
                                           alpha=alpha, cmap=cmap, floor=floor))
        frames = display.mean(0) if display.shape[0] != 1 else display[0]
        out.files.append(save_montage(frames, amap, out_dir / f"{stem}_montage_{method}.png", num_slices=num_slices,
                                      alpha=alpha, cmap=cmap, mask=mask, title=title, axis_name="frame",
                                      floor=floor))
    return out


def _unpack(loaded: Any) -> tuple[nn.Module, list[str], str, Any]:
    """``load_for_inference``'s result as ``(model, classes, kind, preprocess)`` (an object or a 4-tuple)."""
    if isinstance(loaded, tuple):
        model, classes, kind, preprocess = loaded
    else:
        classes = getattr(loaded, "class_names", None) or loaded.classes
        model, kind, preprocess = loaded.model, loaded.kind, loaded.preprocess
    return model, list(classes), str(kind), preprocess


def _mask_in_model_space(path: str | Path, image: Any) -> torch.Tensor:
    """A mask file resampled (nearest) onto the preprocessed image's grid through the two affines."""
    import nibabel as nib

    if not Path(path).is_file():
        raise FileNotFoundError(f"--mask {path} does not exist; check the path")
    if getattr(image, "affine", None) is None:
        raise ValueError("--mask needs a volume preprocessed with the MONAI backend (an image with an affine)")
    ref = nib.load(str(path))
    mask = resample_to_reference(np.asarray(ref.dataobj, dtype=np.float32), ref.affine, image.affine,
                                 tuple(image.shape[1:]), interpolation="nearest")
    return torch.from_numpy(mask)


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(prog="vit3d explain",
                                description="Where did a trained model look in one volume or clip: attention maps "
                                            "(rollout or last layer) written as a NIfTI overlay on the input's grid, "
                                            "a PNG montage and, for clips, a GIF/mp4.")
    p.add_argument("--ckpt", required=True, help="checkpoint written by `vit3d fit` (or `make demo`)")
    p.add_argument("--input", required=True, help="a volume (NIfTI, NRRD, MHA, DICOM folder) or a clip (mp4, ...)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--method", default="rollout", choices=METHODS,
                   help="rollout: attention rollout through all layers (default); last: last layer's attention; "
                        "pool: CCT's sequence-pooling weights")
    p.add_argument("--clip-format", default="gif", choices=("gif", "mp4"), help="animation format for clips")
    p.add_argument("--slices", type=int, default=12, help="slices (frames) in the PNG montage")
    p.add_argument("--alpha", type=float, default=0.6, help="overlay opacity at the map's maximum")
    p.add_argument("--floor", type=float, default=0.9,
                   help="quantile of the map below which the PNG/GIF overlays draw nothing (0 = plain min-max)")
    p.add_argument("--cmap", default="jet", help="matplotlib colormap of the overlay (jet, inferno, ...)")
    p.add_argument("--mask", default=None, help="a mask on the input volume's grid (e.g. a lesion segmentation) to "
                                              "outline on the montage")
    p.add_argument("--device", default="cpu", help="torch device")
    return p


def main(argv: list[str] | None = None) -> int:
    """``vit3d explain --ckpt CKPT --input FILE --out DIR [--method rollout|last|pool]``."""
    args = build_parser().parse_args(argv)
    for name in ("ckpt", "input"):
        path = Path(getattr(args, name))
        if not path.exists():
            raise MissingInputError(f"--{name} does not exist", file=path, fix="check the path")
    if not 0.0 <= args.alpha <= 1.0:
        raise ConfigError(f"--alpha {args.alpha} must be in [0, 1]")
    if not 0.0 <= args.floor < 1.0:
        raise ConfigError(f"--floor {args.floor} must be a quantile in [0, 1)")
    from pipelines.inference import load_for_inference

    model, classes, kind, preprocess = _unpack(load_for_inference(args.ckpt))
    model = model.to(args.device).eval()
    sample = preprocess(args.input)
    image = sample["image"] if isinstance(sample, dict) else sample
    mask = _mask_in_model_space(args.mask, image) if args.mask is not None else None
    result = explain_sample(model, image, kind=kind, classes=classes, out_dir=args.out, stem=_stem(args.input),
                            method=args.method, input_path=args.input, clip_format=args.clip_format,
                            num_slices=args.slices, alpha=args.alpha, cmap=args.cmap, mask=mask,
                            floor=args.floor)
    print(f"predicted: {result.label} (p={result.probability:.3f})")
    for f in result.files:
        print(f"wrote {f}")
    return 0
