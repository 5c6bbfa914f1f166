"""Training-step throughput of a vit3d model on random data (CPU or GPU), fp32 and bf16 autocast.

Usage:
    python benchmarks/train_step.py --model vit_small_patch16_3d --input 3x16x112x112 --batch 4 --steps 6
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

import vit3d


def time_steps(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str, steps: int,
               warmup: int = 2) -> list[float]:
    """Seconds per optimiser step (forward, backward, AdamW) for ``steps`` steps after ``warmup``."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    device_type = x.device.type
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device_type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vit_small_patch16_3d")
    p.add_argument("--input", default="3x16x112x112", help="C x spatial sizes, e.g. 3x16x112x112")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--precision", nargs="+", default=["32", "bf16-mixed"])
    args = p.parse_args()
    c, *spatial = (int(v) for v in args.input.split("x"))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    x = torch.randn(args.batch, c, *spatial, device=device)
    y = torch.randint(0, args.num_classes, (args.batch,), device=device)
    for precision in args.precision:
        model = vit3d.create_model(args.model, img_size=tuple(spatial), in_chans=c,
                                   num_classes=args.num_classes).to(device).train()
        times = time_steps(model, x, y, precision, args.steps)
        med = statistics.median(times)
        print(json.dumps({"model": args.model, "input": args.input, "batch": args.batch, "precision": precision,
                          "median_step_s": round(med, 4), "steps_per_s": round(1 / med, 3),
                          "samples_per_s": round(args.batch / med, 2), "device": device,
                          "threads": torch.get_num_threads(), "torch": torch.__version__,
                          "machine": platform.processor() or platform.machine()}))


if __name__ == "__main__":
    main()
