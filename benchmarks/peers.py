"""vit3d against its peers on the same work: training-step time and peak memory, each model in its own process.

Peers (all optional; a missing one is reported as skipped, never installed or downloaded here):

- ``vit3d``: ``vit_small_patch16_3d`` at the preset's depth (its defaults: learned positions, class token).
- ``vit3d-plain`` (on request, not in the default list): ``vit3d`` with ``set_recompute_norm_act(False)``, its
  blocks saving what plain modules save; the cost of recomputation where elementwise ops are dear (GPUs).
- ``vit3d-videomae``: the same in HF VideoMAE's layout (fixed sin-cos table over the token index, no class
  token, mean pooling with ``fc_norm``), the like-for-like row for ``hf-videomae``.
- ``vit-pytorch``: lucidrains' ``vit_pytorch/vit_3d.py`` ``ViT``. Its package ``__init__`` imports torchvision, so
  the module file is loaded directly (from the installed package, ``--vit-pytorch-file`` or
  ``$VIT_PYTORCH_FILE``). Install it without torchvision: ``pip install --no-deps vit-pytorch``.
- ``monai`` / ``monai-sdpa``: ``monai.networks.nets.ViT`` (``spatial_dims=3``, ``proj_type='conv'``) with the
  explicit einsum attention, and with ``use_flash_attention=True`` set on its ``SABlock`` s (torch SDPA).
- ``hf-videomae``: ``transformers.VideoMAEForVideoClassification`` from a ``VideoMAEConfig`` with
  ``attn_implementation="sdpa"``; it takes clips as ``(B, T, C, H, W)``, so its input is a transposed view.

Each (preset, precision) runs ``--rounds`` rounds; a round runs every peer once, each in a fresh process, in an
order rotated from round to round, and a peer's figure is the median of its rounds (its spread is reported).
Every peer is built at the same width, depth, heads, MLP width, tubelet and input, and timed by the same loop
(:func:`vit3d.bench.time_train_steps`: forward, cross-entropy, backward, AdamW; median of ``--steps``). FLOP/s use
the same analytic count for all (:func:`vit3d.bench.vit_flops`). Memory is the process's peak resident set above
its resident size before the model is built (:class:`vit3d.bench.MemoryMeter`).

Usage:
    python benchmarks/peers.py --preset small long --precision 32 bf16-mixed --steps 6 \
        --json benchmarks/results/peers.json --markdown benchmarks/results/peers.md
    python benchmarks/peers.py --device cuda --preset base --precision bf16-mixed [--compile]   # GPU target
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "small": dict(frames=16, size=112, tubelet=2, patch=16, dim=384, depth=4, heads=6, mlp=1536, batch=4),
    "long": dict(frames=16, size=224, tubelet=2, patch=16, dim=384, depth=2, heads=6, mlp=1536, batch=2),
    # the GPU target: ViT-B/16 on 16x224x224 clips (run with --device cuda)
    "base": dict(frames=16, size=224, tubelet=2, patch=16, dim=768, depth=12, heads=12, mlp=3072, batch=8),
}
PEERS = ("vit3d", "vit3d-videomae", "vit-pytorch", "monai", "monai-sdpa", "hf-videomae")
VARIANTS = ("vit3d-plain",)  # vit3d rows for comparison with the default, run only when asked for
NUM_CLASSES = 10


class PeerUnavailable(RuntimeError):
    """The peer's package is not installed here (reported as skipped)."""


def _vit_pytorch_module(path: str | None) -> Any:
    """Load ``vit_pytorch/vit_3d.py`` as a standalone module, without running the package ``__init__``."""
    candidates = [path, os.environ.get("VIT_PYTORCH_FILE")]
    spec = importlib.util.find_spec("vit_pytorch")  # locates the package without importing it
    if spec is not None and spec.submodule_search_locations:
        candidates += [str(Path(loc) / "vit_3d.py") for loc in spec.submodule_search_locations]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            mod_spec = importlib.util.spec_from_file_location("_peer_vit_pytorch_vit_3d", candidate)
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
            return module
    raise PeerUnavailable("vit-pytorch not found: `pip install --no-deps vit-pytorch` or pass --vit-pytorch-file")


