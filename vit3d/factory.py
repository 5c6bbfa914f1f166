"""``create_model``: build a registered model, optionally with pretrained or inflated weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from vit3d.models import model_entrypoint


def create_model(name: str | None, pretrained: str | Path | None = None, **overrides: Any) -> nn.Module:
    """Build the registered model ``name`` with keyword ``overrides``.

    Args:
        name: a name from :func:`vit3d.list_models`; ``None`` takes the architecture from ``pretrained``.
        pretrained: a checkpoint path (any format :func:`vit3d.weights.load_2d` reads, or a vit3d
            safetensors file written by ``vit3d inflate``); loaded strictly.
        **overrides: constructor keywords; unknown ones raise a ValueError listing the valid keywords.
    """
    if pretrained is not None:
        from vit3d.weights import create_pretrained  # weights sit above models in the import order

        return create_pretrained(name, pretrained, **overrides)
    if name is None:
        raise ValueError("create_model(None) needs pretrained=PATH to take the architecture from")
    return model_entrypoint(name)(**overrides)
