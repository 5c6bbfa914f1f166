"""``make demo``: synthetic CT-like volumes -> train a small 3D ViT on CPU -> predictions CSV (-> attention overlay).

Runs ``vit3d fit`` and ``vit3d predict`` in-process with ``configs/demo_volumes.yaml`` and prints where everything
went. Extra arguments after ``--`` go to ``vit3d fit`` (e.g. ``-- --trainer.max_epochs 3``).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch

from .cli import main as vit3d

REPO = Path(__file__).resolve().parent.parent


def _best_score(ckpt_path: Path) -> float | None:
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    for key, state in ckpt.get("callbacks", {}).items():
        if key.startswith("ModelCheckpoint") and state.get("best_model_score") is not None:
            return float(state["best_model_score"])
    return None


def _test_accuracy(predictions: Path, table: Path) -> tuple[float, int]:
    with table.open(newline="") as f:
        truth = {str((table.parent / r["image"]).resolve()): r["label"] for r in csv.DictReader(f)}
    with predictions.open(newline="") as f:
        rows = list(csv.DictReader(f))
    hits = [truth.get(str(Path(r["path"]).resolve())) == r["label"] for r in rows]
    return (sum(hits) / len(hits) if hits else float("nan")), len(hits)


def _explain(ckpt: Path, volume: Path, out: Path) -> str:
    """Attention overlay through ``vit3d explain`` (its one-line error, if any, is printed by the dispatcher)."""
    rc = vit3d(["explain", "--ckpt", str(ckpt), "--input", str(volume), "--out", str(out)])
    return str(out) if not rc else f"failed (exit code {rc})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/demo", help="output folder (default: outputs/demo)")
    parser.add_argument("--config", action="append", default=None,
                        help="config files, stacked (default: configs/base.yaml configs/demo_volumes.yaml)")
    parser.add_argument("--samples", type=int, default=480, help="synthetic volumes to write")
    parser.add_argument("--classes", type=int, default=2, help="lesion shapes to tell apart (2-5)")
    parser.add_argument("fit_args", nargs="*", help="extra `vit3d fit` arguments (after --)")
    args = parser.parse_args(argv)

    from vit3d.data.synthetic import make_volume_dataset

    out = Path(args.out)
    t0 = time.perf_counter()
    print(f"[1/4] writing {args.samples} synthetic CT volumes (32x64x64, {args.classes} lesion shapes) ...",
          flush=True)
    table = make_volume_dataset(out / "data", num_samples=args.samples, shape=(32, 64, 64),
                                num_classes=args.classes, seed=0)
    t_data = time.perf_counter() - t0

    configs = args.config or [str(REPO / "configs" / "base.yaml"), str(REPO / "configs" / "demo_volumes.yaml")]
    common = [*(a for c in configs for a in ("-c", c)), "--data.init_args.data", str(table),
              "--trainer.default_root_dir", str(out)]
    print("[2/4] training: vit3d fit " + " ".join(common + args.fit_args), flush=True)
    t1 = time.perf_counter()
    rc = vit3d(["fit", *common, *args.fit_args])
    t_fit = time.perf_counter() - t1
    if rc:  # failed, or stopped by a signal (143/130) with last.ckpt saved: no predictions from a partial run
        print(f"vit3d demo: training did not finish (exit status {rc}); not predicting. Resume with: "
              f"python -m pipelines.demo --out {out} -- --ckpt_path last", file=sys.stderr, flush=True)
        return rc
    best = out / "checkpoints" / "best.ckpt"
    val_acc = _best_score(best)
    logs = sorted((out / "logs").glob("version_*"), key=lambda p: p.stat().st_mtime)  # this run's training logs

    predictions = out / "predictions.csv"
    print(f"[3/4] predicting the test split: vit3d predict ... --ckpt_path {best} --predictions.output "
          f"{predictions}", flush=True)
    rc = vit3d(["predict", *common, "--ckpt_path", str(best), "--predictions.output", str(predictions),
                     "--trainer.enable_progress_bar", "false"])
    if rc:
        return rc
    test_acc, n_test = _test_accuracy(predictions, table)

    print("[4/4] attention overlay ...", flush=True)
    with predictions.open(newline="") as f:
        first = next(csv.DictReader(f))["path"]
    overlay = _explain(best, Path(first), out / "explain")
    total = time.perf_counter() - t0

    print("\n" + "=" * 72)
    print("vit3d demo done")
    print(f"  validation accuracy (best checkpoint): {val_acc:.1%}" if val_acc is not None else
          "  validation accuracy: n/a")
    print(f"  test accuracy ({n_test} volumes):        {test_acc:.1%}")
    print(f"  time: {total:.0f} s (data {t_data:.0f} s, training {t_fit:.0f} s)")
    print(f"  dataset:      {table}")
    print(f"  best weights: {best}  (highest val/acc; used for the predictions)")
    print(f"  last state:   {best.with_name('last.ckpt')}  (end of training; resume with --ckpt_path last)")
    if logs:
        print(f"  logs:         {logs[-1]}  (tensorboard --logdir {out / 'logs'})")
    print(f"  predictions:  {predictions}")
    print(f"  attention:    {overlay}")
    print("=" * 72)
    return 0


if __name__ == "__main__":
    sys.exit(main())
