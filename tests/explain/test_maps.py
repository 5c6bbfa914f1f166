"""Attention capture and maps on real vit3d models (ViT, SimpleViT; 2D and 3D; CCT once registered)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import vit3d
from vit3d.explain import capture_attention, explain, token_grid, upsample_map

TINY = dict(embed_dim=48, depth=3, num_heads=3, num_classes=4, in_chans=2)
GEOMETRY = {2: dict(img_size=(32, 24), patch_size=(8, 8)), 3: dict(img_size=(8, 32, 24), patch_size=(4, 8, 8))}


def _model(family: str, dims: int, **overrides: object) -> nn.Module:
    if family == "cct":  # conv tokenizer, sequence pooling, no class token
        size = GEOMETRY[dims]["img_size"]
        return vit3d.create_model(f"cct_2_3x2_32_{dims}d", img_size=size, embed_dim=48, num_heads=3, depth=3,
                                  num_classes=4, in_chans=2, **overrides).eval()
    name = f"{family}_tiny_patch16_{dims}d"
    return vit3d.create_model(name, **{**TINY, **GEOMETRY[dims], **overrides}).eval()


def _num_tokens(model: nn.Module, x: torch.Tensor) -> int:
    return int(torch.tensor(token_grid(model, x.shape[2:])).prod()) + model.num_prefix_tokens


def _input(dims: int, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 2, *GEOMETRY[dims]["img_size"])


CASES = [(f, d) for f in ("vit", "simple_vit", "cct") for d in (2, 3)]


@pytest.mark.parametrize(("family", "dims"), CASES)
def test_capture_keeps_the_sdpa_logits(family: str, dims: int) -> None:
    model, x = _model(family, dims), _input(dims)
    with torch.no_grad():
        reference = model(x)  # SDPA path
    capture = capture_attention(model, x)
    torch.testing.assert_close(capture.logits, reference, atol=1e-5, rtol=1e-5)
    n = _num_tokens(model, x)
    assert len(capture.attentions) == TINY["depth"]
    assert all(a.shape == (2, TINY["num_heads"], n, n) for a in capture.attentions)
    # recording is switched off again: no layer keeps a sink
    assert all(getattr(m, "attn_sink", None) is None for m in model.modules())


@pytest.mark.parametrize(("family", "dims"), CASES)
def test_captured_probabilities_match_torch_multihead_attention(family: str, dims: int) -> None:
    """Independent oracle: torch.nn.MultiheadAttention with the same weights returns the same probabilities."""
    model, x = _model(family, dims), _input(dims)
    inputs: list[torch.Tensor] = []
    hooks = [b.attn.register_forward_pre_hook(lambda _m, args: inputs.append(args[0])) for b in model.blocks]
    capture = capture_attention(model, x)
    for h in hooks:
        h.remove()
    for block, tokens, probs in zip(model.blocks, inputs, capture.attentions, strict=True):
        mha = nn.MultiheadAttention(TINY["embed_dim"], TINY["num_heads"], batch_first=True)
        with torch.no_grad():
            mha.in_proj_weight.copy_(block.attn.qkv.weight)
            mha.in_proj_bias.copy_(block.attn.qkv.bias if block.attn.qkv.bias is not None else 0.0)
            mha.out_proj.weight.copy_(block.attn.proj.weight)
            mha.out_proj.bias.copy_(block.attn.proj.bias)
            _, expected = mha(tokens, tokens, tokens, need_weights=True, average_attn_weights=False)
        torch.testing.assert_close(probs, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("family", "dims"), CASES)
@pytest.mark.parametrize("method", ["rollout", "last"])
def test_map_matches_input_shape(family: str, dims: int, method: str) -> None:
    model, x = _model(family, dims), _input(dims)
    result = explain(model, x, method=method)
    grid = token_grid(model, x.shape[2:])
    assert result.tokens.shape == (2, *grid)
    assert result.map.shape == (2, *x.shape[2:])
    assert (result.tokens >= 0).all()
    assert result.read_from == {"vit": "token", "simple_vit": "avg", "cct": "sequence_pool"}[family]


def test_last_layer_map_is_the_class_token_row() -> None:
    model, x = _model("vit", 3), _input(3)
    capture = capture_attention(model, x)
    result = explain(model, x, method="last")
    expected = capture.attentions[-1].mean(1)[:, 0, 1:].reshape(2, *model.patch_embed.grid_size)
    torch.testing.assert_close(result.tokens, expected)


def test_pooled_rollout_reads_the_mean_token() -> None:
    from vit3d.explain import attention_rollout

    model, x = _model("simple_vit", 3), _input(3)
    r = attention_rollout(capture_attention(model, x).attentions)
    result = explain(model, x, method="rollout")
    torch.testing.assert_close(result.tokens.flatten(1), r.mean(1))
    # without prefix tokens each row is a distribution over patches, so is their mean
    torch.testing.assert_close(result.tokens.flatten(1).sum(-1), torch.ones(2), atol=1e-5, rtol=0)


@pytest.mark.parametrize("dims", [2, 3])
def test_cct_maps_read_through_sequence_pooling(dims: int) -> None:
    from vit3d.explain import attention_rollout

    model, x = _model("cct", dims), _input(dims)
    capture = capture_attention(model, x)
    with torch.no_grad():
        logits, weights = model.forward_with_pool_weights(x)
    torch.testing.assert_close(capture.pool_weights, weights)
    torch.testing.assert_close(capture.logits, logits)
    with torch.no_grad():
        expected_pool = model.pool_weights(x)
    torch.testing.assert_close(explain(model, x, method="pool").tokens, expected_pool)
    # rollout: the pooled feature is sum_i w_i x_i, so its relevance is w^T R
    r = attention_rollout(capture.attentions)
    rollout = explain(model, x, method="rollout").tokens.flatten(1)
    torch.testing.assert_close(rollout, torch.einsum("bi,bij->bj", weights, r))
    torch.testing.assert_close(rollout.sum(-1), torch.ones(2), atol=1e-5, rtol=0)


def test_dynamic_img_size_uses_the_input_grid() -> None:
    model = _model("vit", 3, dynamic_img_size=True)
    x = torch.randn(1, 2, 12, 16, 40)
    assert token_grid(model, x.shape[2:]) == (3, 2, 5)
    result = explain(model, x)
    assert result.tokens.shape == (1, 3, 2, 5) and result.map.shape == (1, 12, 16, 40)


def test_explain_runs_in_eval_mode_and_restores_training() -> None:
    model = _model("vit", 3, patch_drop_rate=0.5, drop_rate=0.3).train()
    x = _input(3, batch=1)
    a, b = explain(model, x), explain(model, x)
    torch.testing.assert_close(a.map, b.map)  # no dropout, no patch dropping
    assert all(m.training for m in model.modules())


def test_upsample_nearest_repeats_each_token_over_its_patch() -> None:
    tokens = torch.rand(2, 2, 3, 4)
    up = upsample_map(tokens, (8, 24, 16), "nearest")
    expected = tokens.repeat_interleave(4, 1).repeat_interleave(8, 2).repeat_interleave(4, 3)
    torch.testing.assert_close(up, expected)


def test_upsample_linear_keeps_the_peak_in_its_patch() -> None:
    tokens = torch.zeros(1, 2, 3, 4)
    tokens[0, 1, 2, 1] = 1.0
    up = upsample_map(tokens, (8, 24, 16))
    d, h, w = torch.unravel_index(up[0].argmax(), up.shape[1:])
    assert 4 <= d < 8 and 16 <= h < 24 and 4 <= w < 8
    torch.testing.assert_close(upsample_map(torch.ones(1, 2, 2), (9, 13)), torch.ones(1, 9, 13))


def test_bad_arguments() -> None:
    model, x = _model("vit", 3), _input(3)
    with pytest.raises(ValueError, match="method"):
        explain(model, x, method="gradcam")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sequence-pooling"):
        explain(model, x, method="pool")
    with pytest.raises(ValueError, match="differs from img_size"):
        explain(model, torch.randn(1, 2, 8, 32, 32))
    with pytest.raises(ValueError, match="interpolation"):
        upsample_map(torch.rand(1, 2, 2), (4, 4), "cubic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cannot place its tokens"):
        token_grid(nn.Linear(2, 2), (4, 4))
