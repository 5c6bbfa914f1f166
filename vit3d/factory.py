"""``create_model``: build a registered model, optionally with pretrained or inflated weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from vit3d.models import is_model, model_entrypoint, pretrained_tag, split_model_name


def create_model(name: str | None, pretrained: bool | str | Path | None = None, **overrides: Any) -> nn.Module:
    """Build the registered model ``name`` with keyword ``overrides``, optionally with weights.

    Args:
        name: a name from :func:`vit3d.list_models`, optionally with a pretrained tag (``vit_base_patch16_3d.
            augreg_in21k``: the tag picks which weights ``pretrained=True`` loads, as in timm); ``None`` takes the
            architecture from ``pretrained``.
        pretrained: ``True`` for the tag's weights (the preset's default tag without one); a ``name.tag`` string
            from :func:`vit3d.models.list_pretrained`; a checkpoint path (any format
            :func:`vit3d.weights.load_2d` reads, or a vit3d safetensors file); or a Hub name
            (``hf-hub:org/name[@revision]``, or ``org/name`` when no such local path exists). Loaded strictly,
            with a report as ``model.load_report``. ``None`` / ``False``: random init.
        **overrides: constructor keywords; unknown ones raise a ValueError listing the valid keywords.
    """
    if pretrained is None or pretrained is False:
        if name is None:
            raise ValueError("create_model(None) needs pretrained=PATH, a Hub name or a name.tag to take the "
                             "architecture from")
        return model_entrypoint(name)(**overrides)
    from vit3d.weights import create_pretrained  # weights sit above models in the import order

    if pretrained is True or (isinstance(pretrained, str) and "." in pretrained and is_model(pretrained)
                              and split_model_name(pretrained)[1] is not None):
        tagged = pretrained if isinstance(pretrained, str) else name
        if tagged is None:
            raise ValueError("pretrained=True needs a model name (with an optional .tag) to pick the weights")
        tag, cfg = pretrained_tag(tagged)
        base = split_model_name(name if name is not None else tagged)[0]
        overrides.setdefault("num_classes", cfg.num_classes)
        model = create_pretrained(base, cfg.source, **overrides)
        model.load_report.notes.insert(0, f"pretrained tag {split_model_name(tagged)[0]}.{tag}: {cfg.summary}; "
                                          f"{cfg.on_load}")
        return model
    return create_pretrained(name, pretrained, **overrides)