def build_peer(peer: str, p: dict[str, Any], vit_pytorch_file: str | None = None):
    """``(model, forward)`` for ``peer`` at preset ``p``; ``forward(model, x)`` maps ``(B, C, T, H, W)`` to logits."""
    img = (p["frames"], p["size"], p["size"])
    tub = (p["tubelet"], p["patch"], p["patch"])
    if peer in ("vit3d", "vit3d-videomae", "vit3d-plain"):
        import vit3d

        layout = dict(pos_embed="sincos_seq", class_token=False, global_pool="avg", fc_norm=True) \
            if peer == "vit3d-videomae" else {}
        model = vit3d.create_model("vit_small_patch16_3d", img_size=img, patch_size=tub, embed_dim=p["dim"],
                                   depth=p["depth"], num_heads=p["heads"], mlp_ratio=p["mlp"] / p["dim"],
                                   num_classes=NUM_CLASSES, **layout)
        if peer == "vit3d-plain":
            model.set_recompute_norm_act(False)
        return model, None
    if peer == "vit-pytorch":
        module = _vit_pytorch_module(vit_pytorch_file)
        model = module.ViT(image_size=p["size"], image_patch_size=p["patch"], frames=p["frames"],
                           frame_patch_size=p["tubelet"], num_classes=NUM_CLASSES, dim=p["dim"], depth=p["depth"],
                           heads=p["heads"], mlp_dim=p["mlp"], dim_head=p["dim"] // p["heads"], channels=3)
        return model, None
    if peer in ("monai", "monai-sdpa"):
        try:
            from monai.networks.blocks.selfattention import SABlock
            from monai.networks.nets import ViT
        except ImportError as err:
            raise PeerUnavailable(f"monai does not import: {err}") from err
        model = ViT(in_channels=3, img_size=img, patch_size=tub, hidden_size=p["dim"], mlp_dim=p["mlp"],
                    num_layers=p["depth"], num_heads=p["heads"], proj_type="conv", classification=True,
                    num_classes=NUM_CLASSES, spatial_dims=3, qkv_bias=True)
        # MONAI 1.6's ViT does not pass use_flash_attention through; its SABlock reads the flag at forward time.
        for m in model.modules():
            if isinstance(m, SABlock):
                m.use_flash_attention = peer == "monai-sdpa"
        return model, lambda m, x: m(x)[0]
    if peer == "hf-videomae":
        try:
            from transformers import VideoMAEConfig, VideoMAEForVideoClassification
        except ImportError as err:
            raise PeerUnavailable(f"transformers does not import: {err}") from err
        cfg = VideoMAEConfig(image_size=p["size"], patch_size=p["patch"], num_channels=3, num_frames=p["frames"],
                             tubelet_size=p["tubelet"], hidden_size=p["dim"], num_hidden_layers=p["depth"],
                             num_attention_heads=p["heads"], intermediate_size=p["mlp"], num_labels=NUM_CLASSES)
        model = VideoMAEForVideoClassification._from_config(cfg, attn_implementation="sdpa")
        return model, lambda m, x: m(pixel_values=x.transpose(1, 2)).logits
    raise ValueError(f"unknown peer {peer!r}; choose from {', '.join(PEERS + VARIANTS)}")


def run_worker(peer: str, preset: str, precision: str, steps: int, warmup: int,
               vit_pytorch_file: str | None, cpu_time: bool = False, device: str = "cpu",
               compile: bool = False) -> dict[str, Any]:
    """Benchmark one peer in this process and return its result as a dict."""
    import torch

    from vit3d.bench import benchmark_model, vit_flops

    if cpu_time:
        torch.set_num_threads(1)
    p = PRESETS[preset]
    torch.manual_seed(0)
    patches = (p["frames"] // p["tubelet"]) * (p["size"] // p["patch"]) ** 2
    flops = vit_flops(batch=p["batch"], num_patches=patches, patch_dim=3 * p["tubelet"] * p["patch"] ** 2,
                      embed_dim=p["dim"], depth=p["depth"], mlp_hidden=p["mlp"], num_classes=NUM_CLASSES)
    holder: dict[str, Any] = {}

    def factory():
        model, forward = build_peer(peer, p, vit_pytorch_file)
        holder["forward"] = forward
        return model

    # Built inside the memory meter, so parameters and optimiser state count for every peer alike.
    result = benchmark_model(factory, batch=p["batch"], precision=precision,
                             input_shape=(3, (p["frames"], p["size"], p["size"])), steps=steps, warmup=warmup,
                             num_classes=NUM_CLASSES, flops=flops, name=peer, measure_peak=False,
                             device=device, compile=compile,
                             forward=lambda m, x: (holder["forward"] or (lambda mm, xx: mm(xx)))(m, x),
                             clock=time.process_time if cpu_time else time.perf_counter)
    out = result.to_dict()
    out["preset"] = preset
    out["clock"] = "CPU seconds, 1 thread" if cpu_time else "wall seconds"
    return out


def _run_one(args: argparse.Namespace, peer: str, preset: str, precision: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", peer, "--preset", preset, "--precision", precision,
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--device", args.device]
    cmd += (["--cpu-time"] if args.cpu_time else []) + (["--compile"] if args.compile else [])
    if args.vit_pytorch_file:
        cmd += ["--vit-pytorch-file", args.vit_pytorch_file]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        reason = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"model": peer, "preset": preset, "precision": precision, "skipped": reason}
    out = json.loads(lines[-1])
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    return out


def _median_of_rounds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row per peer: the median round's figures, with every round's step time kept."""
    done = [r for r in runs if "skipped" not in r]
    if not done:
        return runs[0]
    done.sort(key=lambda r: r["median_step_s"])
    row = dict(done[(len(done) - 1) // 2])  # the lower median: a real round, not an average of two
    row["round_steps_s"] = [round(r["median_step_s"], 4) for r in runs if "skipped" not in r]
    return row


def _peak(precision: str, device: str = "cpu", cpu_time: bool = False) -> float:
    from vit3d.bench import matmul_peak

    return matmul_peak(device, precision, clock=time.process_time if cpu_time else time.perf_counter)


def to_markdown(rows: list[dict[str, Any]], peaks: dict[str, float]) -> str:
    """One table per preset and precision: step time, samples/s, GFLOP/s, % of matmul peak, memory, ratios."""
    out = []
    keys = sorted({(r["preset"], r["precision"]) for r in rows}, key=lambda k: (list(PRESETS).index(k[0]), k[1]))
    for preset, precision in keys:
        group = [r for r in rows if r["preset"] == preset and r["precision"] == precision]
        ref = next((r for r in group if r["model"] == "vit3d" and "skipped" not in r), None)
        p = PRESETS[preset]
        peak = peaks.get(precision, float("nan"))
        clock = next((r["clock"] for r in group if "clock" in r), "wall seconds")
        out.append(f"**{preset}** ({p['frames']}x{p['size']}x{p['size']}, tubelet {p['tubelet']}x{p['patch']}x"
                   f"{p['patch']}, width {p['dim']}, {p['depth']} layers, {p['heads']} heads, batch {p['batch']}), "
                   f"precision `{precision}`, matmul peak {peak / 1e9:.0f} GFLOP/s; step in {clock}\n")
        out.append("| model | step (s) | rounds (s) | samples/s | GFLOP/s | % of peak | peak memory (MiB) | "
                   "step / vit3d | memory / vit3d |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in group:
            if "skipped" in r:
                out.append(f"| {r['model']} | skipped: {r['skipped'][:80]} | | | | | | | |")
                continue
            t, mem = r["median_step_s"], r["peak_memory_mib"]
            rt = f"{t / ref['median_step_s']:.2f}" if ref else "n/a"
            rm = f"{mem / ref['peak_memory_mib']:.2f}" if ref else "n/a"
            gf = r["flops_per_step"] / t / 1e9
            spread = r.get("round_steps_s", [t])
            out.append(f"| {r['model']} | {t:.3f} | {min(spread):.3f}-{max(spread):.3f} | {r['samples_per_s']:.1f} | "
                       f"{gf:.0f} | {100 * gf * 1e9 / peak:.0f}% "
                       f"| {mem:.0f} | {rt} | {rm} |")
        out.append("")
    return "\n".join(out)


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in ("torch", "monai", "transformers", "einops", "vit-pytorch"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "module file " + os.environ["VIT_PYTORCH_FILE"] if dist == "vit-pytorch" and os.environ.get(
                "VIT_PYTORCH_FILE") else "not installed"
    return out


def _check(ok: bool | None) -> str:
    return "not measured" if ok is None else ("**met**" if ok else "**not met**")


def summarize(out_dir: Path) -> str:
    """All tables of a ``run_all.sh`` run in ``out_dir``, and which performance targets are met."""
    peers = json.loads((out_dir / "peers.json").read_text())
    bench = [json.loads(ln) for ln in (out_dir / "bench.jsonl").read_text().splitlines() if ln.strip()]
    levers = json.loads((out_dir / "levers.json").read_text())
    m = peers["machine"]
    lines = [f"Machine: {m.get('cpu', m.get('gpu'))}, {m['threads']} threads, device `{m['device']}`, "
             f"Python {m['python']}; " + ", ".join(f"{k} {v}" for k, v in _versions().items()) + ".",
             "Command: `benchmarks/run_all.sh` (each model in its own process; step = forward + cross-entropy + "
             "backward + fused AdamW, median of the timed steps). 1-minute load average when the peers ran: "
             + ", ".join(sorted({str(r.get("machine", {}).get("load_avg_1m", "?")) for r in peers["results"]})) + ".",
             ""]
    lines += ["### `vit3d bench` (vit_small_patch16_3d at the preset's depth; peak measured in the same run)", "",
              "| preset | precision | compile | step (s) | samples/s | GFLOP/s | matmul peak GFLOP/s | % of peak | "
              "peak memory (MiB) |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in bench:
        lines.append(f"| {r['preset']} | {r['precision']} | {r['compile']} | {r['median_step_s']:.3f} | "
                     f"{r['samples_per_s']:.1f} | {r['achieved_gflops']:.0f} | {r['matmul_peak_gflops']:.0f} | "
                     f"{100 * r['peak_fraction']:.0f}% | {r['peak_memory_mib']:.0f} |")
    lines += ["", "### Peers (same width, depth, heads, MLP, tubelet, input and batch)", "",
              (out_dir / "peers.md").read_text()]
    if (out_dir / "profiles.md").exists():
        lines += ["### Per-op profiles, side by side (`benchmarks/profile_ops.py`)", "",
                  (out_dir / "profiles.md").read_text()]
    lines += ["### Levers", "", (out_dir / "levers.md").read_text(),
              "### Targets (CPU, this machine)", ""]
    rows = [r for r in peers["results"] if "skipped" not in r]
    for preset in PRESETS:
        for precision in ("32", "bf16-mixed"):
            group = {r["model"]: r for r in rows if r["preset"] == preset and r["precision"] == precision}
            ours = group.get("vit3d")
            others = [r for name, r in group.items() if not name.startswith("vit3d")]
            if not ours or not others:
                continue
            best = min(others, key=lambda r: r["median_step_s"])
            ratio = ours["median_step_s"] / best["median_step_s"]
            lines.append(f"- {preset}/{precision} step time: vit3d {ours['median_step_s']:.3f} s vs best peer "
                         f"{best['model']} {best['median_step_s']:.3f} s ({ratio:.2f}x, target <= 0.90x): "
                         f"{_check(ratio <= 0.9)}")
            if preset == "long":
                low = min(others, key=lambda r: r["peak_memory_mib"])
                ratio = ours["peak_memory_mib"] / low["peak_memory_mib"]
                lines.append(f"- long/{precision} peak memory: vit3d {ours['peak_memory_mib']:.0f} MiB vs lowest peer "
                             f"{low['model']} {low['peak_memory_mib']:.0f} MiB ({ratio:.2f}x, target <= 0.80x): "
                             f"{_check(ratio <= 0.8)}")
                twin, hf = group.get("vit3d-videomae"), group.get("hf-videomae")
                if twin and hf:
                    ratio = twin["peak_memory_mib"] / hf["peak_memory_mib"]
                    lines.append(f"  - like for like, VideoMAE's layout: vit3d {twin['peak_memory_mib']:.0f} MiB vs "
                                 f"hf-videomae {hf['peak_memory_mib']:.0f} MiB ({ratio:.2f}x): {_check(ratio <= 0.8)}")
    for r in (b for b in bench if b["compile"]):
        others = [o for o in rows if o["preset"] == r["preset"] and o["precision"] == r["precision"]
                  and not o["model"].startswith("vit3d")]
        if others:
            best = min(others, key=lambda o: o["median_step_s"])
            ratio = r["median_step_s"] / best["median_step_s"]
            lines.append(f"- {r['preset']}/{r['precision']} step time with `torch.compile` (`vit3d bench --compile`; "
                         f"`model.compile: true` in training): {r['median_step_s']:.3f} s vs best peer, eager, "
                         f"{best['model']} {best['median_step_s']:.3f} s ({ratio:.2f}x, target <= 0.90x): "
                         f"{_check(ratio <= 0.9)}")
    for r in bench:
        if r["preset"] == "small" and r["precision"] == "bf16-mixed":
            lines.append(f"- small/bf16 fraction of the bf16 matmul peak (compile={r['compile']}): "
                         f"{100 * r['peak_fraction']:.0f}% (target >= 70%): {_check(r['peak_fraction'] >= 0.7)}")
    for r in levers.get("checkpointing", []):
        lines.append(f"- activation checkpointing, {r['precision']}: max batch at fixed memory {r['max_batch_ratio']}x "
                     f"(target >= 2x): {_check(r['max_batch_ratio'] >= 2)}; step time {r['time_ratio']}x")
    lines.append("- GPU targets (ViT-B/16, 16x224x224, bf16: >= 45% of the measured bf16 matmul peak, >= 1.2x the best "
                 "peer, eager and torch.compile): not measured (no GPU on this machine)")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", nargs="+", default=["small", "long"], choices=list(PRESETS))
    parser.add_argument("--precision", nargs="+", default=["32", "bf16-mixed"], choices=["32", "bf16-mixed"])
    parser.add_argument("--peers", nargs="+", default=list(PEERS), choices=list(PEERS + VARIANTS))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per preset and precision")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--compile", action="store_true", help="torch.compile every model")
    parser.add_argument("--cpu-time", action="store_true",
                        help="one thread, CPU seconds per step: a ranking that survives other load on the machine")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per peer process")
    parser.add_argument("--vit-pytorch-file", default=None, help="path to vit_pytorch/vit_3d.py")
    parser.add_argument("--json", type=Path, default=None, help="write all results here")
    parser.add_argument("--markdown", type=Path, default=None, help="write the tables here")
    parser.add_argument("--summarize", type=Path, default=None, metavar="DIR",
                        help="print the summary of a run_all.sh output folder and exit")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.summarize:
        print(summarize(args.summarize), end="")
        return 0

    if args.worker:
        print(json.dumps(run_worker(args.worker, args.preset[0], args.precision[0], args.steps, args.warmup,
                                    args.vit_pytorch_file, args.cpu_time, args.device, args.compile)))
        return 0

    rows = []
    for preset in args.preset:
        for precision in args.precision:
            runs: dict[str, list[dict[str, Any]]] = {peer: [] for peer in args.peers}
            for r in range(args.rounds):
                shift = r % len(args.peers)
                for peer in args.peers[shift:] + args.peers[:shift]:
                    row = _run_one(args, peer, preset, precision)
                    runs[peer].append(row)
                    shown = row.get("skipped") or f"{row['median_step_s']:.3f} s, {row['peak_memory_mib']:.0f} MiB"
                    print(f"{preset:6s} {precision:10s} round {r} {peer:14s} {shown}", file=sys.stderr, flush=True)
            rows += [_median_of_rounds(runs[peer]) for peer in args.peers]
    if args.cpu_time:
        import torch

        torch.set_num_threads(1)  # the peak on the same single thread as the steps
    peaks = {precision: _peak(precision, args.device, args.cpu_time) for precision in args.precision}
    from vit3d.bench import machine_info

    report = {"machine": machine_info(args.device), "matmul_peak_flops": peaks, "results": rows,
              "command": " ".join([Path(sys.executable).name, *sys.argv])}
    table = to_markdown(rows, peaks)
    print(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
