"""Does masked-autoencoder pretraining help when labels are scarce? Fine-tune from a ``vit3d pretrain`` encoder vs
from scratch (and, optionally, from an inflated 2D checkpoint), on the synthetic CT volumes.

Per seed:

1. Write the synthetic CT volumes (``vit3d.data.synthetic.make_volume_dataset``; train / val / test splits).
2. Keep the labels of only ``--labelled`` (10 %) of the training split, stratified by class, chosen by the seed.
3. ``vit3d pretrain`` on ALL training volumes (labels ignored; val volumes give ``val/loss``).
4. ``vit3d fit`` on the labelled share with the same budget (``--finetune-steps``, same optimiser, schedule and
   augmentation) from: scratch, the pretrained encoder (``model.net: pipelines.networks.Pretrained`` with
   ``init_args.path`` the encoder file), and ``--inflated FILE`` when given (a 2D checkpoint already inflated by
   ``vit3d inflate`` to the volumes' geometry; its own architecture, also through ``Pretrained``).
5. ``vit3d test`` with each run's best checkpoint (on the accuracy of the fully labelled val split, the same for
   every arm): test accuracy and AUROC.

Prints one row per (arm, seed), then mean +- std over seeds, with optimiser steps and CPU time (process time of
this process: the runs are in-process and loaders use no workers), and writes everything to ``--out`` as JSON.

Usage (the default sizes take roughly 5 minutes per seed on 2 CPU cores; ``--smoke`` about two minutes in all):
    .venv/bin/python benchmarks/pretrain_finetune.py [--seeds 0 1 2] [--out benchmarks/results/pretrain_finetune.json]
    .venv/bin/python benchmarks/pretrain_finetune.py --smoke
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import logging
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.cli import main as vit3d  # noqa: E402

# The encoder of configs/demo_volumes.yaml (and configs/pretrain_volumes.yaml).
NET = {"class_path": "pipelines.networks.vit_tiny_patch16_3d",
       "init_args": {"patch_size": [8, 8, 8], "embed_dim": 128, "depth": 4, "num_heads": 4, "class_token": False,
                     "global_pool": "avg"}}
OPTIMIZER = {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1.0e-3, "weight_decay": 0.05}}
SCHEDULE = {"class_path": "pipelines.schedulers.WarmupCosineLR",
            "init_args": {"warmup_steps": 0.1, "min_lr_ratio": 0.01}}


def _trainer(root: Path, **extra: Any) -> dict[str, Any]:
    return {"default_root_dir": str(root), "accelerator": "cpu", "devices": 1, "precision": "32-true",
            "enable_progress_bar": False, "enable_model_summary": False, "log_every_n_steps": 5,
            "gradient_clip_val": 1.0, **extra}


def _data(csv_path: Path, class_path: str, args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    return {"class_path": class_path,
            "init_args": {"data": str(csv_path), "batch_size": args.batch_size, "num_workers": 0,
                          "dataset": {"img_size": list(args.shape), "preset": "ct",
                                      "cache": "memory"}, **extra}}


def _run(argv: list[str], config: dict[str, Any], log: Path) -> float:
    """Run ``vit3d <argv> -c config`` in-process, its output to ``log``; return the CPU seconds it took."""
    cfg = log.with_suffix(".yaml")
    cfg.write_text(yaml.safe_dump(config))
    out = io.StringIO()
    start = time.process_time()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = vit3d([argv[0], "-c", str(cfg), *argv[1:]])
    seconds = time.process_time() - start
    log.write_text(out.getvalue())
    if code != 0:
        raise SystemExit(f"vit3d {' '.join(argv)} failed with exit code {code}; see {log}")
    return seconds


def _last_metrics(root: Path) -> dict[str, float]:
    """The last logged value of every metric in the newest CSV log under ``root``."""
    version = sorted((root / "logs").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))[-1]
    out: dict[str, float] = {}
    with (version / "metrics.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            out.update({k: float(v) for k, v in row.items() if v not in ("", None)})
    return out


def _labelled_csv(source: Path, out: Path, share: float, seed: int) -> tuple[Path, int]:
    """Copy ``source`` keeping the training rows of a stratified ``share`` (at least one per class) only."""
    with source.open(newline="") as f:
        rows = list(csv.DictReader(f))
    rng = random.Random(seed)
    keep: list[dict[str, str]] = []
    for label in sorted({r["label"] for r in rows}):
        train = [r for r in rows if r["split"] == "train" and r["label"] == label]
        rng.shuffle(train)
        keep += train[:max(1, round(share * len(train)))]
    kept = {r["image"] for r in keep}
    rows = [r for r in rows if r["split"] != "train" or r["image"] in kept]
    for r in rows:  # paths relative to the new CSV's folder
        for key in ("image", "mask"):
            if r.get(key):
                r[key] = str((source.parent / r[key]).resolve())
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out, len(keep)


def run_seed(seed: int, args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    from vit3d.data.synthetic import make_volume_dataset

    data = make_volume_dataset(work / "data", num_samples=args.num_samples, shape=tuple(args.shape),
                               num_classes=args.num_classes, seed=args.data_seed, val_fraction=0.15,
                               test_fraction=0.25)
    run = work / f"seed{seed}"
    run.mkdir(parents=True, exist_ok=True)
    labelled, n_labelled = _labelled_csv(data, run / "labelled.csv", args.labelled, seed)
    results: list[dict[str, Any]] = []

    pretrain_cfg = {
        "seed_everything": seed,
        "trainer": _trainer(run / "pretrain", max_epochs=args.pretrain_epochs, log_every_n_steps=1),
        "model": {"net": NET, "mask_ratio": args.mask_ratio, "decoder_embed_dim": 128, "decoder_depth": 2,
                  "decoder_num_heads": 4, "optimizer": {"class_path": "torch.optim.AdamW",
                                                         "init_args": {"lr": 1.5e-3, "weight_decay": 0.05,
                                                                       "betas": [0.9, 0.95]}},
                  "lr_scheduler": SCHEDULE},
        "data": _data(data, "pipelines.pretrain.PretrainVolumeDataModule", args),
    }
    pre_cpu = _run(["pretrain"], pretrain_cfg, run / "pretrain.log")
    encoder = run / "pretrain" / "encoder.safetensors"
    pre_metrics = _last_metrics(run / "pretrain")
    pre_steps, pre_val = int(pre_metrics["step"]) + 1, pre_metrics.get("val/loss")

    arms: dict[str, str | None] = {"scratch": None, "mae": str(encoder)}
    if args.inflated:
        arms["inflated_2d"] = str(args.inflated)
    for arm, pretrained in arms.items():
        root = run / arm
        fit_cfg = {
            "seed_everything": seed,
            "trainer": _trainer(root, max_steps=args.finetune_steps, max_epochs=-1,
                                check_val_every_n_epoch=args.val_every, log_every_n_steps=1),
            # From a file, the typed Pretrained network takes the architecture from it (the inflated arm's 2D ViT-S
            # is not the demo's encoder); scratch is the demo's preset.
            "model": {"net": NET if pretrained is None else {"class_path": "pipelines.networks.Pretrained",
                                                             "init_args": {"path": pretrained}},
                      "optimizer": OPTIMIZER, "lr_scheduler": SCHEDULE, "label_smoothing": 0.1},
            "data": _data(labelled, "pipelines.datamodules.VolumeDataModule", args),
        }
        fit_cpu = _run(["fit"], fit_cfg, root.with_suffix(".fit.log"))
        steps = int(_last_metrics(root)["step"]) + 1  # logged every step
        best = root / "checkpoints" / "best.ckpt"
        _run(["test", "--ckpt_path", str(best)], fit_cfg, root.with_suffix(".test.log"))
        metrics = _last_metrics(root)
        row = {"arm": arm, "seed": seed, "labelled_train": n_labelled, "test_acc": metrics.get("test/acc"),
               "test_auroc": metrics.get("test/auroc"), "finetune_steps": steps, "finetune_cpu_s": round(fit_cpu, 1)}
        if arm == "mae":
            row.update(pretrain_steps=pre_steps, pretrain_cpu_s=round(pre_cpu, 1), pretrain_val_loss=pre_val)
        results.append(row)
        print(json.dumps(row), flush=True)
    return results


def summarise(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'arm':<12} {'test acc (mean +- std)':>24} {'test AUROC':>18} {'fine-tune steps':>16} "
             f"{'CPU s (fine-tune)':>18} {'CPU s (pretrain)':>17}"]
    for arm in dict.fromkeys(r["arm"] for r in rows):
        sel = [r for r in rows if r["arm"] == arm]

        def stat(key: str, sel: list[dict[str, Any]] = sel) -> str:
            values = [float(r[key]) for r in sel if r.get(key) is not None]
            if not values:
                return "-"
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            return f"{statistics.mean(values):.3f} +- {spread:.3f}"

        pre = stat("pretrain_cpu_s") if arm == "mae" else "-"
        lines.append(f"{arm:<12} {stat('test_acc'):>24} {stat('test_auroc'):>18} "
                     f"{statistics.mean(r['finetune_steps'] for r in sel):>16.0f} {stat('finetune_cpu_s'):>18} "
                     f"{pre:>17}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--num-samples", type=int, default=240, help="synthetic volumes in all splits")
    p.add_argument("--num-classes", type=int, default=2)
    p.add_argument("--shape", type=int, nargs=3, default=[32, 64, 64], help="volume size (D, H, W)")
    p.add_argument("--labelled", type=float, default=0.1, help="share of the training split that keeps labels")
    p.add_argument("--pretrain-epochs", type=int, default=20)
    p.add_argument("--mask-ratio", type=float, default=0.75)
    p.add_argument("--finetune-steps", type=int, default=150, help="the same budget for every arm")
    p.add_argument("--val-every", type=int, default=10, help="validate every N epochs of the labelled set")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic volumes")
    p.add_argument("--inflated", type=Path, default=None,
                   help="adds the inflated-2D arm: a `vit3d inflate` output for 1-channel inputs of --shape, e.g. "
                        "vit3d inflate vit_s16.safetensors --out s16_ct.safetensors --frames 32 --tubelet 8 "
                        "--img-size 64 64 --in-chans 1")
    p.add_argument("--work", type=Path, default=REPO / "outputs" / "bench_pretrain_finetune")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "pretrain_finetune.json")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--smoke", action="store_true", help="tiny sizes to check the script runs (a couple of minutes)")
    args = p.parse_args(argv)
    if args.smoke:
        args.num_samples, args.shape, args.pretrain_epochs, args.finetune_steps = 40, [16, 32, 32], 1, 4
        args.seeds, args.val_every, args.batch_size = args.seeds[:1], 1, 4
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    header = (f"pretrain vs scratch: {args.num_samples} synthetic CT volumes {tuple(args.shape)}, "
              f"{args.labelled:.0%} of the training split labelled, seeds {args.seeds}; pretraining "
              f"{args.pretrain_epochs} epochs (mask {args.mask_ratio}), fine-tuning {args.finetune_steps} steps; "
              f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}")
    print(header, flush=True)
    rows: list[dict[str, Any]] = []
    wall = time.perf_counter()
    for seed in args.seeds:
        rows += run_seed(seed, args, args.work)
    table = summarise(rows)
    print(table)
    print(f"wall time {time.perf_counter() - wall:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"header": header, "args": {k: str(v) for k, v in vars(args).items()},
                                    "rows": rows, "table": table}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
