"""Does the model look at the lesion? Fraction of validation volumes whose attention-map peak is inside it.

The synthetic CT data (``vit3d.data.synthetic.make_volume_dataset``) draws one lesion per volume whose shape is
the class and writes its mask (CSV column ``mask``). For each validation volume this script runs
``vit3d explain``'s computation (eval preprocessing of the checkpoint, attention capture, rollout or last-layer
map, map written back onto the file's grid and affine) and checks whether the map's arg-max voxel lies inside
the lesion mask, in the file's own voxel grid. It also reports the chance level: the mean fraction of the volume
the lesion occupies (where a uniformly random peak would land), the share of the map's mass that falls in
the lesion, and two baselines that need no training: the same architecture with fresh random weights
(``untrained rollout``) and the brightest patch-sized spot of the preprocessed volume (``brightest spot``), since
the lesions are denser than the surrounding tissue.

Usage:
    python benchmarks/explain_lesion.py --ckpt outputs/demo/checkpoints/best.ckpt --data outputs/demo/data/dataset.csv
    python benchmarks/explain_lesion.py --quick-train outputs/explain_quick   # no demo model: train one first
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import platform
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from vit3d.explain import explain, normalize_map, resample_to_reference  # noqa: E402


def read_rows(table: Path, split: str) -> list[dict[str, str]]:
    """Rows of ``split`` with absolute ``image`` and ``mask`` paths (relative ones are read against the CSV)."""
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "mask" not in rows[0]:
        raise ValueError(f"{table} has no 'mask' column; write it with vit3d.data.synthetic.make_volume_dataset")
    out = []
    for row in rows:
        if row.get("split", split) != split:
            continue
        for key in ("image", "mask"):
            p = Path(row[key])
            row[key] = str(p if p.is_absolute() else table.parent / p)
        out.append(row)
    if not out:
        raise ValueError(f"{table} has no rows with split={split!r}")
    return out


def evaluate(ckpt: Path, table: Path, *, methods: list[str], split: str = "val", limit: int | None = None
             ) -> dict[str, Any]:
    """Peak-in-lesion fraction per method, chance level and accuracy over ``split``."""
    import nibabel as nib

    from pipelines.inference import load_for_inference

    bundle = load_for_inference(ckpt)
    model = bundle.model.eval()
    untrained = copy.deepcopy(model)
    torch.manual_seed(0)
    untrained.init_weights()
    patch = tuple(getattr(model, "patch_size", (3, 3, 3)))
    baselines = {"untrained rollout": 0, "brightest spot": 0}
    rows = read_rows(table, split)[:limit]
    hits = {m: 0 for m in methods}
    mass = {m: [] for m in methods}
    lesion_fraction, correct = [], 0
    t0 = time.perf_counter()
    for row in rows:
        sample = bundle.preprocess(row["image"])
        image = sample["image"]
        ref = nib.load(row["image"])
        lesion = np.asarray(nib.load(row["mask"]).dataobj) > 0
        lesion_fraction.append(float(lesion.mean()))
        for method in methods:
            result = explain(model, torch.as_tensor(image).float()[None], method=method)
            amap = normalize_map(result.map[0])
            on_file = resample_to_reference(amap, image.affine, ref.affine, ref.shape[:3])
            peak = np.unravel_index(int(on_file.argmax()), on_file.shape)
            hits[method] += bool(lesion[peak])
            mass[method].append(float(on_file[lesion].sum() / max(on_file.sum(), 1e-12)))
        candidates = {
            "untrained rollout": explain(untrained, torch.as_tensor(image).float()[None], method="rollout").map[0],
            "brightest spot": F.avg_pool3d(torch.as_tensor(image).float()[None, :1], patch, stride=1,
                                           padding=tuple(k // 2 for k in patch), count_include_pad=False)[0, 0],
        }
        for name, cand in candidates.items():
            cand = cand[tuple(slice(0, s) for s in image.shape[1:])]
            on_file = resample_to_reference(normalize_map(cand), image.affine, ref.affine, ref.shape[:3])
            baselines[name] += bool(lesion[np.unravel_index(int(on_file.argmax()), on_file.shape)])
        pred = bundle.class_names[int(result.logits.argmax())]
        correct += pred == row["label"]
    n = len(rows)
    return {
        "checkpoint": str(ckpt), "data": str(table), "split": split, "volumes": n,
        "peak_in_lesion": {m: hits[m] / n for m in methods},
        "map_mass_in_lesion": {m: float(np.mean(mass[m])) for m in methods},
        "chance_lesion_volume_fraction": float(np.mean(lesion_fraction)),
        "baselines_peak_in_lesion": {k: v / n for k, v in baselines.items()},
        "accuracy": correct / n, "seconds": time.perf_counter() - t0,
        "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
    }


def quick_train(out: Path, *, epochs: int, seed: int = 0) -> tuple[Path, Path]:
    """Fallback when no demo model exists: synthetic data and a small 3D ViT trained with the real pipeline.

    Returns:
        ``(checkpoint, dataset CSV)``.
    """
    import lightning.pytorch as pl

    from pipelines.datamodules import VolumeDataModule
    from pipelines.module import ClassificationModule
    from pipelines.networks import preset_class
    from vit3d.data import VolumeDataset
    from vit3d.data.synthetic import make_volume_dataset

    pl.seed_everything(seed, workers=True)
    table = make_volume_dataset(out / "data", num_samples=120, shape=(32, 64, 64), seed=seed)
    dm = VolumeDataModule(str(table), dataset=partial(VolumeDataset, img_size=(32, 64, 64), cache="memory",
                                                      normalize=(0.5, 0.5)),
                          batch_size=8, validate_files=False)
    with open(table, newline="") as f:
        classes = sorted({r["label"] for r in csv.DictReader(f)})
    net = preset_class("vit_tiny_patch16_3d")(patch_size=[4, 8, 8], embed_dim=96, depth=4, num_heads=3,
                                              num_classes=len(classes), in_chans=1, img_size=[32, 64, 64])
    module = ClassificationModule(net, class_names=classes, lr_scheduler=None)
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, default_root_dir=str(out), deterministic=False)
    trainer.fit(module, datamodule=dm)
    ckpt = out / "quick.ckpt"
    trainer.save_checkpoint(ckpt)
    return ckpt, table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", type=Path, help="a `vit3d fit` checkpoint trained on the synthetic volumes")
    p.add_argument("--data", type=Path, help="the synthetic dataset.csv (with its mask column)")
    p.add_argument("--split", default="val")
    p.add_argument("--method", default="both", choices=("rollout", "last", "both"))
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N volumes only")
    p.add_argument("--quick-train", type=Path, default=None, metavar="DIR",
                   help="no checkpoint yet: write synthetic data and train a small ViT into DIR first")
    p.add_argument("--epochs", type=int, default=15, help="epochs of --quick-train")
    p.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = p.parse_args(argv)
    if args.quick_train is not None:
        args.ckpt, args.data = quick_train(args.quick_train, epochs=args.epochs)
    if args.ckpt is None or args.data is None:
        p.error("give --ckpt and --data, or --quick-train DIR")
    for name in ("ckpt", "data"):
        if not Path(getattr(args, name)).is_file():
            raise FileNotFoundError(f"--{name} {getattr(args, name)} does not exist")
    methods = ["rollout", "last"] if args.method == "both" else [args.method]
    res = evaluate(args.ckpt, args.data, methods=methods, split=args.split, limit=args.limit)
    print(f"{res['volumes']} {res['split']} volumes, accuracy {res['accuracy']:.3f}, {res['seconds']:.1f} s")
    print("| method | peak inside lesion | map mass inside lesion | chance (lesion share of volume) |")
    print("|---|---|---|---|")
    for m in methods:
        print(f"| {m} | {res['peak_in_lesion'][m]:.3f} | {res['map_mass_in_lesion'][m]:.3f} | "
              f"{res['chance_lesion_volume_fraction']:.4f} |")
    for name, frac in res["baselines_peak_in_lesion"].items():
        print(f"| baseline: {name} | {frac:.3f} | | |")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
