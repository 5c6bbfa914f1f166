"""``vit3d inflate``: turn a 2D ViT checkpoint into a 3D vit3d safetensors file.

Reads any checkpoint :func:`vit3d.weights.load_2d` knows (timm, torchvision, HF transformers, Google npz, MONAI;
a local path or a Hugging Face Hub name), inflates it with :func:`vit3d.weights.inflate`, writes safetensors
whose metadata holds the model config and its provenance, and prints the load report.
``vit3d.load_model(OUT)`` rebuilds the 3D model from the file alone.

Example:
    vit3d inflate vit_b16.safetensors --out vit_b16_16x2.safetensors --frames 16 --tubelet 2 --in-chans 1
    vit3d inflate hf-hub:timm/vit_base_patch16_224.augreg_in21k --out vit_b16_in21k_16x2.safetensors
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from vit3d.weights import FORMATS, Checkpoint, inflate_file

__all__ = ["add_common_args", "main", "print_result", "run"]


def add_common_args(p: argparse.ArgumentParser, *, source_help: str) -> None:
    """Arguments ``vit3d inflate`` and ``vit3d adapt`` share: source, output, in-plane size, channels, classes,
    format and the head-count hint."""
    p.add_argument("source", help=source_help)
    p.add_argument("--out", required=True, help="output .safetensors path")
    p.add_argument("--img-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="in-plane size (default: the checkpoint's); positions are resampled")
    p.add_argument("--in-chans", type=int, default=None, help="input channels (1 for CT); default: keep")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classifier size: keep (default), 0 to drop, other to re-initialise")
    p.add_argument("--format", choices=("auto", *FORMATS), default="auto", help="checkpoint layout")
    p.add_argument("--num-heads", type=int, default=None,
                   help="attention heads, for formats that do not store it (default: heads of 64)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vit3d inflate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common_args(p, source_help="2D checkpoint: file (.safetensors, .pth, .bin, .npz), HF directory, or Hub "
                                   "name (hf-hub:org/name[@revision])")
    p.add_argument("--frames", type=int, default=16, help="size of the new axis (frames or slices)")
    p.add_argument("--tubelet", type=int, default=2, help="patch size along the new axis")
    p.add_argument("--method", choices=("central", "mean"), default="central",
                   help="kernel inflation: ViViT central frame or I3D mean")
    p.add_argument("--pos", choices=("tile", "separate"), default="tile",
                   help="positions: tile the in-plane table, or keep it and add a zero temporal table")
    return p


def print_result(result: Checkpoint, out: str) -> None:
    """The load report, a summary of the written model, and how to load it."""
    print(result.report)
    cfg = result.config
    print(f"wrote {out}: img_size {tuple(cfg['img_size'])}, patch_size {tuple(cfg['patch_size'])}, "
          f"in_chans {cfg['in_chans']}, num_classes {cfg['num_classes']}, embed_dim {cfg['embed_dim']}, "
          f"depth {cfg['depth']}, heads {cfg['num_heads']}")
    print(f"load it with: vit3d.load_model({str(out)!r})")


def run(command: str, args: argparse.Namespace, write: Callable[..., Checkpoint], **options: Any) -> int:
    """Call ``write(source, out, ...)`` with the shared arguments and ``options``; print the report, or one
    error line (exit 2) for a checkpoint or request that cannot work."""
    hints = {"num_heads": args.num_heads} if args.num_heads else {}
    try:
        result = write(args.source, args.out, img_size=tuple(args.img_size) if args.img_size else None,
                       in_chans=args.in_chans, num_classes=args.num_classes, format=args.format, **options, **hints)
    except (ValueError, FileNotFoundError) as err:  # library checks raise ValueError with the numbers and the fix
        print(f"vit3d {command}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print_result(result, args.out)
    return 0


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return run("inflate", args, inflate_file, frames=args.frames, tubelet=args.tubelet, method=args.method,
               pos=args.pos)
