"""Sliding-window prediction time per whole scan: a 1 mm brain-sized volume classified window by window.

Writes one synthetic head-sized NIfTI at 1 mm (the MNI152 grid, 182 x 218 x 182 voxels, a bright ellipsoid
"brain" on a dark background), then, per repeat, times the two stages of ``predict`` on a whole scan:

- ``prepare``: :meth:`vit3d.data.VolumeDataset.load_one` with the MRI preset, resampled to ``--spacing`` and
  ``fov='whole'`` (no crop, padded up to the window only where smaller);
- ``windows``: :func:`vit3d.inference.sliding_window_logits` with the model's input as the window.

It prints the number of windows, median seconds per scan for each stage and the total, and the machine, as a
Markdown table row for docs/benchmarks.md.

Usage:
    python benchmarks/sliding_window.py                                   # vit_small, (32, 64, 64) at 2 mm
    python benchmarks/sliding_window.py --spacing 1 --img-size 96 96 96 --overlap 0.5 --aggregate attention
    python benchmarks/sliding_window.py --device cuda --batch-size 16
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import vit3d  # noqa: E402
from vit3d.data.volume import VolumeDataset  # noqa: E402
from vit3d.inference import sliding_window_logits  # noqa: E402

MNI_SHAPE = (182, 218, 182)  # x, y, z at 1 mm
MNI_AFFINE = np.array([[-1.0, 0, 0, 90], [0, 1, 0, -126], [0, 0, 1, -72], [0, 0, 0, 1]])


def write_head(path: Path, shape: tuple[int, int, int] = MNI_SHAPE) -> Path:
    """A head-sized MR-like volume: an ellipsoid of tissue with noise on a near-zero background."""
    import nibabel as nib

    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    inside = ((grid / np.array([0.8, 0.85, 0.75])[:, None, None, None]) ** 2).sum(0) < 1
    vol = np.where(inside, 600.0, 5.0) + rng.normal(0, 20, size=shape)
    nib.save(nib.Nifti1Image(vol.astype(np.float32), MNI_AFFINE), path)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vit_small_patch16_3d")
    p.add_argument("--img-size", type=int, nargs=3, default=(32, 64, 64), help="window = model input (D, H, W)")
    p.add_argument("--patch-size", type=int, nargs=3, default=(8, 16, 16))
    p.add_argument("--spacing", type=float, default=2.0, help="mm; the scan is resampled to it first")
    p.add_argument("--overlap", type=float, default=0.25)
    p.add_argument("--aggregate", default="mean", choices=("mean", "max", "attention"))
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--shape", type=int, nargs=3, default=MNI_SHAPE, help="scan size in voxels at 1 mm (x, y, z)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = vit3d.create_model(args.model, img_size=tuple(args.img_size), patch_size=tuple(args.patch_size),
                               in_chans=1, num_classes=2).to(args.device).eval()
    dataset = VolumeDataset([], preset="mri", spacing=args.spacing, img_size=tuple(args.img_size), fov="whole")
    with tempfile.TemporaryDirectory() as tmp:
        path = write_head(Path(tmp) / "head.nii.gz", tuple(args.shape))
        prep, win = [], []
        windows = 0
        for _ in range(args.repeats + 1):  # the first run warms up (imports, allocator, kernels)
            t0 = time.perf_counter()
            image = dataset.load_one(path)["image"]
            t1 = time.perf_counter()
            out = sliding_window_logits(model, image, overlap=args.overlap, aggregate=args.aggregate,
                                        batch_size=args.batch_size)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t2 = time.perf_counter()
            prep.append(t1 - t0)
            win.append(t2 - t1)
            windows = len(out.windows)
    prep_s, win_s = statistics.median(prep[1:]), statistics.median(win[1:])
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {args.device}"
    print(f"scan {tuple(args.shape)} at 1 mm -> {tuple(image.shape[1:])} at {args.spacing} mm (D, H, W)")
    print("| model | window | overlap | windows | prepare s | windows s | total s/scan | machine |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {args.model} | {tuple(args.img_size)} | {args.overlap} | {windows} | {prep_s:.2f} | {win_s:.2f} | "
          f"{prep_s + win_s:.2f} | {machine} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
