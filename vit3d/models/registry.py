"""Model registry: ``register_model`` entrypoints, ``list_models``, keyword-checked construction, and the
pretrained tags of each preset (timm style: ``vit_base_patch16_3d.augreg_in21k``)."""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass
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
    """Whether ``name`` (optionally ``name.tag`` with a registered tag) names a registered model."""
    base, tag = split_model_name(name)
    return base in _MODELS and (tag is None or tag in _PRETRAINED.get(base, {}))


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    """The registered entrypoint for ``name`` (a ``.tag`` suffix is allowed and checked), or a ValueError
    suggesting the nearest names."""
    name, tag = split_model_name(name)
    if tag is not None and name in _MODELS:
        pretrained_tag(name, tag)
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
    return model


# ---------------------------------------------------------------------- pretrained tags
@dataclass(frozen=True)
class PretrainedTag:
    """Where a preset's pretrained weights come from and what loading them does.

    Attributes:
        source: a Hub name (``hf-hub:org/name``) or path any vit3d loader reads.
        summary: the training data and recipe, with the paper.
        num_classes: classifier size of the weights: the preset's default when they load (pass ``num_classes``
            to get a fresh head of another size, or 0 for none).
        on_load: what happens on load (inflation, positions, dropped parts), as the README table says.
    """

    source: str
    summary: str
    num_classes: int
    on_load: str


_PRETRAINED: dict[str, dict[str, PretrainedTag]] = {}


def split_model_name(name: str) -> tuple[str, str | None]:
    """``'vit_base_patch16_3d.augreg_in21k'`` -> ``('vit_base_patch16_3d', 'augreg_in21k')``; no tag -> ``None``."""
    base, dot, tag = name.partition(".")
    return (base, tag) if dot else (name, None)


def register_pretrained(model_name: str, tag: str, cfg: PretrainedTag) -> None:
    """Attach ``cfg`` to ``model_name`` under ``tag``; the first tag registered is the default."""
    tags = _PRETRAINED.setdefault(model_name, {})
    if tag in tags:
        raise ValueError(f"{model_name}.{tag} is already registered")
    tags[tag] = cfg


def pretrained_tag(name: str, tag: str | None = None) -> tuple[str, PretrainedTag]:
    """``(tag, cfg)`` for ``name`` (``tag`` or the name's own ``.tag``; the default tag when neither).

    Raises:
        ValueError: listing the tags ``name`` has, or saying it has none.
    """
    base, own = split_model_name(name)
    tag = tag or own
    tags = _PRETRAINED.get(base, {})
    if not tags:
        with_tags = sorted(_PRETRAINED)
        raise ValueError(f"{base} has no pretrained weights registered; models with weights: {with_tags} "
                         "(`vit3d models --pretrained`), or pass pretrained=PATH or a Hub name")
    if tag is None:
        tag = next(iter(tags))
    if tag not in tags:
        close = difflib.get_close_matches(tag, list(tags), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"{base} has no pretrained tag {tag!r}{hint}; its tags: {list(tags)}")
    return tag, tags[tag]


def list_pretrained(pattern: str = "*") -> list[str]:
    """``name.tag`` of every registered pretrained tag whose name matches ``pattern``; defaults first."""
    return [f"{n}.{t}" for n in sorted(_PRETRAINED) if fnmatch.fnmatchcase(n, pattern.split(".")[0])
            for t in _PRETRAINED[n] if fnmatch.fnmatchcase(f"{n}.{t}", pattern if "." in pattern else "*")]
