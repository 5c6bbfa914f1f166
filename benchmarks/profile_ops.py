"""Per-op profiles of one training step, side by side: where vit3d's step spends its time against a peer's.

Each model (built by ``benchmarks/peers.py`` at a preset) runs ``--warmup`` steps, then ``--steps`` steps under
``torch.profiler``, the models taking turns step by step; the table lists every op's self CPU time per step (ms)
for each model, biggest first, with matrix products (``mm``, ``addmm``, ``bmm``), attention kernels and the
patch-embedding convolution grouped by name. Time in the same kernels on the same shapes is the same work; what
differs is where one model can gain.

Usage:
    python benchmarks/profile_ops.py --preset long --precision 32 --models vit3d hf-videomae
    python benchmarks/profile_ops.py --preset small --precision bf16-mixed --models vit3d vit-pytorch --rows 20
    python benchmarks/profile_ops.py --preset small --precision 32 --models vit3d hf-videomae --threads 1
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402

from vit3d.bench import autocast, make_optimizer  # noqa: E402

# Ops that are dense matrix arithmetic: GEMMs, the fused attention kernels and the patch-embedding convolution.
# Every model runs them on the same shapes; their sum bounds how fast a step can get without faster kernels.
MATRIX_KERNELS = ("mm", "addmm", "bmm", "scaled_dot_product", "convolution")


def _is_matrix_kernel(op: str) -> bool:
    name = op.removeprefix("aten::")
    return name in ("mm", "addmm", "bmm") or "scaled_dot_product" in name or "convolution" in name


class _Runner:
    """One model with its optimiser and batch, stepping on demand."""

    def __init__(self, name: str, preset: str, precision: str) -> None:
        p = peers.PRESETS[preset]
        torch.manual_seed(0)
        self.model, forward = peers.build_peer(name, p)
        self.forward = forward or (lambda m, x: m(x))
        self.opt = make_optimizer(self.model.parameters())
        self.precision = precision
        self.x = torch.randn(p["batch"], 3, p["frames"], p["size"], p["size"])
        self.y = torch.randint(0, peers.NUM_CLASSES, (p["batch"],))

    def step(self) -> None:
        with autocast("cpu", self.precision):
            loss = F.cross_entropy(self.forward(self.model, self.x).float(), self.y)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


def profile_models(names: list[str], preset: str, precision: str, steps: int,
                   warmup: int) -> dict[str, dict[str, float]]:
    """Self CPU milliseconds per training step of every op each model runs, by op name. The models step in
    turn (A B A B ...), each step under its own profiler, so a slow phase of the machine hits all of them."""
    from torch.profiler import ProfilerActivity, profile

    runners = {}
    for name in names:
        try:
            runners[name] = _Runner(name, preset, precision)
        except peers.PeerUnavailable as err:
            print(f"{name}: skipped ({err})", file=sys.stderr)
    for runner in runners.values():
        for _ in range(warmup):
            runner.step()
    out: dict[str, dict[str, float]] = {name: defaultdict(float) for name in runners}
    for _ in range(steps):
        for name, runner in runners.items():
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                runner.step()
            for event in prof.key_averages():
                if event.self_cpu_time_total > 0:
                    out[name][event.key] += event.self_cpu_time_total / 1e3 / steps
    return {name: dict(ops) for name, ops in out.items()}


def to_markdown(profiles: dict[str, dict[str, float]], rows: int) -> str:
    names = list(profiles)
    ops = sorted({op for prof in profiles.values() for op in prof}, key=lambda op: -max(
        prof.get(op, 0.0) for prof in profiles.values()))
    lines = ["| op | " + " | ".join(f"{n} (ms)" for n in names) + " |", "|---|" + "---:|" * len(names)]
    for op in ops[:rows]:
        lines.append(f"| `{op[:60]}` | " + " | ".join(f"{profiles[n].get(op, 0.0):.1f}" for n in names) + " |")
    rest = ops[rows:]
    lines.append("| (all other ops) | " + " | ".join(f"{sum(profiles[n].get(op, 0.0) for op in rest):.1f}"
                                                  for n in names) + " |")
    lines.append("| **total self CPU** | " + " | ".join(f"**{sum(profiles[n].values()):.1f}**" for n in names) + " |")
    kernels = {n: sum(ms for op, ms in profiles[n].items() if _is_matrix_kernel(op)) for n in names}
    lines.append("| matrix kernels (" + ", ".join(f"`{k}`" for k in MATRIX_KERNELS) + ") | "
                 + " | ".join(f"{kernels[n]:.1f}" for n in names) + " |")
    first, others = names[0], names[1:]
    if others:
        lines.append("")
        for n in others:
            total = sum(profiles[n].values())
            lines.append(f"{first}'s matrix kernels alone (every other op of its step removed) take "
                         f"{kernels[first] / total:.2f}x {n}'s whole step.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="long", choices=list(peers.PRESETS))
    parser.add_argument("--precision", default="32", choices=["32", "bf16-mixed"])
    parser.add_argument("--models", nargs="+", default=["vit3d", "hf-videomae"],
                        choices=list(peers.PEERS + peers.VARIANTS))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    profiles = profile_models(args.models, args.preset, args.precision, args.steps, args.warmup)
    p = peers.PRESETS[args.preset]
    print(f"{args.preset} ({p['frames']}x{p['size']}x{p['size']}, batch {p['batch']}), precision {args.precision}, "
          f"{torch.get_num_threads()} threads; self CPU ms per training step (forward, loss, backward, AdamW)\n")
    print(to_markdown(profiles, args.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
