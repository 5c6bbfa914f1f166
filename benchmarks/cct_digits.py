"""CCT on a small real dataset: scikit-learn's bundled handwritten digits (1,797 8x8 images, 10 classes), on CPU.

The images are upsampled (bilinear) to ``--img-size`` (16 by default), split 80/20 stratified with a fixed seed, and a registered
CCT preset (default ``cct_2_3x2_32_2d``, the paper's smallest CCT, 0.28 M parameters with a 10-class head) is
trained from scratch with AdamW, a warm-up + cosine schedule, label smoothing and small random affine
augmentations (rotation, scale, shift). Nothing is downloaded: the dataset ships inside scikit-learn.

Usage:
    python benchmarks/cct_digits.py                      # the documented run
    python benchmarks/cct_digits.py --epochs 5 --json out.json

Prints one JSON line with test accuracy, wall time and the settings.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import vit3d  # noqa: E402


def load_digits(img_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_train, y_train, x_test, y_test)``; images ``(N, 1, img_size, img_size)`` scaled to [0, 1]."""
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    data = sk_load_digits()
    x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(img_size, img_size), mode="bilinear", align_corners=False)
    y = torch.tensor(data.target, dtype=torch.long)
    idx_train, idx_test = train_test_split(range(len(y)), test_size=0.2, stratify=data.target, random_state=seed)
    return x[idx_train], y[idx_train], x[idx_test], y[idx_test]


def random_affine(x: torch.Tensor, max_deg: float = 12.0, max_scale: float = 0.1,
                  max_shift: float = 0.1) -> torch.Tensor:
    """Per-sample random rotation, scale and shift (shift as a fraction of the half-width), zero padded."""
    b = x.shape[0]
    angle = (torch.rand(b) * 2 - 1) * math.radians(max_deg)
    scale = 1 + (torch.rand(b) * 2 - 1) * max_scale
    shift = (torch.rand(b, 2) * 2 - 1) * max_shift
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> float:
    model.eval()
    correct = sum(int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum()) for i in range(0, len(y), batch))
    return correct / len(y)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="cct_2_3x2_32_2d", help="a registered CCT preset (vit3d.list_models('cct*'))")
    p.add_argument("--img-size", type=int, default=16, help="side the 8x8 digits are upsampled to")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-epochs", type=int, default=2)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    start, cpu_start = time.perf_counter(), time.process_time()
    x_train, y_train, x_test, y_test = load_digits(args.img_size, args.seed)
    model = vit3d.create_model(args.model, in_chans=1, num_classes=10, img_size=args.img_size)
    params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "pos_embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1 or "pos_embed" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    steps_per_epoch = math.ceil(len(y_train) / args.batch_size)
    total, warmup = args.epochs * steps_per_epoch, args.warmup_epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup))))

    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(y_train))
        running = 0.0
        for i in range(0, len(order), args.batch_size):
            idx = order[i:i + args.batch_size]
            loss = F.cross_entropy(model(random_affine(x_train[idx])), y_train[idx],
                                   label_smoothing=args.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item() * len(idx)
        if epoch % 5 == 4 or epoch == args.epochs - 1:
            print(f"epoch {epoch + 1:3d}  train loss {running / len(y_train):.4f}  "
                  f"test acc {accuracy(model, x_test, y_test):.4f}  {time.perf_counter() - start:6.1f}s",
                  file=sys.stderr, flush=True)

    result = {
        "model": args.model, "img_size": args.img_size, "params": params, "epochs": args.epochs,
        "train_images": len(y_train), "test_images": len(y_test),
        "test_accuracy": round(accuracy(model, x_test, y_test), 4),
        "seconds": round(time.perf_counter() - start, 1),
        "cpu_seconds": round(time.process_time() - cpu_start, 1),  # all threads; ~2x wall on 2 idle cores
        "threads": args.threads, "seed": args.seed,
        "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
    }
    print(json.dumps(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
