"""Typed network builders for configs: every registry preset as a class with its own defaults.

``ClassificationModule(net=...)`` takes any ``nn.Module``; in YAML it is a ``class_path`` with typed ``init_args``,
so ``--print_config`` shows every key with its default and type, and a misspelt key fails with a "did you mean".
A registered preset is one line::

    model:
      net: pipelines.networks.vit_tiny_patch16_3d       # preset defaults, all keys typed
    model:
      net:
        class_path: pipelines.networks.vit_small_patch16_3d
        init_args: {patch_size: [16, 16, 16], drop_path_rate: 0.1, pretrained: vit_s_3d.safetensors}
    model:
      net:
        class_path: vit3d.models.VisionTransformer     # or the family class itself
        init_args: {embed_dim: 128, depth: 4, num_heads: 4}

Each preset class (created on first access, so importing this module builds nothing) subclasses its family
(:class:`vit3d.models.VisionTransformer` or :class:`vit3d.models.CCT`), takes exactly the family's keywords with the
preset's values as defaults, plus ``pretrained`` (weights to start from, loaded strictly, inflated when 2D).
:class:`Pretrained` takes the whole architecture from a ``vit3d inflate`` file.
"""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from vit3d.layers.helpers import check_keywords
from vit3d.models import CCT, VisionTransformer, is_model, list_models, model_entrypoint

__all__ = ["Pretrained", "network_config", "preset_class"]

_FAMILIES: tuple[type[nn.Module], ...] = (VisionTransformer, CCT)


def _preset_args(name: str) -> tuple[type[nn.Module], dict[str, Any]]:
    """The family class and constructor keywords of preset ``name`` (built on the meta device: no memory)."""
    with torch.device("meta"):
        model = model_entrypoint(name)()
    family = next(f for f in _FAMILIES if isinstance(model, f))
    return family, dict(model.model_args)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _load_pretrained(net: nn.Module, name: str | None, pretrained: str, kwargs: dict[str, Any]) -> None:
    """Load ``pretrained`` into ``net`` strictly through :func:`vit3d.create_model` (which inflates 2D files)."""
    import vit3d

    source = vit3d.create_model(name, pretrained=pretrained, **kwargs)
    net.load_state_dict(source.state_dict(), strict=True)
    net.load_report = getattr(source, "load_report", None)  # type: ignore[assignment]


def preset_class(name: str) -> type[nn.Module]:
    """The typed builder class of registered preset ``name`` (cached; ``pipelines.networks.<name>``)."""
    cached = globals().get(name)
    if isinstance(cached, type):
        return cached
    family, defaults = _preset_args(name)
    family_params = list(inspect.signature(family.__init__).parameters.values())[1:]
    # Real types, not the family module's postponed strings (this module's globals cannot resolve them).
    hints = typing.get_type_hints(family.__init__)
    family_params = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in family_params]
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    # Lists, not tuples, as defaults: a config dump writes lists, and they must parse back to the same value.
    params += [p.replace(kind=inspect.Parameter.KEYWORD_ONLY, default=_plain(defaults.get(p.name, p.default)))
               for p in family_params]
    params.append(inspect.Parameter("pretrained", inspect.Parameter.KEYWORD_ONLY, default=None,
                                    annotation=Optional[str]))  # noqa: UP045 - a runtime type

    def __init__(self: nn.Module, **kwargs: Any) -> None:
        check_keywords(name, kwargs, [p.name for p in params[1:]])
        bound = init_signature.bind(self, **kwargs)
        bound.apply_defaults()
        args = dict(bound.arguments)
        args.pop("self")
        pretrained = args.pop("pretrained")
        family.__init__(self, **args)
        self.model_name = name
        self.model_args = args
        if pretrained is not None:
            _load_pretrained(self, name, pretrained, args)

    init_signature = inspect.Signature(params, return_annotation=None)
    __init__.__signature__ = init_signature  # type: ignore[attr-defined]
    __init__.__qualname__ = f"{name}.__init__"
    family_args = (inspect.getdoc(family) or "").partition("Args:")[2].rstrip()
    doc = (f"Preset ``{name}`` of :class:`{family.__name__}`: its keywords, the preset's values as defaults.\n\n"
           f"Args:{family_args}\n"
           "    pretrained: weights to start from (2D checkpoints are inflated), loaded strictly.\n")
    cls = type(name, (family,), {"__init__": __init__, "__module__": __name__, "__doc__": doc})
    globals()[name] = cls
    return cls


def __getattr__(name: str) -> Any:
    """``pipelines.networks.<preset>`` imports the preset's builder class (PEP 562 lazy attribute)."""
    if is_model(name):
        return preset_class(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(list_models()))


class Pretrained(VisionTransformer):
    """A ViT whose architecture and weights come from a ``vit3d inflate`` (or any readable) checkpoint.

    Args:
        path: the checkpoint (a vit3d safetensors file, or a 2D timm/HF/torchvision/npz file).
        num_classes: classifier outputs (a new head when it differs from the file's); linked from the data.
        in_chans: input channels (the patch kernel is adapted when it differs); linked from the data.
        img_size: input size (the position grid is resampled when it differs); linked from the data.
        drop_path_rate: stochastic depth for fine-tuning.
        drop_rate: dropout before the head.
    """

    def __init__(self, path: str, *, num_classes: int | None = None, in_chans: int | None = None,
                 img_size: int | list[int] | None = None, drop_path_rate: float = 0.0,
                 drop_rate: float = 0.0) -> None:
        import vit3d
        from vit3d.weights import vit_config
        from vit3d.weights.hub import parse_hub_name

        if not Path(path).is_file() and parse_hub_name(path) is None:
            from vit3d.errors import MissingInputError

            raise MissingInputError("pretrained checkpoint not found", file=path,
                                    fix="give the file written by `vit3d inflate` or `vit3d adapt`, or a Hub name "
                                        "(hf-hub:org/name) in model.net.init_args.path")
        given = {"num_classes": num_classes, "in_chans": in_chans,
                 "img_size": tuple(img_size) if isinstance(img_size, list) else img_size}
        source = vit3d.create_model(None, pretrained=path, **{k: v for k, v in given.items() if v is not None},
                                    drop_path_rate=drop_path_rate, drop_rate=drop_rate)
        args = {**vit_config(source), "drop_path_rate": drop_path_rate, "drop_rate": drop_rate}
        super().__init__(**args)
        self.model_args = args
        self.load_state_dict(source.state_dict(), strict=True)
        self.load_report = getattr(source, "load_report", None)


def network_config(net: nn.Module) -> dict[str, Any] | None:
    """``{"class_path", "init_args"}`` that rebuilds ``net``'s architecture without any weights file.

    Used to store a network in a training checkpoint so that inference needs nothing but the checkpoint: preset
    builders drop ``pretrained``, :class:`Pretrained` becomes the plain family class with the file's architecture.
    ``None`` for a network vit3d cannot describe (the saved config is then used as given).
    """
    args = getattr(net, "model_args", None)
    if args is None:
        return None
    family = next((f for f in _FAMILIES if isinstance(net, f)), None)
    if family is None:
        return None
    cls = type(net) if type(net).__module__ == __name__ and not isinstance(net, Pretrained) else family
    init_args = {k: _plain(v) for k, v in args.items()}
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": init_args}
