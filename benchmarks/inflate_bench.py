"""Time and peak memory of ``vit3d inflate`` on a ViT-B/16-sized 2D checkpoint, on CPU.

Writes a random timm-layout ViT-B/16 checkpoint (86.6 M parameters, ~346 MB fp32) to a temp dir, then, in a
fresh subprocess per run, times ``vit3d.weights.inflate_file`` (load_2d + inflate + save safetensors) to 16
frames with tubelets of 2, and reads the peak resident memory (``ru_maxrss``) above the resident memory just
before the call (after ``import torch, vit3d``), reported as a multiple of the checkpoint's size.

Usage:
    .venv/bin/python benchmarks/inflate_bench.py [--suffix .safetensors|.pth] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import torch, vit3d
from vit3d.weights import inflate_file

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20

src, out = sys.argv[1], sys.argv[2]
before = rss_mb()
t0 = time.perf_counter()
inflate_file(src, out, frames=16, tubelet=2, method=sys.argv[3])
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "rss_before_mb": before, "peak_mb": peak}))
"""


def write_checkpoint(path: Path) -> int:
    """A random ViT-B/16 (224, 1000 classes) state dict in timm names; returns its size in bytes."""
    import torch
    from safetensors.torch import save_file

    import vit3d

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in vit3d.create_model("vit_base_patch16_2d").state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.randn(s, generator=gen) * 0.02 for k, s in shapes.items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path.stat().st_size


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suffix", choices=(".safetensors", ".pth"), default=".safetensors")
    p.add_argument("--method", choices=("central", "mean"), default="central")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / f"vit_b16{args.suffix}"
        size_mb = write_checkpoint(src) / 2**20
        runs = []
        for i in range(args.repeats):
            out = Path(tmp) / f"out{i}.safetensors"
            res = subprocess.run([sys.executable, "-c", CHILD, str(src), str(out), args.method], check=True,
                                 capture_output=True, text=True)
            runs.append(json.loads(res.stdout.strip().splitlines()[-1]))
            out_mb = out.stat().st_size / 2**20
    best = min(runs, key=lambda r: r["seconds"])
    extra = [r["peak_mb"] - r["rss_before_mb"] for r in runs]
    print(f"checkpoint: ViT-B/16 timm layout, {args.suffix}, {size_mb:.0f} MiB; output {out_mb:.0f} MiB "
          f"(16 frames, tubelet 2, {args.method})")
    print("| run | seconds | RSS before (MiB) | peak RSS (MiB) | peak above before (MiB) | x checkpoint |")
    print("|---|---|---|---|---|---|")
    for i, (r, e) in enumerate(zip(runs, extra, strict=True)):
        print(f"| {i} | {r['seconds']:.2f} | {r['rss_before_mb']:.0f} | {r['peak_mb']:.0f} | {e:.0f} | "
              f"{e / size_mb:.2f} |")
    print(f"best: {best['seconds']:.2f} s; worst peak above baseline: {max(extra):.0f} MiB "
          f"= {max(extra) / size_mb:.2f}x the checkpoint")
    return 0


if __name__ == "__main__":
    sys.exit(main())
