"""The measurements behind vit3d's speed paths and levers, as A/B runs on this machine.

1. Attention: SDPA against explicit matmul-softmax-matmul (bf16 softmax), forward + backward and forward only,
   per sequence length and dtype; this is what ``vit3d.layers.attention.CPU_BF16_EXPLICIT_MAX_TOKENS`` rests on.
2. Patch embedding: ``ConvNd`` against patchify + ``F.linear`` (what ``PatchEmbed.project`` does on CPU).
3. Activation checkpointing: peak memory per sample with and without ``set_grad_checkpointing()`` (the slope of
   peak memory over batch size), hence the largest batch that fits a fixed memory budget, and the time cost.
4. ``patch_drop_rate``: step time with 0, 0.25 and 0.5 of the patch tokens dropped.
5. Recomputing norm and GELU outputs and the mid-block residual stream in the backward pass
   (``set_recompute_norm_act``, on by default): step time (the same model switched between the two paths,
   interleaved) and peak memory, per preset and precision.

A and B are interleaved and the median of ``--repeats`` is kept; ``--cpu-time`` times CPU seconds of one thread
instead of wall seconds, which stays comparable when other processes load the machine.

Usage:
    python benchmarks/levers.py --json benchmarks/results/levers.json --markdown benchmarks/results/levers.md
"""

# The A/B closures are called inside the loop iteration that defines them, so late binding is harmless.
# ruff: noqa: B023
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import vit3d
from vit3d.bench import benchmark_model, machine_info


