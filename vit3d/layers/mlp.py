"""Transformer feed-forward block and the activations it takes by name."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from .helpers import check_choice

__all__ = ["ACT_LAYERS", "ActName", "Mlp", "get_act_layer"]

# Exact GELU (torch, timm, HF "gelu") and its tanh approximation (Hendrycks & Gimpel 2016, eq. 4): Flax's default
# ``nn.gelu``, so Google's ViT/ViViT checkpoints, and HF's "gelu_fast" / "gelu_new" / "gelu_pytorch_tanh".
ActName = Literal["gelu", "gelu_tanh"]
ACT_LAYERS: dict[str, Callable[[], nn.Module]] = {
    "gelu": nn.GELU,
    "gelu_tanh": functools.partial(nn.GELU, approximate="tanh"),
}


def get_act_layer(name: ActName) -> Callable[[], nn.Module]:
    """Module factory for the activation ``name`` (one of :data:`ACT_LAYERS`)."""
    check_choice("act_layer", name, tuple(ACT_LAYERS))
    return ACT_LAYERS[name]


class Mlp(nn.Module):
    """Linear -> activation -> dropout -> Linear -> dropout, on tokens ``(B, N, D)``."""

    def __init__(self, in_features: int, hidden_features: int | None = None, out_features: int | None = None, *,
                 act_layer: Callable[[], nn.Module] = nn.GELU, bias: bool = True, drop: float = 0.0) -> None:
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, out_features, bias=bias)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))
