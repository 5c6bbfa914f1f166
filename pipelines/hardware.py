"""Pick a training precision for the hardware at hand.

bf16-mixed where the hardware computes bf16 natively (Ampere+ GPUs; CPUs with AVX-512 BF16 or AMX), 16-mixed on
older GPUs, fp32 otherwise. ``trainer.precision`` in a config or on the command line overrides the choice.
"""

from __future__ import annotations

from pathlib import Path

import torch


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic (AVX-512 BF16 or AMX), as oneDNN reports it."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        pass
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def auto_precision(accelerator: str = "auto") -> str:
    """Lightning precision string for ``accelerator`` (``"auto"``, ``"gpu"``/``"cuda"`` or ``"cpu"``).

    Returns:
        ``"bf16-mixed"``, ``"16-mixed"`` or ``"32-true"``.
    """
    use_cuda = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    if use_cuda:
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    if accelerator in ("auto", "cpu") and cpu_supports_bf16():
        return "bf16-mixed"
    return "32-true"
