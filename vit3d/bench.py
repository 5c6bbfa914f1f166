"""Training-step benchmarks: step time, analytic and counted FLOPs, the device's matmul peak, peak memory.

Everything a ``vit3d bench`` run reports comes from here, so the same numbers can be produced from Python:

    >>> import vit3d, vit3d.bench as vb
    >>> c, spatial = vb.parse_input("3x16x112x112")
    >>> model = vit3d.create_model("vit_small_patch16_3d", img_size=spatial, depth=4)
    >>> result = vb.benchmark_model(model, batch=4, precision="bf16-mixed", steps=6)

Definitions (the same for vit3d and every peer in ``benchmarks/peers.py``):

- *step*: forward, cross-entropy loss, backward and a fused AdamW step (:func:`make_optimizer`) on one random
  batch; the median of ``steps`` timed steps after ``warmup`` untimed ones.
- *FLOPs*: multiply-adds of the matrix products counted as 2 FLOPs (patch embedding, qkv, ``q k^T``, ``a v``,
  output projection, MLP, head), times 3 for forward plus backward, less the patch embedding's input gradient that
  is never computed. Elementwise work (norms, softmax, GELU, the optimiser) is not counted, as in MFU figures.
- *matmul peak*: the best FLOP/s of a large square matrix product in the run's precision, measured in the same
  process just after the timed steps.
- *peak memory*: the most tensor memory alive at once while the model is built and trained for its first two
  steps (so parameters, gradients, AdamW state, activations and the batch all count): on CUDA
  ``torch.cuda.max_memory_allocated``, on CPU the allocator total seen by ``torch.profiler`` (see
  :class:`MemoryMeter`). Those two steps are untimed, so the profiler cannot slow the timed ones.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vit3d.errors import ConfigError
from vit3d.layers.helpers import check_choice

__all__ = [
    "PRECISIONS", "BenchResult", "MemoryMeter", "autocast", "benchmark_model", "count_flops", "machine_info",
    "make_optimizer", "matmul_peak", "parse_input", "time_train_steps", "vit_flops",
]

# Lightning's spellings, plus the short ones people type.
PRECISIONS = {"32": "32", "fp32": "32", "32-true": "32", "bf16": "bf16-mixed", "bf16-mixed": "bf16-mixed"}


def _precision(name: str) -> str:
    check_choice("precision", name, PRECISIONS)
    return PRECISIONS[name]


def parse_input(spec: str) -> tuple[int, tuple[int, ...]]:
    """``"3x16x112x112"`` -> ``(3, (16, 112, 112))``: channels, then one size per spatial axis.

    Raises:
        ValueError: unless ``spec`` is 2 to 4 positive integers joined by ``x``.
    """
    parts = spec.lower().split("x")
    if not 2 <= len(parts) <= 4 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"input {spec!r} is not CxS[xS[xS]] with positive integers; e.g. '3x16x112x112' for an "
                         "RGB clip of 16 frames of 112x112, or '1x96x96x96' for a CT volume")
    c, *spatial = (int(p) for p in parts)
    return c, tuple(spatial)


@contextlib.contextmanager
def autocast(device: torch.device | str, precision: str) -> Iterator[None]:
    """bf16 autocast for ``"bf16-mixed"``, nothing for ``"32"`` (on any device type)."""
    device_type = torch.device(device).type
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=_precision(precision) == "bf16-mixed"):
        yield


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------------- FLOPs
def vit_flops(*, batch: int, num_patches: int, patch_dim: int, embed_dim: int, depth: int, mlp_hidden: int,
              num_classes: int, prefix_tokens: int = 1, qk_dim: int | None = None, kept_patches: int | None = None,
              train: bool = True) -> int:
    """Matmul FLOPs of one ViT step on ``batch`` samples (2 per multiply-add).

    Args:
        batch: samples.
        num_patches: patch tokens per sample (all of them are embedded).
        patch_dim: values per patch (``in_chans * prod(patch_size)``).
        embed_dim: token width ``D``.
        depth: blocks.
        mlp_hidden: MLP hidden width.
        num_classes: head outputs (0 for none).
        prefix_tokens: class/register tokens that join the blocks.
        qk_dim: total width of q, k and v (``heads * head_dim``); ``embed_dim`` when ``None``.
        kept_patches: patch tokens that enter the blocks after token dropping; ``num_patches`` when ``None``.
        train: forward plus backward (3x the blocks and head, 2x the patch embedding, whose input needs no
            gradient) instead of forward only.
    """
    n = (num_patches if kept_patches is None else kept_patches) + prefix_tokens
    inner = qk_dim or embed_dim
    patch = 2 * num_patches * patch_dim * embed_dim
    block = (2 * n * embed_dim * 3 * inner          # qkv
             + 2 * 2 * n * n * inner                # q k^T and a v
             + 2 * n * inner * embed_dim            # output projection
             + 2 * 2 * n * embed_dim * mlp_hidden)  # fc1, fc2
    head = 2 * embed_dim * num_classes
    fwd = patch + depth * block + head
    return batch * (3 * fwd - patch if train else fwd)


def model_flops(model: nn.Module, batch: int, *, spatial: Sequence[int] | None = None, train: bool = True) -> int:
    """:func:`vit_flops` for a vit3d ``VisionTransformer`` (with its ``patch_drop_rate`` applied when training)."""
    pe = model.patch_embed
    grid = pe.grid_for(spatial) if spatial is not None else pe.grid_size
    patches = kept = math.prod(grid)
    if train and getattr(model, "patch_drop_rate", 0.0):
        kept = max(1, int(patches * (1.0 - model.patch_drop_rate)))
    blk = model.blocks[0]
    return vit_flops(batch=batch, num_patches=patches, patch_dim=pe.in_chans * math.prod(pe.patch_size),
                     embed_dim=model.embed_dim, depth=len(model.blocks), mlp_hidden=blk.mlp.fc1.out_features,
                     num_classes=model.num_classes, prefix_tokens=model.num_prefix_tokens,
                     qk_dim=blk.attn.qkv.out_features // 3, kept_patches=kept, train=train)


def count_flops(fn: Callable[[], torch.Tensor], *, backward: bool = True) -> int:
    """FLOPs that :class:`torch.utils.flop_counter.FlopCounterMode` sees while running ``fn()`` (and its backward).

    The counter knows matmuls and convolutions; it does not count the CPU flash-attention kernel, so run
    attention on the explicit path (inside :func:`vit3d.layers.record_attention`) to include it.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        out = fn()
        if backward:
            out.float().sum().backward()
    return int(counter.get_total_flops())


