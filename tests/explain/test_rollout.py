"""Attention rollout and token read-out: closed forms and distribution properties."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vit3d.explain import attention_rollout, fuse_heads, read_tokens


def _random_attn(layers: int, batch: int = 2, heads: int = 3, n: int = 7, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, n, n, generator=g).mul(3).softmax(-1) for _ in range(layers)]


@settings(max_examples=25, deadline=None)
@given(layers=st.integers(1, 6), n=st.integers(2, 12), heads=st.integers(1, 4), seed=st.integers(0, 10_000),
       fusion=st.sampled_from(["mean", "max", "min"]))
def test_rollout_rows_are_distributions(layers: int, n: int, heads: int, seed: int, fusion: str) -> None:
    r = attention_rollout(_random_attn(layers, heads=heads, n=n, seed=seed), head_fusion=fusion)
    assert r.shape == (2, n, n)
    assert (r >= 0).all()
    torch.testing.assert_close(r.sum(-1), torch.ones(2, n), atol=1e-5, rtol=0)


def test_rollout_uniform_attention_closed_form() -> None:
    # Uniform attention U is idempotent, so prod_l (I + U) / 2 = 2^-L I + (1 - 2^-L) U.
    n, layers = 5, 4
    attn = [torch.full((1, 2, n, n), 1.0 / n) for _ in range(layers)]
    expected = 0.5 ** layers * torch.eye(n) + (1 - 0.5 ** layers) * torch.full((n, n), 1.0 / n)
    torch.testing.assert_close(attention_rollout(attn)[0], expected)


def test_rollout_one_layer_is_half_attention_plus_half_identity() -> None:
    attn = _random_attn(1)
    torch.testing.assert_close(attention_rollout(attn), 0.5 * attn[0].mean(1) + 0.5 * torch.eye(7))


def test_rollout_without_residual_is_the_ordered_matrix_product() -> None:
    attn = _random_attn(3)
    fused = [a.mean(1) for a in attn]
    expected = torch.stack([torch.linalg.multi_dot([fused[2][b], fused[1][b], fused[0][b]]) for b in range(2)])
    torch.testing.assert_close(attention_rollout(attn, residual=False), expected)


def test_fuse_heads_choices() -> None:
    attn = _random_attn(1)[0]
    torch.testing.assert_close(fuse_heads(attn, "max"), attn.max(1).values)
    torch.testing.assert_close(fuse_heads(attn, "min"), attn.min(1).values)
    with pytest.raises(ValueError, match="head_fusion"):
        fuse_heads(attn, "median")  # type: ignore[arg-type]


def test_read_tokens_modes() -> None:
    r = attention_rollout(_random_attn(2))  # (2, 7, 7); one prefix token, 6 patches
    torch.testing.assert_close(read_tokens(r, 1, pool="token"), r[:, 0, 1:])
    torch.testing.assert_close(read_tokens(r, 1, pool="avg"), r[:, 1:, 1:].mean(1))
    # uniform sequence-pooling weights are the mean token
    torch.testing.assert_close(read_tokens(r, 1, pool=torch.full((2, 6), 1 / 6)), r[:, 1:, 1:].mean(1))
    onehot = torch.zeros(2, 6)
    onehot[:, 3] = 1.0
    torch.testing.assert_close(read_tokens(r, 1, pool=onehot), r[:, 4, 1:])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least one layer"):
        attention_rollout([])
    with pytest.raises(ValueError, match=r"\(B, heads, N, N\)"):
        attention_rollout([torch.rand(2, 7, 7)])
    with pytest.raises(ValueError, match="one forward pass at a time"):
        attention_rollout(_random_attn(1, n=7) + _random_attn(1, n=5))
    r = attention_rollout(_random_attn(1))
    with pytest.raises(ValueError, match="class token"):
        read_tokens(r, 0, pool="token")
    with pytest.raises(ValueError, match="pooling weights"):
        read_tokens(r, 1, pool=torch.rand(2, 7))
    with pytest.raises(ValueError, match="pool="):
        read_tokens(r, 1, pool="max")  # type: ignore[arg-type]
