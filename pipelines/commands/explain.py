"""``vit3d explain``: where did a trained model look in volumes or clips.

Loads a checkpoint with :func:`pipelines.inference.load_for_inference` (the model in eval mode, its class names,
the data kind and the eval preprocessing), finds the inputs as ``predict`` does
(:func:`vit3d.data.inputs.discover_inputs`: files, folders, DICOM series folders, globs, CSVs) and, for each,
runs :func:`vit3d.explain.explain_sample`, which writes:

- volumes: ``<stem>_attn_<method>.nii.gz`` on the input file's own grid and affine and
  ``<stem>_montage_<method>.png`` (the whole scan, radiological convention, orientation letters, colour bar);
  a scan larger than the model input is explained by sliding windows over the whole scan (``--fov whole``, the
  default) rather than cropped;
- clips: ``<stem>_attn_<method>.gif`` (or ``.mp4``) and a colour ``<stem>_montage_<method>.png``.

It prints the predicted class and the files written for each input.

Example:
    vit3d explain --ckpt outputs/demo/best.ckpt --input scans/ --out explain/ --method rollout --view coronal
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from vit3d.errors import ConfigError, InputError, MissingInputError

from . import CommandParser

__all__ = ["build_parser", "main"]

METHODS = ("rollout", "last", "pool")


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(prog="vit3d explain",
                                description="Where did a trained model look: attention maps (rollout or last layer) "
                                            "written as a NIfTI overlay on each input's grid, a PNG montage and, for "
                                            "clips, a GIF/mp4.")
    p.add_argument("--ckpt", required=True, help="checkpoint written by `vit3d fit` (or `make demo`)")
    p.add_argument("--input", required=True, nargs="+",
                   help="volumes (NIfTI, NRRD, MHA, DICOM files or series folders) or clips: files, folders "
                        "(walked; a DICOM series folder is one input), glob patterns or a CSV with an image/path "
                        "column")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--method", default="rollout", choices=METHODS,
                   help="rollout: attention rollout through all layers (default); last: last layer's attention; "
                        "pool: CCT's sequence-pooling weights")
    p.add_argument("--fov", default="whole", choices=("whole", "model"),
                   help="volumes: whole = the whole scan at the model's spacing, by sliding windows when larger "
                        "than the model input (default); model = exactly the model input of training (its fov)")
    p.add_argument("--overlap", type=float, default=0.25, help="sliding-window overlap, in [0, 1)")
    p.add_argument("--aggregate", default="mean", choices=("mean", "max", "attention"),
                   help="how sliding-window logits combine into the scan's prediction")
    p.add_argument("--view", default="axial", choices=("axial", "coronal", "sagittal"), help="montage plane")
    p.add_argument("--on-2d", default="error", choices=("error", "slice"),
                   help="a 2D image given as a volume: error, or read it as a one-slice volume")
    p.add_argument("--on-4d", default="error", choices=("error", "first", "mean"),
                   help="a 4D series given as a volume: error, or take its first volume or the mean")
    p.add_argument("--clip-format", default="gif", choices=("gif", "mp4"), help="animation format for clips")
    p.add_argument("--slices", type=int, default=12, help="slices (frames) in the PNG montage")
    p.add_argument("--alpha", type=float, default=0.6, help="overlay opacity at the map's maximum")
    p.add_argument("--floor", type=float, default=0.9,
                   help="quantile of the map below which the PNG/GIF overlays draw nothing (0 = plain min-max)")
    p.add_argument("--cmap", default="jet", help="matplotlib colormap of the overlay (jet, inferno, ...)")
    p.add_argument("--mask", default=None, help="a mask on the input volume's grid (e.g. a lesion segmentation) to "
                                              "outline on the montage (one input only)")
    p.add_argument("--device", default="cpu", help="torch device")
    return p


def _check(args: argparse.Namespace) -> None:
    if not Path(args.ckpt).exists():
        raise MissingInputError("the checkpoint does not exist", file=args.ckpt, fix="check the --ckpt path")
    if not 0.0 <= args.alpha <= 1.0:
        raise ConfigError(f"--alpha {args.alpha} is outside [0, 1]", fix="pass an opacity such as 0.6")
    if not 0.0 <= args.floor < 1.0:
        raise ConfigError(f"--floor {args.floor} is not a quantile in [0, 1)", fix="pass e.g. 0.9, or 0 for min-max")
    if not 0.0 <= args.overlap < 1.0:
        raise ConfigError(f"--overlap {args.overlap} is outside [0, 1)", fix="pass e.g. 0.25")
    if args.slices < 1:
        raise ConfigError(f"--slices {args.slices} must be >= 1", fix="pass e.g. 12")


def _volume_preprocess(bundle: Any, args: argparse.Namespace) -> Any:
    """``path -> sample`` with the checkpoint's eval preprocessing, the field of view and 2D/4D reading asked for."""
    from vit3d.data.volume import VolumeDataset

    kwargs = dict(bundle.datamodule.dataset_kwargs)
    kwargs.update(train=False, on_2d=args.on_2d, on_4d=args.on_4d, cache="none")
    if args.fov == "whole":
        kwargs["fov"] = "whole"
    return VolumeDataset([], **kwargs).load_one


