"""vit3d.bench (FLOPs, memory, timing), the ``vit3d bench`` command and the peer builders of benchmarks/peers.py."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

import vit3d
from vit3d.bench import (
    MemoryMeter,
    benchmark_model,
    count_flops,
    matmul_peak,
    model_flops,
    parse_input,
    time_train_steps,
    vit_flops,
)
from vit3d.layers import record_attention

ROOT = Path(__file__).resolve().parents[1]


def _tiny(**kw):
    return vit3d.create_model("vit_tiny_patch16_3d", img_size=(4, 32, 32), patch_size=(2, 16, 16), depth=2,
                              num_classes=5, **kw)


def test_parse_input():
    assert parse_input("3x16x112x112") == (3, (16, 112, 112))
    assert parse_input("1x64x64") == (1, (64, 64))
    for bad in ("3x16x0x4", "16", "3x1x2x3x4", "3xax4"):
        with pytest.raises(ValueError, match="CxS"):
            parse_input(bad)


@pytest.mark.parametrize("drop", [0.0, 0.5])
def test_analytic_flops_equal_flop_counter(drop):
    """The closed-form count equals torch's FlopCounterMode on the explicit attention path (fwd + bwd and fwd)."""
    model = _tiny(patch_drop_rate=drop).train()
    x = torch.randn(3, 3, 4, 32, 32)
    with record_attention(model):
        counted = count_flops(lambda: model(x))
    assert counted == model_flops(model, 3)
    model.eval()
    with record_attention(model):
        counted_fwd = count_flops(lambda: model(x), backward=False)
    assert counted_fwd == model_flops(model, 3, train=False)


def test_vit_flops_closed_form_for_one_layer():
    # one token, one layer, width 1, MLP 1, no head: qkv 6, attention 4, proj 2, MLP 4, patch 2*P
    assert vit_flops(batch=1, num_patches=1, patch_dim=3, embed_dim=1, depth=1, mlp_hidden=1, num_classes=0,
                     prefix_tokens=0, train=False) == 6 + 6 + 4 + 2 + 4


def test_matmul_peak_is_a_rate():
    peak = matmul_peak("cpu", "32", size=128, repeats=2, min_time=0.02)
    assert math.isfinite(peak) and peak > 1e6


def test_memory_meter_sees_a_known_allocation():
    n = 4 * 2 ** 20  # 16 MiB of fp32
    with MemoryMeter("cpu") as meter:
        a = torch.ones(n)
        b = a * 2  # a second buffer of the same size: the peak holds both
        del a, b
    assert 2 * 4 * n <= meter.peak < 2 * 4 * n + 2 ** 20


def test_time_train_steps_trains():
    model = _tiny().train()
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(2, 3, 4, 32, 32), torch.tensor([0, 4])
    times = time_train_steps(model, x, y, precision="bf16", steps=2, warmup=1)
    assert len(times) == 2 and all(t > 0 for t in times)
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    with pytest.raises(ValueError, match="steps"):
        time_train_steps(model, x, y, steps=0)


def test_benchmark_model_fields():
    r = benchmark_model(_tiny, batch=2, precision="32", steps=1, warmup=2, measure_peak=False)
    assert r.input == "3x4x32x32" and r.precision == "32"
    assert r.flops_per_step == model_flops(_tiny(), 2)
    assert r.achieved_flops == pytest.approx(r.flops_per_step / r.median_step_s)
    # parameters + grads + two AdamW moments are alive at the peak
    params = sum(p.numel() * 4 for p in _tiny().parameters())
    assert r.peak_memory_bytes >= 4 * params
    with pytest.raises(ValueError, match="precision"):
        benchmark_model(_tiny, batch=2, precision="fp8", steps=1)


def _peers():
    spec = importlib.util.spec_from_file_location("_bench_peers", ROOT / "benchmarks" / "peers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TINY = dict(frames=4, size=32, tubelet=2, patch=16, dim=64, depth=2, heads=4, mlp=128, batch=2)


@pytest.mark.parametrize("peer", ["vit3d", "vit3d-plain", "monai", "monai-sdpa", "hf-videomae", "vit-pytorch"])
def test_peers_build_the_same_size_model(peer):
    peers = _peers()
    try:
        model, forward = peers.build_peer(peer, TINY)
    except peers.PeerUnavailable as err:
        pytest.skip(str(err))
    ref, _ = peers.build_peer("vit3d", TINY)
    n, n_ref = (sum(p.numel() for p in m.parameters()) for m in (model, ref))
    assert abs(n - n_ref) / n_ref < 0.05, f"{peer} has {n} parameters, vit3d {n_ref}"
    x = torch.randn(2, 3, 4, 32, 32)
    logits = (forward or (lambda m, inp: m(inp)))(model, x)
    assert logits.shape == (2, peers.NUM_CLASSES)


def _twins(first: str, second: str):
    """Two peers built from the same seed: ``((model, forward), (model, forward))``."""
    peers = _peers()
    built = []
    for name in (first, second):
        torch.manual_seed(0)
        built.append(peers.build_peer(name, TINY))
    return built


def test_plain_vit3d_row_differs_from_the_default_only_in_recomputation():
    (default, _), (plain, _) = _twins("vit3d", "vit3d-plain")
    assert all(b.recompute_norm_act for b in default.blocks) and not any(b.recompute_norm_act for b in plain.blocks)
    x = torch.randn(2, 3, 4, 32, 32)
    torch.testing.assert_close(plain(x), default(x), atol=1e-5, rtol=1e-5)


def test_monai_sdpa_switch_changes_the_kernel_not_the_result():
    (plain, fwd), (sdpa, _) = _twins("monai", "monai-sdpa")
    x = torch.randn(2, 3, 4, 32, 32)
    blocks = [m for m in sdpa.modules() if hasattr(m, "use_flash_attention")]
    assert blocks and all(m.use_flash_attention for m in blocks)
    torch.testing.assert_close(fwd(plain.eval(), x), fwd(sdpa.eval(), x), atol=1e-5, rtol=1e-5)


def test_profile_table_bounds_the_step_by_its_matrix_kernels():
    spec = importlib.util.spec_from_file_location("_bench_profile_ops", ROOT / "benchmarks" / "profile_ops.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    kernels = ["aten::mm", "aten::addmm", "aten::bmm", "aten::mkldnn_convolution", "aten::convolution_backward",
               "aten::_scaled_dot_product_flash_attention_for_cpu_backward"]
    others = ["aten::gelu", "aten::copy_", "aten::native_layer_norm", "aten::_fused_adamw_", "aten::mul"]
    assert all(module._is_matrix_kernel(op) for op in kernels)
    assert not any(module._is_matrix_kernel(op) for op in others)
    profiles = {"ours": {"aten::mm": 40.0, "aten::_scaled_dot_product_flash_attention_for_cpu": 30.0,
                         "aten::gelu": 30.0},
                "peer": {"aten::mm": 60.0, "aten::mkldnn_convolution": 20.0, "aten::copy_": 20.0}}
    table = module.to_markdown(profiles, rows=2)
    kernel_row = next(line for line in table.splitlines() if line.startswith("| matrix kernels"))
    assert kernel_row.endswith("| 70.0 | 80.0 |")
    assert "ours's matrix kernels alone (every other op of its step removed) take 0.70x peer's whole step." in table
