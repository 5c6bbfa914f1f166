"""Where did the model look: attention maps on the input grid for ViT, SimpleViT and CCT, 2D and 3D.

:func:`capture_attention` runs one eval-mode forward pass with :func:`vit3d.layers.record_attention` (only the
attention layers leave SDPA for the explicit path, so the logits are those of the normal forward) and returns
the logits with every layer's probabilities. :func:`explain` turns them into a relevance map per patch token,
``method='last'`` (last layer) or ``'rollout'`` (Abnar & Zuidema 2020, see :mod:`vit3d.explain.rollout`), read
from the class token, from the mean token for pooled models, or through CCT's sequence-pooling weights, and
upsamples it to the input's resolution ``(H, W)``, ``(D, H, W)`` or ``(T, H, W)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from vit3d.errors import ConfigError
from vit3d.layers import check_choice, record_attention

from .rollout import HeadFusion, attention_rollout, fuse_heads, read_tokens

Method = Literal["rollout", "last", "pool"]
POOL_WEIGHTS_METHOD = "forward_with_pool_weights"
"""Name of the method a sequence-pooling model exposes (:class:`vit3d.models.CCT`):
``model.forward_with_pool_weights(x) -> (logits (B, classes), weights (B, N))``, the softmax weights over its
tokens. Any model with this method is explained through its pooling."""

__all__ = ["AttentionCapture", "AttentionMap", "POOL_WEIGHTS_METHOD", "capture_attention", "eval_mode", "explain",
           "token_grid", "upsample_map"]


@dataclass
class AttentionCapture:
    """One forward pass.

    Attributes:
        logits: ``(B, classes)``, the same as ``model(x)``.
        attentions: one ``(B, heads, N, N)`` probability tensor per attention layer, in execution order.
        pool_weights: ``(B, N)`` sequence-pooling weights for models that pool that way (CCT), else ``None``.
    """

    logits: torch.Tensor
    attentions: list[torch.Tensor]
    pool_weights: torch.Tensor | None = None


@dataclass
class AttentionMap:
    """An explanation of one batch.

    Attributes:
        tokens: relevance per patch token on the token grid, ``(B, *grid)``.
        map: ``tokens`` upsampled to the input's spatial size, ``(B, *spatial)``.
        logits: the model's logits for the batch, ``(B, classes)``.
        method: ``'rollout'``, ``'last'`` or ``'pool'``.
        read_from: ``'token'`` (class token), ``'avg'`` (mean token) or ``'sequence_pool'`` (CCT).
    """

    tokens: torch.Tensor
    map: torch.Tensor
    logits: torch.Tensor
    method: str
    read_from: str


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode for the block (no dropout, no patch dropping), then restore each flag."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


def capture_attention(model: nn.Module, x: torch.Tensor) -> AttentionCapture:
    """Run ``model(x)`` once in eval mode without gradients, recording every attention layer's probabilities.

    For a sequence-pooling model the same pass also returns its pooling weights (see :data:`POOL_WEIGHTS_METHOD`).
    """
    pooled = getattr(model, POOL_WEIGHTS_METHOD, None)
    weights = None
    with eval_mode(model), torch.no_grad(), record_attention(model) as maps:
        if callable(pooled):
            logits, weights = pooled(x)
            weights = weights.reshape(weights.shape[0], -1).float()
        else:
            logits = model(x)
    return AttentionCapture(logits=logits, attentions=list(maps), pool_weights=weights)


def token_grid(model: nn.Module, spatial: Sequence[int]) -> tuple[int, ...]:
    """Token grid the model uses for an input of spatial size ``spatial`` (dynamic sizes included).

    Models with a :class:`vit3d.layers.PatchEmbed` answer through ``patch_embed.grid_for``; models with another
    tokenizer (CCT's convolutional one) through their own ``grid_for(spatial)``.
    """
    embed = getattr(model, "patch_embed", None)
    if embed is not None and callable(getattr(embed, "grid_for", None)):
        return tuple(embed.grid_for(spatial))
    if callable(getattr(model, "grid_for", None)):
        return tuple(model.grid_for(spatial))
    raise ConfigError(f"{type(model).__name__} exposes neither patch_embed.grid_for(spatial) nor grid_for(spatial); "
                     "cannot place its tokens on the input grid")


def upsample_map(tokens: torch.Tensor, size: Sequence[int], interpolation: Literal["linear", "nearest"] = "linear"
                 ) -> torch.Tensor:
    """Resize a token-grid map ``(B, *grid)`` to ``(B, *size)``.

    ``'linear'`` is bilinear in 2D and trilinear in 3D with ``align_corners=False``, so the value of each token sits
    at the centre of its patch; ``'nearest'`` paints each patch with its token's value.
    """
    check_choice("interpolation", interpolation, ("linear", "nearest"))
    size = tuple(int(s) for s in size)
    if tokens.ndim - 1 != len(size):
        raise ConfigError(f"map of shape {tuple(tokens.shape)} has {tokens.ndim - 1} spatial dims but size {size} "
                         f"has {len(size)}")
    if interpolation == "nearest":
        return F.interpolate(tokens[:, None].float(), size=size, mode="nearest")[:, 0]
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
    return F.interpolate(tokens[:, None].float(), size=size, mode=mode, align_corners=False)[:, 0]


def explain(model: nn.Module, x: torch.Tensor, *, method: Method = "rollout", head_fusion: HeadFusion = "mean",
            interpolation: Literal["linear", "nearest"] = "linear") -> AttentionMap:
    """Attention map of ``model`` for the batch ``x`` ``(B, C, *spatial)``, at the input's resolution.

    Args:
        model: a vit3d ViT / SimpleViT (class token or mean pooling) or a sequence-pooling model such as CCT
            (any model with a ``forward_with_pool_weights(x)`` method). CCT's tokens overlap, so its map places
            each token at the centre of its cell of the token grid stretched over the input.
        x: input batch, preprocessed as for evaluation.
        method: ``'rollout'`` (attention rollout through every layer), ``'last'`` (last layer only) or ``'pool'``
            (CCT's sequence-pooling weights themselves).
        head_fusion: how heads are combined (``'mean'`` as in the paper).
        interpolation: upsampling of the token grid to the input size.

    Returns:
        An :class:`AttentionMap`; ``map`` has shape ``(B, *x.shape[2:])``.
    """
    check_choice("method", method, ("rollout", "last", "pool"))
    grid = token_grid(model, x.shape[2:])
    capture = capture_attention(model, x)
    weights = capture.pool_weights
    prefix = int(getattr(model, "num_prefix_tokens", 0))
    if weights is not None:
        if weights.shape[1] == _n(grid) + prefix:
            weights = weights[:, prefix:]  # weights given over all tokens: keep the patch tokens' share
        pool: str | torch.Tensor = weights
        read_from = "sequence_pool"
    else:
        pool = "token" if getattr(model, "global_pool", "avg") == "token" and prefix > 0 else "avg"
        read_from = str(pool)
    if method == "pool":
        if weights is None:
            raise ConfigError(f"method='pool' needs a sequence-pooling model (a {POOL_WEIGHTS_METHOD}(x) method); "
                             f"{type(model).__name__} has none, use method='rollout' or 'last'")
        relevance = weights
    else:
        matrix = (attention_rollout(capture.attentions, head_fusion=head_fusion) if method == "rollout"
                  else fuse_heads(capture.attentions[-1].float(), head_fusion))
        n_patches = matrix.shape[-1] - prefix
        if n_patches != _n(grid):
            raise ConfigError(f"{n_patches} patch tokens do not fill the token grid {grid}; explain needs every patch "
                             "token (patch dropping is a training-time option and is off in eval mode)")
        relevance = read_tokens(matrix, prefix, pool=pool)
    tokens = relevance.reshape(x.shape[0], *grid)
    return AttentionMap(tokens=tokens, map=upsample_map(tokens, x.shape[2:], interpolation), logits=capture.logits,
                        method=method, read_from=read_from)


def _n(grid: Sequence[int]) -> int:
    out = 1
    for g in grid:
        out *= int(g)
    return out