def _ab(fns: dict[str, Callable[[], None]], repeats: int, clock: Callable[[], float]) -> dict[str, float]:
    """Median seconds of each zero-argument function, interleaved, after one untimed round."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(repeats + 1):
        for name, fn in fns.items():
            t0 = clock()
            fn()
            if r:
                times[name].append(clock() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def attention_ab(lengths: list[int], repeats: int, clock: Callable[[], float]) -> list[dict[str, Any]]:
    B, H, d = 4, 6, 64
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        for n in lengths:
            base = torch.randn(B, n, 3 * H * d, dtype=dtype, requires_grad=True)
            grad = torch.randn(B, H, n, d, dtype=dtype)

            def split():
                return base.reshape(B, n, 3, H, d).permute(2, 0, 3, 1, 4).unbind(0)

            def sdpa():
                q, k, v = split()
                return F.scaled_dot_product_attention(q, k, v, scale=d ** -0.5)

            def explicit():
                q, k, v = split()
                a = q @ k.transpose(-2, -1)
                a.mul_(d ** -0.5)
                return a.softmax(-1) @ v

            def train(fn):
                def run():
                    fn().backward(grad)
                    base.grad = None
                return run

            def infer(fn):
                def run():
                    with torch.no_grad():
                        fn()
                return run

            t = _ab({"sdpa_train": train(sdpa), "explicit_train": train(explicit), "sdpa_infer": infer(sdpa),
                     "explicit_infer": infer(explicit)}, repeats, clock)
            rows.append({"dtype": str(dtype).replace("torch.", ""), "tokens": n, **{k: round(v * 1e3, 2)
                                                                                   for k, v in t.items()}})
            print("attention", rows[-1], file=sys.stderr, flush=True)
    return rows


def patch_embed_ab(repeats: int, clock: Callable[[], float]) -> list[dict[str, Any]]:
    from vit3d.layers.patch_embed import patchify

    rows = []
    for batch, size in ((4, 112), (2, 224)):
        for precision in ("32", "bf16-mixed"):
            x = torch.randn(batch, 3, 16, size, size)
            w = torch.randn(384, 3, 2, 16, 16, requires_grad=True)
            b = torch.zeros(384, requires_grad=True)
            bf16 = precision == "bf16-mixed"

            def conv():
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    out = F.conv3d(x, w, b, stride=(2, 16, 16)).flatten(2).transpose(1, 2)
                out.float().sum().backward()

            def linear():
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    xx = x.to(torch.bfloat16) if bf16 else x
                    out = F.linear(patchify(xx, (2, 16, 16)), w.flatten(1), b)
                out.float().sum().backward()

            t = _ab({"conv3d": conv, "patchify_linear": linear}, repeats, clock)
            rows.append({"input": f"{batch}x3x16x{size}x{size}", "precision": precision,
                         **{k: round(v * 1e3, 2) for k, v in t.items()}})
            print("patch_embed", rows[-1], file=sys.stderr, flush=True)
    return rows


def checkpointing(steps: int) -> list[dict[str, Any]]:
    """Peak memory at batch 4 and 8 with and without checkpointing; per-sample slope and max-batch ratio.

    Batches large enough that activations set the peak in both modes: at batch 2 a checkpointed step's peak can
    sit elsewhere (AdamW, the attention kernel's per-thread buffers), and the slope between 2 and 4 then
    understates the per-sample cost (it read 3.5 MiB/sample for 8-9 measured between 4 and 8)."""
    rows = []
    for precision in ("32", "bf16-mixed"):
        out: dict[str, Any] = {"model": "vit_small_patch16_3d depth 4, 3x16x112x112", "precision": precision}
        for ckpt in (False, True):
            mems, times = {}, {}
            for batch in (4, 8):
                def build(ckpt=ckpt):
                    m = vit3d.create_model("vit_small_patch16_3d", img_size=(16, 112, 112), depth=4, num_classes=10)
                    m.set_grad_checkpointing(ckpt)
                    return m

                r = benchmark_model(build, batch=batch, precision=precision, steps=steps, warmup=2,
                                    measure_peak=False)
                mems[batch], times[batch] = r.peak_memory_bytes, r.median_step_s
            slope = (mems[8] - mems[4]) / 4
            key = "ckpt" if ckpt else "plain"
            out[f"{key}_mib_per_sample"] = round(slope / 2 ** 20, 1)
            out[f"{key}_fixed_mib"] = round((mems[4] - 4 * slope) / 2 ** 20, 1)
            out[f"{key}_step_s_b4"] = round(times[4], 4)
        out["max_batch_ratio"] = round(out["plain_mib_per_sample"] / out["ckpt_mib_per_sample"], 2)
        out["time_ratio"] = round(out["ckpt_step_s_b4"] / out["plain_step_s_b4"], 2)
        rows.append(out)
        print("checkpointing", out, file=sys.stderr, flush=True)
    return rows


def patch_drop(steps: int) -> list[dict[str, Any]]:
    rows = []
    for precision in ("32", "bf16-mixed"):
        for rate in (0.0, 0.25, 0.5):
            def build(rate=rate):
                return vit3d.create_model("vit_small_patch16_3d", img_size=(16, 112, 112), depth=4, num_classes=10,
                                          patch_drop_rate=rate)

            r = benchmark_model(build, batch=4, precision=precision, steps=steps, warmup=2, measure_peak=False)
            rows.append({"precision": precision, "patch_drop_rate": rate, "step_s": round(r.median_step_s, 4),
                         "peak_mib": round(r.peak_memory_bytes / 2 ** 20, 1)})
            print("patch_drop", rows[-1], file=sys.stderr, flush=True)
    return rows


PRESETS = {"small": dict(img=(16, 112, 112), depth=4, batch=4), "long": dict(img=(16, 224, 224), depth=2, batch=2)}


def recompute(repeats: int, clock: Callable[[], float]) -> list[dict[str, Any]]:
    """Step time and peak memory of ``vit_small_patch16_3d`` with the norm/GELU/residual recomputation on and off."""
    from vit3d.bench import MemoryMeter, autocast, make_optimizer

    rows = []
    for preset, p in PRESETS.items():
        for precision in ("32", "bf16-mixed"):
            torch.manual_seed(0)
            model = vit3d.create_model("vit_small_patch16_3d", img_size=p["img"], patch_size=(2, 16, 16),
                                       depth=p["depth"], num_classes=10)
            opt = make_optimizer(model.parameters())
            x, y = torch.randn(p["batch"], 3, *p["img"]), torch.randint(0, 10, (p["batch"],))

            def step(enable: bool) -> None:
                model.set_recompute_norm_act(enable)
                with autocast("cpu", precision):
                    loss = F.cross_entropy(model(x), y)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

            peaks = {}
            for enable in (False, True):
                step(enable)  # AdamW state exists before the measured step, as in every later step
                with MemoryMeter("cpu") as meter:
                    step(enable)
                peaks[enable] = meter.peak
            times = _ab({"plain": lambda: step(False), "recompute": lambda: step(True)}, repeats, clock)
            rows.append({"preset": preset, "precision": precision, "plain_s": round(times["plain"], 4),
                         "recompute_s": round(times["recompute"], 4),
                         "time_ratio": round(times["recompute"] / times["plain"], 3),
                         "plain_mib": round(peaks[False] / 2 ** 20, 1), "recompute_mib": round(peaks[True] / 2 ** 20, 1),
                         "memory_ratio": round(peaks[True] / peaks[False], 3)})
            print("recompute", rows[-1], file=sys.stderr, flush=True)
    return rows


def to_markdown(report: dict[str, Any]) -> str:
    unit = "CPU ms, 1 thread" if report["cpu_time"] else "wall ms"
    out = [f"Attention, batch 4, 6 heads of 64 ({unit}; train = forward + backward)\n",
           "| dtype | tokens | SDPA train | explicit train | SDPA infer | explicit infer |", "|---|---:|---:|---:|---:|---:|"]
    out += [f"| {r['dtype']} | {r['tokens']} | {r['sdpa_train']} | {r['explicit_train']} | {r['sdpa_infer']} | "
            f"{r['explicit_infer']} |" for r in report["attention"]]
    out += ["", f"Patch embedding 2x16x16 -> 384, forward + backward ({unit})\n",
            "| input | precision | Conv3d | patchify + linear |", "|---|---|---:|---:|"]
    out += [f"| {r['input']} | {r['precision']} | {r['conv3d']} | {r['patchify_linear']} |"
            for r in report["patch_embed"]]
    if report.get("checkpointing"):
        out += ["", "Activation checkpointing (peak memory = fixed + per-sample x batch, from batches 4 and 8)\n",
                "| precision | MiB/sample plain | MiB/sample ckpt | max batch ratio | step time ratio |",
                "|---|---:|---:|---:|---:|"]
        out += [f"| {r['precision']} | {r['plain_mib_per_sample']} | {r['ckpt_mib_per_sample']} | "
                f"{r['max_batch_ratio']}x | {r['time_ratio']}x |" for r in report["checkpointing"]]
    if report.get("patch_drop"):
        out += ["", "patch_drop_rate (small preset, batch 4, wall s per step)\n",
                "| precision | patch_drop_rate | step (s) | peak MiB |", "|---|---:|---:|---:|"]
        out += [f"| {r['precision']} | {r['patch_drop_rate']} | {r['step_s']} | {r['peak_mib']} |"
                for r in report["patch_drop"]]
    if report.get("recompute"):
        out += ["", f"Recomputing norm and GELU outputs and the mid-block residual in the backward pass "
                f"(vit_small_patch16_3d; step in {unit} "
                "without the profiler; peak memory of one training step, AdamW state included, input excluded)\n",
                "| preset | precision | step plain | step recompute | time ratio | peak MiB plain | "
                "peak MiB recompute | memory ratio |", "|---|---|---:|---:|---:|---:|---:|---:|"]
        out += [f"| {r['preset']} | {r['precision']} | {1000 * r['plain_s']:.0f} | {1000 * r['recompute_s']:.0f} | "
                f"{r['time_ratio']} | {r['plain_mib']} | {r['recompute_mib']} | {r['memory_ratio']} |"
                for r in report["recompute"]]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, nargs="+", default=[197, 393, 785, 1025, 1569])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--cpu-time", action="store_true", help="one thread, CPU seconds (robust to other load)")
    p.add_argument("--skip-models", action="store_true", help="only the kernel A/B runs")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--markdown", type=Path, default=None)
    args = p.parse_args(argv)
    threads = torch.get_num_threads()
    clock = time.perf_counter
    if args.cpu_time:
        torch.set_num_threads(1)
        clock = time.process_time
    torch.manual_seed(0)
    report: dict[str, Any] = {"machine": machine_info("cpu"), "cpu_time": args.cpu_time,
                              "attention": attention_ab(args.tokens, args.repeats, clock),
                              "patch_embed": patch_embed_ab(args.repeats, clock),
                              "recompute": recompute(args.repeats, clock)}
    torch.set_num_threads(threads)
    if not args.skip_models:
        report["checkpointing"] = checkpointing(args.steps)
        report["patch_drop"] = patch_drop(args.steps)
    table = to_markdown(report)
    print(table)
    for path, text in ((args.json, json.dumps(report, indent=1) + "\n"), (args.markdown, table)):
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