def _frame_times(sample: Any) -> list[float] | None:
    for key in ("frame_times", "timestamps", "times"):
        value = sample.get(key) if isinstance(sample, dict) else None
        if value is not None:
            return [float(t) for t in (value.tolist() if hasattr(value, "tolist") else value)]
    return None


def main(argv: list[str] | None = None) -> int:
    """``vit3d explain --ckpt CKPT --input FILE|FOLDER|GLOB|CSV ... --out DIR [--method rollout|last|pool]``."""
    args = build_parser().parse_args(argv)
    _check(args)
    from pipelines.inference import load_for_inference
    from vit3d.data.common import SampleError
    from vit3d.data.inputs import discover_inputs
    from vit3d.explain import explain_sample, mask_in_model_space, unique_stems

    bundle = load_for_inference(args.ckpt)
    kind = str(bundle.kind)
    if kind == "clip" and (args.on_2d != "error" or args.on_4d != "error"):
        raise ConfigError("--on-2d / --on-4d apply to volumes, and this checkpoint classifies clips",
                          file=args.ckpt, fix="drop them")
    inputs = discover_inputs(args.input, kind)
    if args.mask is not None and len(inputs) != 1:
        raise ConfigError(f"--mask outlines one input's lesion but {len(inputs)} inputs were found",
                          fix="explain that input alone with --mask")
    model = bundle.model.to(args.device).eval()
    preprocess = _volume_preprocess(bundle, args) if kind == "volume" else bundle.preprocess
    failed = 0
    for path, stem in zip(inputs, unique_stems(inputs), strict=True):
        try:
            sample = preprocess(path)
        except SampleError as err:
            error = InputError(err.reason, file=err.file,
                               fix="for explain: --on-2d slice reads a 2D image as one slice, --on-4d first|mean "
                                   "takes one volume of a 4D series" if kind == "volume" else None)
            if len(inputs) == 1:
                raise error from err
            print(f"vit3d explain: skipped: {error}", file=sys.stderr)
            failed += 1
            continue
        image = sample["image"] if isinstance(sample, dict) else sample
        mask = mask_in_model_space(args.mask, image) if args.mask is not None else None
        result = explain_sample(model, image, kind=kind, classes=list(bundle.class_names), out_dir=args.out,
                                stem=stem, method=args.method, input_path=path,
                                clip_format=args.clip_format, num_slices=args.slices, alpha=args.alpha,
                                cmap=args.cmap, mask=mask, floor=args.floor, view=args.view, overlap=args.overlap,
                                aggregate=args.aggregate, frame_times=_frame_times(sample), on_2d=args.on_2d,
                                on_4d=args.on_4d)
        windows = f", {result.windows} windows" if result.windows > 1 else ""
        print(f"{path}: predicted: {result.label} (p={result.probability:.3f}{windows})")
        for f in result.files:
            print(f"wrote {f}")
    if failed:
        print(f"vit3d explain: {failed} of {len(inputs)} inputs could not be explained (listed above)",
              file=sys.stderr)
        return 2
    return 0
