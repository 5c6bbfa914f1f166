import pytest
import torch
from torch import nn

from vit3d.layers import Attention, record_attention


def reference_attention(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v written out from the layer's own weights."""
    B, N, D = x.shape
    h, d = attn.num_heads, D // attn.num_heads
    q, k, v = attn.qkv(x).split(D, dim=-1)
    q, k, v = (t.reshape(B, N, h, d).transpose(1, 2) for t in (q, k, v))
    probs = torch.softmax(q @ k.transpose(-1, -2) / d ** 0.5, dim=-1)
    return attn.proj((probs @ v).transpose(1, 2).reshape(B, N, D)), probs


@pytest.mark.parametrize("qkv_bias", [True, False])
@pytest.mark.parametrize("n_tokens", [1, 7, 65])
def test_attention_matches_reference(qkv_bias, n_tokens):
    attn = Attention(32, num_heads=4, qkv_bias=qkv_bias).eval()
    x = torch.randn(2, n_tokens, 32)
    expected, probs = reference_attention(attn, x)
    torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)
    out, got_probs = attn.forward_with_attn(x)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_probs, probs, atol=1e-6, rtol=1e-5)


def test_attention_backward_reaches_every_parameter():
    attn = Attention(16, num_heads=2)
    attn(torch.randn(3, 5, 16)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in attn.parameters())


def test_attention_rejects_indivisible_heads():
    with pytest.raises(ValueError, match="embed_dim 30 is not divisible by num_heads 4"):
        Attention(30, num_heads=4)


def test_record_attention_collects_one_map_per_layer_and_restores():
    model = nn.Sequential(Attention(16, 2), Attention(16, 4)).eval()
    x = torch.randn(2, 9, 16)
    plain = model(x)
    with record_attention(model) as maps:
        recorded = model(x)
    assert [tuple(m.shape) for m in maps] == [(2, 2, 9, 9), (2, 4, 9, 9)]
    torch.testing.assert_close(recorded, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(2, 2, 9))
    assert all(m.attn_sink is None for m in model)
    model(x)
    assert len(maps) == 2  # nothing recorded after the block


def test_record_attention_needs_attention_layers():
    with pytest.raises(ValueError, match="no vit3d Attention layers"):
        with record_attention(nn.Linear(2, 2)):
            pass
