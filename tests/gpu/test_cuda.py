"""GPU checks (``pytest -m gpu``; run by ``benchmarks/gpu_suite.sh``): bf16 training steps, the fused attention
kernels, activation checkpointing's memory saving and ``torch.compile`` on a CUDA device.

Skipped where no CUDA device is present, so they can sit in the tree that CI runs on CPUs.
"""

from __future__ import annotations

import pytest
import torch

import vit3d

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

IMG, PATCH = (16, 112, 112), (2, 16, 16)


def _model(**kwargs) -> torch.nn.Module:
    return vit3d.create_model("vit_small_patch16_3d", img_size=IMG, patch_size=PATCH, depth=4, num_classes=5,
                              **kwargs)


def test_bf16_step_matches_fp32_and_reaches_every_parameter() -> None:
    torch.manual_seed(0)
    model = _model().cuda()
    x = torch.randn(2, 3, *IMG, device="cuda")
    y = torch.tensor([1, 3], device="cuda")
    with torch.no_grad():
        ref = model(x)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(x)
    torch.testing.assert_close(logits.float(), ref, atol=0.1, rtol=0.05)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(model(x).float(), y)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reached {missing}"


@pytest.mark.parametrize("backend", ["FLASH_ATTENTION", "EFFICIENT_ATTENTION"])
def test_fused_attention_kernels_run_and_agree(backend: str) -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    model = _model().cuda().eval()
    x = torch.randn(2, 3, *IMG, device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        ref = model(x).float()
        with sdpa_kernel(getattr(SDPBackend, backend)):  # raises if the kernel cannot take our layout
            out = model(x).float()
    torch.testing.assert_close(out, ref, atol=0.05, rtol=0.05)


def _peak_step_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        model(x).float().sum().backward()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def test_grad_checkpointing_halves_activation_memory() -> None:
    model = vit3d.create_model("vit_small_patch16_3d", img_size=IMG, patch_size=PATCH, num_classes=5).cuda()
    x = torch.randn(8, 3, *IMG, device="cuda")
    model.set_recompute_norm_act(False)  # against blocks that save every activation
    plain = _peak_step_bytes(model, x)
    model.zero_grad(set_to_none=True)
    model.set_grad_checkpointing(True)
    checkpointed = _peak_step_bytes(model, x)
    assert checkpointed < 0.5 * plain, (checkpointed, plain)


def test_recomputing_blocks_match_plain_ones_with_less_memory() -> None:
    """The default blocks recompute norm and GELU outputs: same gradients under CUDA bf16 autocast, and a peak
    at least a fifth lower than blocks that save them."""
    torch.manual_seed(0)
    model = _model().cuda()
    x = torch.randn(8, 3, *IMG, device="cuda")
    peaks, grads = {}, {}
    for enable in (False, True):
        model.zero_grad(set_to_none=True)
        model.set_recompute_norm_act(enable)
        peaks[enable] = _peak_step_bytes(model, x)
        grads[enable] = [p.grad.float() for p in model.parameters()]
    assert peaks[True] < 0.8 * peaks[False], peaks
    for a, b in zip(grads[True], grads[False], strict=True):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-2)


def test_compiled_model_matches_eager() -> None:
    torch.manual_seed(0)
    model = _model().cuda().eval()
    x = torch.randn(2, 3, *IMG, device="cuda")
    with torch.no_grad():
        ref = model(x)
        out = torch.compile(model)(x)
    torch.testing.assert_close(out, ref, atol=2e-3, rtol=2e-3)
