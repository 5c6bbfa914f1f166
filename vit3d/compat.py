"""A front door for vit-pytorch users: its constructor keywords, vit3d's models.

``ViT``, ``SimpleViT`` and ``CCT`` take the keywords that lucidrains' vit-pytorch documents for its 2D and 3D
models (``vit_pytorch.ViT``, ``vit_pytorch.vit_3d.ViT``, ``vit_pytorch.simple_vit_3d.SimpleViT``,
``vit_pytorch.cct_3d.CCT``, ...) and return the canonical vit3d model: a :class:`~vit3d.models.VisionTransformer`
or a :class:`~vit3d.models.CCT`, with ``forward_features``, ``num_classes=0`` backbones, registry-wide tests and
everything else vit3d offers. One function serves 2D and 3D: ``frames`` (ViT) or ``num_frames`` (CCT) makes a
3D model. :class:`Recorder` mirrors ``vit_pytorch.recorder.Recorder``. Porting code means changing the import::

    from vit3d.compat import ViT, Recorder   # was: from vit_pytorch import ViT

Unknown keywords raise a ValueError that suggests the nearest valid one. Where vit3d's design differs the
shapes and the keywords are the same, but the parameterisation is vit3d's (no vit-pytorch checkpoint loads):

- attention heads are ``dim / heads`` wide (vit3d's fused qkv); vit-pytorch's ``dim_head`` defaults to 64
  independently of ``dim``. Passing a ``dim_head`` other than ``dim // heads`` raises a ValueError.
- patches are embedded by a strided conv (a linear map of the flattened patch, like vit-pytorch's
  ``Linear``) without vit-pytorch's extra LayerNorms around it.
- CCT's ``positional_embedding='sine'`` is vit3d's sin-cos embedding of the token grid (per axis), and its
  blocks are vit3d's pre-norm blocks.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import nn

from vit3d.errors import ConfigError
from vit3d.layers import Attention, check_choice, record_attention
from vit3d.layers.helpers import check_keywords
from vit3d.models import CCT as _CCT
from vit3d.models import VisionTransformer

__all__ = ["CCT", "Recorder", "SimpleViT", "ViT", "cct_2", "cct_4", "cct_6", "cct_7", "cct_8", "cct_14", "cct_16"]

_F = TypeVar("_F", bound=Callable[..., nn.Module])


def _strict_keywords(fn: _F) -> _F:
    """Reject keywords ``fn`` does not take with a ValueError naming the nearest valid one."""
    valid = [name for name, p in inspect.signature(fn).parameters.items() if p.kind is p.KEYWORD_ONLY]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> nn.Module:
        if args:
            raise TypeError(f"{fn.__name__}() takes keyword arguments only, as in vit-pytorch; got {len(args)} "
                            "positional argument(s)")
        check_keywords(f"vit3d.compat.{fn.__name__}", kwargs, valid)
        return fn(**kwargs)

    return wrapper  # type: ignore[return-value]


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    """vit-pytorch's ``pair``: an int or an ``(height, width)`` pair."""
    if isinstance(value, int):
        return value, value
    out = tuple(int(v) for v in value)
    if len(out) != 2:
        raise ConfigError(f"{name} {tuple(value)} must be an int or a (height, width) pair")
    return out  # type: ignore[return-value]


def _mlp_ratio(mlp_dim: int, dim: int) -> float:
    """``mlp_dim / dim``, nudged so that vit3d's ``int(dim * mlp_ratio)`` gives back exactly ``mlp_dim``."""
    ratio = mlp_dim / dim
    return ratio if int(dim * ratio) == mlp_dim else (mlp_dim + 0.5) / dim