# ---------------------------------------------------------------------------------------------------- peak
def matmul_peak(device: torch.device | str = "cpu", precision: str = "32", *, size: int | None = None,
                repeats: int = 5, min_time: float = 0.2, clock: Callable[[], float] = time.perf_counter) -> float:
    """Best measured FLOP/s of a square ``size x size`` matmul in ``precision`` on ``device``.

    bf16 multiplies bf16 tensors (what autocast runs); fp32 multiplies fp32 tensors with TF32 left as configured.
    Pass ``clock=time.process_time`` (with one thread) to compare with steps timed in CPU seconds.
    """
    device = torch.device(device)
    size = size or (8192 if device.type == "cuda" else 2048)
    dtype = torch.bfloat16 if _precision(precision) == "bf16-mixed" else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    flops = 2 * size ** 3
    torch.mm(a, b, out=out)  # warm-up: kernel selection, page faults
    _sync(device)
    best = 0.0
    for _ in range(repeats):
        n, t0 = 0, clock()
        while True:
            torch.mm(a, b, out=out)
            n += 1
            _sync(device)
            dt = clock() - t0
            if dt >= min_time / repeats:
                break
        best = max(best, n * flops / dt)
    return best


# ---------------------------------------------------------------------------------------------------- memory
class MemoryMeter:
    """Peak tensor memory allocated inside a region of code, in bytes (above what was allocated before it), and
    what is still allocated when it ends (``retained``).

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the running total of PyTorch's CPU allocator, read from the
    ``[memory]`` events of :func:`torch.profiler.profile` with ``profile_memory=True``; unlike the resident set
    size it does not depend on how ``malloc`` caches freed pages, so models compare fairly. Memory that libraries
    allocate outside PyTorch's allocator (oneDNN scratch pads, MKL buffers) is not seen on either device.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.method = ("torch.cuda.max_memory_allocated" if self.device.type == "cuda"
                       else "CPU allocator peak (torch.profiler profile_memory)")
        self.baseline = 0
        self.peak = 0
        self.retained = 0
        self._prof: Any = None

    def __enter__(self) -> MemoryMeter:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline = torch.cuda.memory_allocated(self.device)
        else:
            from torch.profiler import ProfilerActivity, profile

            self._prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
            self._prof.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.baseline
            self.retained = torch.cuda.memory_allocated(self.device) - self.baseline
            return
        self._prof.__exit__(*exc)
        events = [e for e in self._prof.profiler.kineto_results.events() if e.name() == "[memory]"]
        total = peak = 0
        for event in sorted(events, key=lambda e: e.start_ns()):
            total += event.nbytes()
            peak = max(peak, total)
        self.peak, self.retained = peak, total
        self._prof = None


# ---------------------------------------------------------------------------------------------------- timing
def make_optimizer(params: Any, lr: float = 1e-4) -> torch.optim.Optimizer:
    """AdamW with the fused kernel (one pass over all parameters): on this CPU it took 6 ms instead of 41 ms for
    the foreach kernel per step of 8.8 M parameters (one thread), a large share of a 0.2 s step. Every model in
    a comparison gets the same optimiser."""
    return torch.optim.AdamW(params, lr=lr, fused=True)


def time_train_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, precision: str = "32", steps: int = 6,
                     warmup: int = 2, forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
                     optimizer: torch.optim.Optimizer | None = None,
                     clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """Seconds of each of ``steps`` training steps (forward, cross-entropy, backward, AdamW) after ``warmup``.

    Args:
        model: module in training mode, on ``x``'s device (possibly ``torch.compile``-d).
        x: input batch.
        y: integer class targets ``(B,)``.
        precision: ``"32"`` or ``"bf16-mixed"``.
        steps: timed steps.
        warmup: untimed steps first (compilation, allocator and kernel warm-up).
        forward: ``forward(model, x) -> logits``; ``model(x)`` when ``None`` (peers with other input layouts).
        optimizer: defaults to :func:`make_optimizer` over ``model.parameters()``.
        clock: seconds source; ``time.process_time`` with one thread gives CPU seconds, which other processes
            on the machine distort far less than wall-clock seconds.
    """
    if steps < 1 or warmup < 0:
        raise ConfigError(f"steps ({steps}) must be >= 1 and warmup ({warmup}) >= 0")
    forward = forward or (lambda m, inp: m(inp))
    opt = optimizer or make_optimizer(model.parameters())
    times = []
    for i in range(warmup + steps):
        _sync(x.device)
        t0 = clock()
        with autocast(x.device, precision):
            logits = forward(model, x)
        loss = F.cross_entropy(logits.float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(x.device)
        if i >= warmup:
            times.append(clock() - t0)
    return times


def machine_info(device: torch.device | str = "cpu") -> dict[str, Any]:
    """Device, processor, thread count and library versions, for the header of every result."""
    device = torch.device(device)
    info: dict[str, Any] = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
                            "threads": torch.get_num_threads()}
    with contextlib.suppress(OSError, AttributeError):
        info["load_avg_1m"] = round(os.getloadavg()[0], 2)  # other work on the machine distorts step times
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    else:
        cpu = platform.processor() or platform.machine()
        with contextlib.suppress(OSError):
            names = re.findall(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
            cpu = names[0].strip() if names else cpu
        info["cpu"] = cpu
    return info


@dataclass
class BenchResult:
    """One benchmark's numbers; :meth:`to_dict` is the JSON that ``vit3d bench`` prints."""

    model: str
    input: str
    batch: int
    precision: str
    compile: bool
    steps: int
    step_times_s: list[float]
    median_step_s: float
    samples_per_s: float
    flops_per_step: int
    achieved_flops: float
    matmul_peak_flops: float
    peak_fraction: float
    peak_memory_bytes: int
    memory_method: str
    machine: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["step_times_s"] = [round(t, 5) for t in self.step_times_s]
        out["peak_memory_mib"] = round(self.peak_memory_bytes / 2 ** 20, 1)
        out["achieved_gflops"] = round(self.achieved_flops / 1e9, 1)
        out["matmul_peak_gflops"] = round(self.matmul_peak_flops / 1e9, 1)
        # strict JSON has no NaN: a peak that was not measured is null
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


