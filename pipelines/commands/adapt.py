"""``vit3d adapt``: change the clip or volume geometry of a 3D checkpoint and write a vit3d safetensors file.

Reads any 3D checkpoint :func:`vit3d.weights.load_2d` knows (a vit3d file from ``vit3d inflate`` or training,
HF VideoMAE or ViViT, a MONAI 3D ViT; a local path or a Hugging Face Hub name) and changes frames, tubelet,
in-plane size, channels and classes with :func:`vit3d.weights.adapt`: learned position tables are resampled along
every axis, fixed sin-cos tables rebuilt, tubelet kernels resampled in time (mean-preserving), and the report
lists each change. ``vit3d.load_model(OUT)`` rebuilds the model from the file alone.

Example:
    vit3d adapt hf-hub:MCG-NJU/videomae-base-finetuned-kinetics --out videomae_8f_160.safetensors \\
        --frames 8 --img-size 160 160 --num-classes 10
"""

from __future__ import annotations

import argparse

from vit3d.weights import adapt_file

from .inflate import add_common_args, run

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vit3d adapt", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common_args(p, source_help="3D checkpoint: vit3d .safetensors, HF VideoMAE / ViViT directory, MONAI 3D "
                                   ".pth, or Hub name (hf-hub:org/name[@revision])")
    p.add_argument("--frames", type=int, default=None, help="size of the first axis (default: the checkpoint's)")
    p.add_argument("--tubelet", type=int, default=None,
                   help="patch size along the first axis; the kernel is resampled (default: the checkpoint's)")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return run("adapt", args, adapt_file, frames=args.frames, tubelet=args.tubelet)