def _vit_geometry(image_size: int | Sequence[int], patch_size: int | Sequence[int] | None,
                  image_patch_size: int | Sequence[int] | None, frames: int | None,
                  frame_patch_size: int | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(img_size, patch_size)`` for vit3d from the 2D (``patch_size``) or 3D (``frames`` ...) keywords."""
    if (patch_size is None) == (image_patch_size is None):
        raise ConfigError("give exactly one of patch_size (vit-pytorch's 2D keyword) and image_patch_size (its 3D "
                         f"keyword); got patch_size={patch_size}, image_patch_size={image_patch_size}")
    if (frames is None) != (frame_patch_size is None):
        raise ConfigError(f"a 3D ViT needs both frames and frame_patch_size; got frames={frames}, "
                         f"frame_patch_size={frame_patch_size}")
    img = _pair(image_size, "image_size")
    patch = _pair(patch_size if patch_size is not None else image_patch_size, "patch_size")  # type: ignore[arg-type]
    if frames is None:
        return img, patch
    return (frames, *img), (frame_patch_size, *patch)  # type: ignore[return-value]


def _check_dim_head(dim: int, heads: int, dim_head: int | None) -> None:
    if dim_head is not None and dim_head * heads != dim:
        raise ConfigError(f"dim_head={dim_head} with heads={heads} gives an attention width of {dim_head * heads}, "
                         f"but vit3d's attention is dim={dim} wide (dim_head = dim / heads = {dim / heads:g}); "
                         f"omit dim_head, or choose heads = dim / dim_head = {dim / dim_head:g}")


@_strict_keywords
def ViT(*, image_size: int | Sequence[int], num_classes: int, dim: int, depth: int, heads: int, mlp_dim: int,
        patch_size: int | Sequence[int] | None = None, image_patch_size: int | Sequence[int] | None = None,
        frames: int | None = None, frame_patch_size: int | None = None, pool: str = "cls", channels: int = 3,
        dim_head: int | None = None, dropout: float = 0.0, emb_dropout: float = 0.0) -> VisionTransformer:
    """vit-pytorch's ``ViT`` (2D, ``patch_size``) and ``vit_3d.ViT`` (``frames``, ``image_patch_size``,
    ``frame_patch_size``) as a :class:`~vit3d.models.VisionTransformer`.

    ``pool='cls'`` reads a class token, ``'mean'`` averages the tokens without one; ``dropout`` applies to the
    attention probabilities and after the attention and MLP projections; ``emb_dropout`` after the positions.
    Input is ``(B, channels, H, W)`` or ``(B, channels, frames, H, W)``.
    """
    check_choice("pool", pool, ("cls", "mean"))
    _check_dim_head(dim, heads, dim_head)
    img_size, patch = _vit_geometry(image_size, patch_size, image_patch_size, frames, frame_patch_size)
    return VisionTransformer(
        img_size, patch, channels, num_classes, spatial_dims=len(img_size), embed_dim=dim, depth=depth,
        num_heads=heads, mlp_ratio=_mlp_ratio(mlp_dim, dim), qkv_bias=False, class_token=pool == "cls",
        global_pool="token" if pool == "cls" else "avg", fc_norm=False, norm_eps=1e-5, pos_drop_rate=emb_dropout,
        proj_drop_rate=dropout, attn_drop_rate=dropout)


@_strict_keywords
def SimpleViT(*, image_size: int | Sequence[int], num_classes: int, dim: int, depth: int, heads: int,
              mlp_dim: int, patch_size: int | Sequence[int] | None = None,
              image_patch_size: int | Sequence[int] | None = None, frames: int | None = None,
              frame_patch_size: int | None = None, channels: int = 3,
              dim_head: int | None = None) -> VisionTransformer:
    """vit-pytorch's ``SimpleViT`` and ``simple_vit_3d.SimpleViT``: fixed sin-cos positions, mean pooling, no
    class token, no qkv bias, as a :class:`~vit3d.models.VisionTransformer`."""
    _check_dim_head(dim, heads, dim_head)
    img_size, patch = _vit_geometry(image_size, patch_size, image_patch_size, frames, frame_patch_size)
    return VisionTransformer(
        img_size, patch, channels, num_classes, spatial_dims=len(img_size), embed_dim=dim, depth=depth,
        num_heads=heads, mlp_ratio=_mlp_ratio(mlp_dim, dim), qkv_bias=False, class_token=False, global_pool="avg",
        fc_norm=False, pos_embed="sincos", norm_eps=1e-5)


_POSITIONS = {"learnable": "learn", "sine": "sincos", "none": "none"}


@_strict_keywords
def CCT(*, img_size: int | Sequence[int] = 224, num_frames: int | None = None, embedding_dim: int = 768,
        n_input_channels: int = 3, n_conv_layers: int = 1, kernel_size: int = 7, stride: int = 2, padding: int = 3,
        pooling_kernel_size: int = 3, pooling_stride: int = 2, pooling_padding: int = 1,
        frame_kernel_size: int | None = None, frame_stride: int = 1, frame_padding: int | None = None,
        frame_pooling_kernel_size: int = 1, frame_pooling_stride: int = 1,
        frame_pooling_padding: int | None = None, num_layers: int = 12, num_heads: int = 12,
        mlp_ratio: float = 4.0, num_classes: int = 1000, positional_embedding: str = "sine",
        dropout_rate: float = 0.0, attention_dropout: float = 0.1, stochastic_depth_rate: float = 0.1) -> _CCT:
    """vit-pytorch's ``cct.CCT`` and ``cct_3d.CCT`` as a :class:`~vit3d.models.CCT`.

    ``num_frames`` (or any ``frame_*`` keyword) makes a 3D model for ``(B, C, frames, H, W)``; the frame axis
    gets its own kernel (``frame_kernel_size``, default 3), stride, padding (default ``kernel // 2``) and
    pooling (default none), as in vit-pytorch. ``positional_embedding`` is ``'learnable'``, ``'sine'`` or
    ``'none'``.
    """
    check_choice("positional_embedding", positional_embedding, tuple(_POSITIONS))
    frame_given = (frame_kernel_size is not None or frame_padding is not None or frame_pooling_padding is not None
                   or (frame_stride, frame_pooling_kernel_size, frame_pooling_stride) != (1, 1, 1))
    if frame_given and num_frames is None:
        raise ConfigError("frame_* keywords configure a 3D CCT; pass num_frames too (vit-pytorch's default was 8)")
    img = _pair(img_size, "img_size")
    geometry: dict[str, Any] = dict(kernel_size=kernel_size, stride=stride, padding=padding,
                                    pooling_kernel_size=pooling_kernel_size, pooling_stride=pooling_stride,
                                    pooling_padding=pooling_padding)
    if num_frames is not None:
        fk = 3 if frame_kernel_size is None else frame_kernel_size
        frame_axis = dict(kernel_size=fk, stride=frame_stride, padding=fk // 2 if frame_padding is None else
                          frame_padding, pooling_kernel_size=frame_pooling_kernel_size,
                          pooling_stride=frame_pooling_stride,
                          pooling_padding=frame_pooling_kernel_size // 2 if frame_pooling_padding is None
                          else frame_pooling_padding)
        geometry = {k: (frame_axis[k], v, v) for k, v in geometry.items()}
        img = (num_frames, *img)  # type: ignore[assignment]
    return _CCT(img, n_input_channels, num_classes, spatial_dims=len(img), embed_dim=embedding_dim,
                depth=num_layers, num_heads=num_heads, mlp_ratio=mlp_ratio, n_conv_layers=n_conv_layers,
                pos_embed=_POSITIONS[positional_embedding], pos_drop_rate=dropout_rate,  # type: ignore[arg-type]
                proj_drop_rate=dropout_rate, attn_drop_rate=attention_dropout,
                drop_path_rate=stochastic_depth_rate, **geometry)


def _cct_size(name: str, num_layers: int, num_heads: int, mlp_ratio: float,
              embedding_dim: int) -> Callable[..., _CCT]:
    """vit-pytorch's ``cct_{n}`` helpers: a model size, kernel 3 by default, stride and padding from the kernel."""

    def build(*, kernel_size: int = 3, stride: int | None = None, padding: int | None = None, **kwargs: Any) -> _CCT:
        stride = max(1, kernel_size // 2 - 1) if stride is None else stride
        padding = max(1, kernel_size // 2) if padding is None else padding
        return CCT(num_layers=num_layers, num_heads=num_heads, mlp_ratio=mlp_ratio, embedding_dim=embedding_dim,
                   kernel_size=kernel_size, stride=stride, padding=padding, **kwargs)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = (f"CCT with {num_layers} layers, {num_heads} heads, MLP ratio {mlp_ratio:g}, width "
                     f"{embedding_dim}; other keywords as :func:`CCT` (unknown ones raise).")
    return build


cct_2 = _cct_size("cct_2", 2, 2, 1.0, 128)
cct_4 = _cct_size("cct_4", 4, 2, 1.0, 128)
cct_6 = _cct_size("cct_6", 6, 4, 2.0, 256)
cct_7 = _cct_size("cct_7", 7, 4, 2.0, 256)
cct_8 = _cct_size("cct_8", 8, 4, 2.0, 256)
cct_14 = _cct_size("cct_14", 14, 6, 3.0, 384)
cct_16 = _cct_size("cct_16", 16, 6, 3.0, 384)


class Recorder(nn.Module):
    """vit-pytorch's ``Recorder``: ``Recorder(model)(x)`` returns ``(preds, attns)``.

    ``attns`` is ``(batch, layers, heads, tokens, tokens)``, the post-softmax attention of every vit3d
    :class:`~vit3d.layers.Attention` layer in execution order, detached and moved to ``device`` (default: the
    input's). Built on :func:`vit3d.layers.record_attention`, so the wrapped model is not modified; ``eject()``
    returns it. In new code prefer ``with record_attention(model) as maps: model(x)``.
    """

    def __init__(self, model: nn.Module, device: torch.device | str | None = None) -> None:
        super().__init__()
        if not any(isinstance(m, Attention) for m in model.modules()):
            raise ConfigError(f"{type(model).__name__} has no vit3d Attention layers to record; Recorder wraps "
                             "vit3d models such as those built by vit3d.compat.ViT")
        self.model = model
        self.device = device
        self.ejected = False

    @property
    def vit(self) -> nn.Module:
        """The wrapped model, under vit-pytorch's attribute name."""
        return self.model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.ejected:
            raise RuntimeError("this Recorder has been ejected; wrap the model in a new Recorder to record again")
        with record_attention(self.model) as maps:
            preds = self.model(x)
        device = self.device if self.device is not None else x.device
        return preds, torch.stack([m.detach().to(device) for m in maps], dim=1)

    def eject(self) -> nn.Module:
        """Discard the wrapper and return the plain model."""
        self.ejected = True
        return self.model