def benchmark_model(model: nn.Module | Callable[[], nn.Module], *, batch: int, precision: str = "32",
                    input_shape: tuple[int, tuple[int, ...]] | None = None, steps: int = 6, warmup: int = 2,
                    compile: bool = False, device: torch.device | str = "cpu", num_classes: int | None = None,
                    flops: int | None = None, name: str | None = None, measure_peak: bool = True,
                    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
                    options: dict[str, Any] | None = None,
                    clock: Callable[[], float] = time.perf_counter) -> BenchResult:
    """Time training steps of ``model`` on a random batch; count FLOPs; measure the matmul peak and memory.

    Args:
        model: a module, or a zero-argument factory (then the model's own memory counts in the peak).
        batch: samples per step.
        precision: ``"32"`` or ``"bf16-mixed"`` (or ``"fp32"`` / ``"bf16"``).
        input_shape: ``(C, spatial)``; taken from a vit3d model's ``patch_embed`` when ``None``.
        steps: timed steps; warmup: untimed steps before them (at least the two that measure memory).
        compile: wrap the model in :func:`torch.compile` first.
        device: where to run.
        num_classes: classes of the random targets; the model's ``num_classes`` when ``None``.
        flops: FLOPs per step; :func:`model_flops` of a vit3d model when ``None``.
        name: label for the result.
        measure_peak: also measure :func:`matmul_peak` (after the timed steps, so it cannot raise their memory).
        forward: ``forward(model, x) -> logits`` for models that take another input layout.
        options: extra settings to record in the result.
        clock: seconds source for the timed steps (see :func:`time_train_steps`).
    """
    precision = _precision(precision)
    device = torch.device(device)
    with MemoryMeter(device) as meter:
        net = model() if not isinstance(model, nn.Module) else model
        net = net.to(device).train()
        if input_shape is None:
            input_shape = (net.patch_embed.in_chans, net.patch_embed.img_size)
        c, spatial = input_shape
        classes = num_classes or getattr(net, "num_classes", 0) or 10
        x = torch.randn(batch, c, *spatial, device=device)
        y = torch.randint(0, classes, (batch,), device=device)
        run = torch.compile(net) if compile else net
        opt = make_optimizer(net.parameters())
        # Two steps: the first creates the optimiser state, the second is the steady state with it alive.
        time_train_steps(run, x, y, precision=precision, steps=2, warmup=0, forward=forward, optimizer=opt)
    times = time_train_steps(run, x, y, precision=precision, steps=steps, warmup=max(0, warmup - 2),
                             forward=forward, optimizer=opt, clock=clock)
    if flops is None:
        flops = model_flops(net, batch, spatial=spatial)
    median = statistics.median(times)
    peak = matmul_peak(device, precision) if measure_peak else float("nan")
    achieved = flops / median
    return BenchResult(
        model=name or getattr(net, "model_name", None) or type(net).__name__,
        input="x".join(str(v) for v in (c, *spatial)), batch=batch, precision=precision, compile=compile,
        steps=steps, step_times_s=times, median_step_s=median, samples_per_s=batch / median, flops_per_step=flops,
        achieved_flops=achieved, matmul_peak_flops=peak, peak_fraction=achieved / peak if measure_peak else float("nan"),
        peak_memory_bytes=meter.peak, memory_method=meter.method, machine=machine_info(device),
        options=dict(options or {}),
    )
