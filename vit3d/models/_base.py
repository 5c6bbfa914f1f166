"""The spine every classifier family (ViT, CCT) shares: constructor checks, the block stack with its stochastic
depth schedule, the (optionally checkpointed) block loop, and head replacement. A family adds only its
tokenizer, positions and pooling."""

from __future__ import annotations

import torch
import torch.utils.checkpoint
from torch import nn

from vit3d.errors import ConfigError
from vit3d.layers import Block, get_act_layer
from vit3d.layers.mlp import ActName

__all__ = ["ClassifierMixin", "build_blocks", "check_core", "drop_path_rates"]


def check_core(*, embed_dim: int, depth: int, num_heads: int, num_classes: int, in_chans: int) -> None:
    """Validate the keywords every transformer classifier takes, with the numbers and a fix."""
    if embed_dim < 1 or num_heads < 1 or embed_dim % num_heads:
        raise ConfigError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}; pick num_heads "
                         f"among the divisors of {embed_dim} (e.g. {max(embed_dim // 64, 1)} heads of 64)")
    if depth < 1:
        raise ConfigError(f"depth must be at least 1, got {depth}")
    if num_classes < 0 or in_chans < 1:
        raise ConfigError(f"num_classes ({num_classes}) must be >= 0 and in_chans ({in_chans}) >= 1")


def drop_path_rates(drop_path_rate: float, depth: int) -> list[float]:
    """Stochastic depth rising linearly from 0 to ``drop_path_rate`` over the blocks (Huang et al. 2016);
    python floats, so building on the meta device needs no tensor."""
    return [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]


def build_blocks(*, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float, qkv_bias: bool,
                 proj_drop_rate: float, attn_drop_rate: float, drop_path_rate: float, norm_eps: float,
                 init_values: float | None = None, act_layer: ActName = "gelu") -> nn.Sequential:
    """``depth`` pre-norm :class:`~vit3d.layers.Block` s under the timm key names ``blocks.{i}``."""
    act = get_act_layer(act_layer)
    return nn.Sequential(*[
        Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, proj_drop=proj_drop_rate,
              attn_drop=attn_drop_rate, init_values=init_values, drop_path=rate, norm_eps=norm_eps, act_layer=act)
        for rate in drop_path_rates(drop_path_rate, depth)
    ])


class ClassifierMixin:
    """Expects ``self.blocks``, ``self.embed_dim``, ``self.head`` and ``self.grad_checkpointing`` on an
    ``nn.Module``."""

    blocks: nn.Sequential
    embed_dim: int
    num_classes: int
    head: nn.Module
    grad_checkpointing: bool
    training: bool

    def forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """Run tokens ``(B, N, D)`` through the blocks, recomputing activations in the backward pass when
        :meth:`set_grad_checkpointing` is on (training with gradients only)."""
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            for block in self.blocks:
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            return x
        return self.blocks(x)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in the backward pass: less memory, about a third more compute."""
        self.grad_checkpointing = enable

    def set_recompute_norm_act(self, enable: bool = True) -> None:
        """Recompute norm and GELU outputs in the backward pass rather than save them (the default: a training
        step's peak memory -33 % to -41 % on CPU, one extra norm and GELU forward per block; see
        :mod:`vit3d.layers.recompute`). ``False`` saves them as plain ``nn.LayerNorm`` / ``nn.GELU`` modules would."""
        self.recompute_norm_act = enable
        self._apply_recompute()

    def _apply_recompute(self) -> None:
        # Checkpointed blocks recompute too: the checkpoint's backward reruns one block at a time, and a lean
        # block is what it holds then (the recomputing functions pass every tensor through the checkpoint's hooks).
        enable = getattr(self, "recompute_norm_act", True)
        for block in self.blocks:
            block.recompute_norm_act = enable

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a fresh one of ``num_classes`` outputs (0 removes it)."""
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            nn.init.trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)
