"""Model registry: ``register_model`` entrypoints, ``list_models`` and keyword-checked construction."""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from vit3d.layers.helpers import check_keywords

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a preset entrypoint under its function name."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered by {_MODELS[name].__module__}")
    _MODELS[name] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of registered models matching the shell-style ``pattern`` (e.g. ``"vit_*_3d"``)."""
    return sorted(n for n in _MODELS if fnmatch.fnmatchcase(n, pattern))


def is_model(name: str) -> bool:
    return name in _MODELS


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    """The registered entrypoint for ``name``, or a ValueError suggesting the nearest names."""
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see vit3d.list_models() or `vit3d models`"
        raise ValueError(f"unknown model {name!r}{hint}")
    return _MODELS[name]


def build_model(cls: type[nn.Module], defaults: dict[str, Any], overrides: dict[str, Any],
                name: str | None = None) -> nn.Module:
    """Instantiate ``cls`` with ``defaults`` updated by ``overrides``, rejecting keywords ``cls`` does not take."""
    params = inspect.signature(cls.__init__).parameters
    valid = [p for p in params if p != "self" and params[p].kind not in (inspect.Parameter.VAR_KEYWORD,
                                                                         inspect.Parameter.VAR_POSITIONAL)]
    check_keywords(name or cls.__name__, overrides, valid)
    model = cls(**{**defaults, **overrides})
    model.model_name = name  # type: ignore[assignment]
    # The constructor keywords, kept like timm's pretrained_cfg: typed preset builders read their defaults here.
    model.model_args = {**defaults, **overrides}  # type: ignore[assignment]
    return model
