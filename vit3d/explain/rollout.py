"""Attention maps from recorded attention probabilities: last layer and rollout.

Attention rollout follows Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers",
https://arxiv.org/abs/2005.00928: average the heads of each layer, add the identity for the residual
connection, renormalise every row to sum to one, and multiply the layers together (first layer rightmost).
The joint matrix ``R`` has rows that are distributions over the input tokens; a map is one row of ``R``
(the class token's), a mean of rows (pooled models) or a weighted mean (CCT's sequence pooling).

Everything here is a pure function on tensors ``(B, heads, N, N)``; capture lives in :mod:`vit3d.explain.maps`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from vit3d.errors import ConfigError
from vit3d.layers import check_choice

HeadFusion = Literal["mean", "max", "min"]

__all__ = ["attention_rollout", "fuse_heads", "read_tokens"]


def _check_attn(attn: torch.Tensor, index: int) -> None:
    if attn.ndim != 4 or attn.shape[-1] != attn.shape[-2]:
        raise ConfigError(f"attention {index} has shape {tuple(attn.shape)}; expected (B, heads, N, N) "
                         "probabilities as recorded by vit3d.layers.record_attention")


def fuse_heads(attn: torch.Tensor, head_fusion: HeadFusion = "mean") -> torch.Tensor:
    """Combine the heads of ``(B, heads, N, N)`` probabilities into ``(B, N, N)``.

    ``'mean'`` keeps every row a distribution; ``'max'`` and ``'min'`` (variants from the rollout literature)
    do not, which :func:`attention_rollout` repairs by renormalising.
    """
    check_choice("head_fusion", head_fusion, ("mean", "max", "min"))
    _check_attn(attn, 0)
    if head_fusion == "mean":
        return attn.mean(dim=1)
    return attn.amax(dim=1) if head_fusion == "max" else attn.amin(dim=1)


def attention_rollout(attentions: Sequence[torch.Tensor], *, head_fusion: HeadFusion = "mean",
                      residual: bool = True) -> torch.Tensor:
    """Joint attention ``R = Â_L ... Â_2 Â_1`` with ``Â_l = rownorm(fuse_heads(A_l) + I)``.

    Args:
        attentions: one ``(B, heads, N, N)`` probability tensor per layer, first layer first.
        head_fusion: how heads are combined (the paper averages them).
        residual: add the identity before renormalising (the paper's account of the skip connection).

    Returns:
        ``(B, N, N)`` float32 matrix whose rows are distributions over the input tokens: row ``i`` says how much
        each input token contributes to output token ``i``.
    """
    if len(attentions) == 0:
        raise ConfigError("attention_rollout needs at least one layer's attention; record a forward pass first")
    shape = attentions[0].shape
    rollout: torch.Tensor | None = None
    for i, attn in enumerate(attentions):
        _check_attn(attn, i)
        if attn.shape[0] != shape[0] or attn.shape[-1] != shape[-1]:
            raise ConfigError(f"attention {i} has shape {tuple(attn.shape)} but attention 0 has {tuple(shape)}; "
                             "record one forward pass at a time (clear the list between passes)")
        a = fuse_heads(attn.float(), head_fusion)
        if residual:
            a = a + torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = a / a.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)
        rollout = a if rollout is None else a @ rollout
    assert rollout is not None
    return rollout


def read_tokens(matrix: torch.Tensor, num_prefix_tokens: int, *, pool: Literal["token", "avg"] | torch.Tensor
                ) -> torch.Tensor:
    """Read the relevance of each patch token for the model's pooled output from a ``(B, N, N)`` matrix.

    Args:
        matrix: rollout or a single layer's head-fused attention, ``(B, N, N)``.
        num_prefix_tokens: leading tokens (class token) that are not patches; their columns are dropped.
        pool: ``'token'`` reads row 0 (class-token models), ``'avg'`` averages the patch rows (models that pool
            by the mean token), a ``(B, N - num_prefix_tokens)`` tensor of weights averages the patch rows with
            those weights (CCT's sequence pooling).

    Returns:
        ``(B, N - num_prefix_tokens)`` non-negative relevance per patch token, in the model's token order.
    """
    if matrix.ndim != 3 or matrix.shape[-1] != matrix.shape[-2]:
        raise ConfigError(f"expected a (B, N, N) matrix, got {tuple(matrix.shape)}")
    p = num_prefix_tokens
    if isinstance(pool, torch.Tensor):
        n = matrix.shape[-1] - p
        if pool.shape != (matrix.shape[0], n):
            raise ConfigError(f"pooling weights of shape {tuple(pool.shape)} do not match {matrix.shape[0]} samples "
                             f"of {n} patch tokens")
        return torch.einsum("bi,bij->bj", pool.to(matrix.dtype), matrix[:, p:, p:])
    check_choice("pool", pool, ("token", "avg"))
    if pool == "token":
        if p == 0:
            raise ConfigError("pool='token' needs a class token (num_prefix_tokens >= 1); use pool='avg' for models "
                             "without one")
        return matrix[:, 0, p:]
    return matrix[:, p:, p:].mean(dim=1)
