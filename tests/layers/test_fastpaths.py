"""The CPU speed paths equal the reference computations: patchify + linear vs ConvNd, explicit vs SDPA attention."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vit3d
from vit3d.layers import Attention, PatchEmbed, record_attention
from vit3d.layers.attention import CPU_BF16_EXPLICIT_MAX_TOKENS, use_explicit_attention
from vit3d.layers.patch_embed import patchify

GEOMETRIES = [(1, 24, 4), (2, (12, 16), (4, 8)), (3, (4, 8, 12), (2, 4, 4))]


def _conv_tokens(pe: PatchEmbed, x: torch.Tensor) -> torch.Tensor:
    conv = getattr(F, f"conv{pe.spatial_dims}d")
    return conv(x, pe.proj.weight, pe.proj.bias, stride=pe.patch_size).flatten(2).transpose(1, 2)


@pytest.mark.parametrize("dims,img,patch", GEOMETRIES)
def test_patchify_linear_equals_conv_forward_and_grads(dims, img, patch):
    pe = PatchEmbed(img, patch, in_chans=2, embed_dim=8, spatial_dims=dims)
    x = torch.randn(3, 2, *pe.img_size, requires_grad=True)
    out = F.linear(patchify(x, pe.patch_size), pe.proj.weight.flatten(1), pe.proj.bias)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, (x, pe.proj.weight, pe.proj.bias), g)
    ref = _conv_tokens(pe, x)
    ref_grads = torch.autograd.grad(ref, (x, pe.proj.weight, pe.proj.bias), g)
    assert out.shape == (3, pe.num_patches, 8)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_patchify_orders_values_like_a_conv_weight():
    x = torch.arange(2 * 4 * 6, dtype=torch.float32).reshape(1, 2, 4, 6)
    p = patchify(x, (2, 3))
    assert p.shape == (1, 4, 12)
    # token 1 is the patch at grid (0, 1): rows 0-1, columns 3-5, channel-major like weight (D, C, 2, 3)
    torch.testing.assert_close(p[0, 1], x[0, :, 0:2, 3:6].reshape(-1))


@pytest.mark.parametrize("dims,img,patch", GEOMETRIES)
def test_patch_embed_bf16_fast_path_matches_conv(dims, img, patch):
    """Under CPU bf16 (autocast or bf16 weights) PatchEmbed takes patchify + linear; it must equal the conv."""
    pe = PatchEmbed(img, patch, in_chans=2, embed_dim=16, spatial_dims=dims)
    x = torch.randn(2, 2, *pe.img_size)
    ref = _conv_tokens(pe, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = pe(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=3e-2, rtol=3e-2)
    pe_bf16 = pe.to(torch.bfloat16)
    out = pe_bf16(x.bfloat16())
    torch.testing.assert_close(out.float(), ref, atol=3e-2, rtol=3e-2)


def test_path_selection():
    def q(n, dtype, grad=True):
        return torch.zeros(1, 2, n, 4, dtype=dtype, requires_grad=grad)

    assert use_explicit_attention(q(16, torch.bfloat16))
    assert use_explicit_attention(q(CPU_BF16_EXPLICIT_MAX_TOKENS, torch.bfloat16))
    assert not use_explicit_attention(q(CPU_BF16_EXPLICIT_MAX_TOKENS + 1, torch.bfloat16))
    assert not use_explicit_attention(q(16, torch.float32))
    assert not use_explicit_attention(q(16, torch.bfloat16, grad=False))


def _reference_attention(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """fp64 softmax(q k^T / sqrt(d)) v with the module's own weights."""
    B, N, D = x.shape
    w, b = attn.qkv.weight.double(), attn.qkv.bias.double()
    qkv = F.linear(x.double(), w, b).reshape(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    a = (q @ k.transpose(-2, -1) * attn.scale).softmax(-1)
    out = (a @ v).transpose(1, 2).reshape(B, N, D)
    return F.linear(out, attn.proj.weight.double(), attn.proj.bias.double())


@pytest.mark.parametrize("n", [10, CPU_BF16_EXPLICIT_MAX_TOKENS + 3])
def test_bf16_attention_both_paths_match_fp64_with_grads(n):
    """Below the threshold the explicit path runs, above it SDPA; both match fp64 in value and gradient."""
    attn = Attention(32, num_heads=4)
    x = torch.randn(2, n, 32)
    x_ref = x.double().requires_grad_()
    ref = _reference_attention(attn, x_ref)
    g = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, (x_ref, attn.qkv.weight), g)
    x = x.requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attn(x)
    grads = torch.autograd.grad(out, (x, attn.qkv.weight), g.to(out.dtype))
    torch.testing.assert_close(out.double(), ref, atol=2e-2, rtol=5e-2)
    for a, b in zip(grads, ref_grads, strict=True):
        assert a.shape == b.shape
        err = (a.double() - b).norm() / b.norm()
        assert err < 3e-2, f"relative gradient error {err:.3g}"


def test_record_attention_still_records_under_bf16():
    attn = Attention(16, num_heads=2)
    x = torch.randn(1, 5, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16), record_attention(attn) as maps:
        out = attn(x)
    assert len(maps) == 1 and maps[0].shape == (1, 2, 5, 5)
    torch.testing.assert_close(maps[0].float().sum(-1), torch.ones(1, 2, 5), atol=1e-2, rtol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = attn(x)
    torch.testing.assert_close(out.float(), plain.float(), atol=1e-2, rtol=1e-2)


def _tiny(**kw):
    return vit3d.create_model("vit_tiny_patch16_3d", img_size=(4, 32, 32), patch_size=(2, 16, 16), depth=2,
                              num_classes=3, **kw)


def test_checkpointing_gives_the_same_gradients_on_the_fast_paths():
    """Recomputation must replay the in-place scaling of the explicit path exactly."""
    model = _tiny()
    x = torch.randn(2, 3, 4, 32, 32)

    def grads():
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(x).float().sum().backward()
        return [p.grad.clone() for p in model.parameters()]

    plain = grads()
    model.set_grad_checkpointing(True)
    ckpt = grads()
    for a, b in zip(plain, ckpt, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.slow
def test_fast_paths_compile_and_match_eager():
    """torch.compile (inductor, CPU) of the model with both fast paths agrees with eager; slow on 2 cores."""
    model = _tiny()
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        eager = model(x)
    compiled = torch.compile(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = compiled(x)
    out.float().sum().backward()
    torch.testing.assert_close(out.float(), eager.float(), atol=3e-2, rtol=3e-2)
    assert all(p.grad is not None for p in model.parameters())
