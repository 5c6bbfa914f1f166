"""Behaviour shared by every classifier family (ViT, CCT): activation checkpointing and head replacement."""

from __future__ import annotations

from torch import nn


class ClassifierMixin:
    """Expects ``self.embed_dim``, ``self.head`` and ``self.grad_checkpointing`` on an ``nn.Module``."""

    embed_dim: int
    num_classes: int
    head: nn.Module
    grad_checkpointing: bool

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in the backward pass: less memory, about a third more compute."""
        self.grad_checkpointing = enable

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a fresh one of ``num_classes`` outputs (0 removes it)."""
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            nn.init.trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)
