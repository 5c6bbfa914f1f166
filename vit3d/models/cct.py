"""Compact Convolutional Transformer for images, volumes and clips, one class for any number of spatial dims.

- CCT: Hassani et al. 2021, "Escaping the Big Data Paradigm with Compact Transformers",
  https://arxiv.org/abs/2104.05704 (official code: SHI-Labs/Compact-Transformers).

A small stack of ``conv -> ReLU -> max-pool`` layers replaces patchification, so neighbouring pixels overlap and
the model needs far less data than a ViT; the transformer blocks are :class:`vit3d.layers.Block`; sequence
pooling (a learned softmax weighting of the output tokens) replaces the class token. Kernel, stride and padding
sizes take one int or one int per axis, so a 3D tokenizer with a different kernel along the first axis (the
``frame_kernel_size`` of vit-pytorch's 3D CCT) is ``kernel_size=(3, 7, 7), stride=(1, 2, 2)``.

Differences from the official code, on purpose: the blocks are vit3d's pre-norm blocks (the official layer
normalises the residual stream after attention), sin-cos positions are the N-d grid embedding of
:func:`vit3d.layers.sincos_pos_embed` instead of a 1D sequence embedding, and parameter names follow the vit3d
vocabulary (``tokenizer``, ``pos_embed``, ``blocks``, ``norm``, ``attention_pool``, ``head``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

from vit3d.layers import check_choice, infer_spatial_dims, resample_pos_embed, sincos_pos_embed
from vit3d.layers.helpers import CONV, check_input_shape, to_ntuple

from ._base import ClassifierMixin, build_blocks, check_core
from .registry import build_model, register_model

__all__ = ["CCT", "ConvTokenizer"]

_POOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}


def _non_negative(value: int | Sequence[int], n: int, name: str) -> tuple[int, ...]:
    """Like :func:`to_ntuple` but for paddings, which may be zero."""
    out = (int(value),) * n if isinstance(value, int) else tuple(int(v) for v in value)
    if len(out) != n:
        raise ValueError(f"{name} {out} has {len(out)} entries but {n} spatial dims were asked for; "
                         f"give {n} sizes or a single int")
    if any(v < 0 for v in out):
        raise ValueError(f"{name} {out} must be >= 0 along every axis")
    return out


def _out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a conv or max-pool (floor mode) along one axis; <= 0 when the input is too small."""
    return (size + 2 * padding - kernel) // stride + 1 if size + 2 * padding >= kernel else 0


class ConvTokenizer(nn.Module):
    """``n_conv_layers`` of ``ConvNd -> ReLU -> MaxPoolNd`` mapping ``(B, C, *spatial)`` to tokens ``(B, N, D)``.

    Args:
        in_chans: input channels.
        embed_dim: channels of the last conv, the token width.
        spatial_dims: 1, 2 or 3.
        n_conv_layers: number of conv + ReLU + max-pool stages.
        kernel_size, stride, padding: conv geometry, one int or one per axis.
        pooling_kernel_size, pooling_stride, pooling_padding: max-pool geometry; a kernel of 1 along an axis
            with stride 1 and padding 0 leaves that axis unpooled.
        conv_channels: width of the intermediate convs (64 in the paper).
        conv_bias: bias on the convs (off in the paper).
    """

    def __init__(self, in_chans: int, embed_dim: int, *, spatial_dims: int, n_conv_layers: int = 1,
                 kernel_size: int | Sequence[int] = 7, stride: int | Sequence[int] = 2,
                 padding: int | Sequence[int] = 3, pooling_kernel_size: int | Sequence[int] = 3,
                 pooling_stride: int | Sequence[int] = 2, pooling_padding: int | Sequence[int] = 1,
                 conv_channels: int = 64, conv_bias: bool = False) -> None:
        super().__init__()
        n = spatial_dims
        if n not in CONV:
            raise ValueError(f"spatial_dims={n} is not supported; use 1, 2 or 3")
        if n_conv_layers < 1:
            raise ValueError(f"n_conv_layers must be at least 1, got {n_conv_layers}")
        if in_chans < 1 or conv_channels < 1:
            raise ValueError(f"in_chans ({in_chans}) and conv_channels ({conv_channels}) must be >= 1")
        self.spatial_dims = n
        self.in_chans = in_chans
        self.kernel_size = to_ntuple(kernel_size, n, "kernel_size")
        self.stride = to_ntuple(stride, n, "stride")
        self.padding = _non_negative(padding, n, "padding")
        self.pooling_kernel_size = to_ntuple(pooling_kernel_size, n, "pooling_kernel_size")
        self.pooling_stride = to_ntuple(pooling_stride, n, "pooling_stride")
        self.pooling_padding = _non_negative(pooling_padding, n, "pooling_padding")
        for axis, (p, k) in enumerate(zip(self.pooling_padding, self.pooling_kernel_size, strict=True)):
            if p > k // 2:  # max-pool pads with -inf, so a pad wider than half the kernel would yield -inf
                raise ValueError(f"pooling_padding {self.pooling_padding} exceeds half of pooling_kernel_size "
                                 f"{self.pooling_kernel_size} along axis {axis} ({p} > {k} // 2); use at most "
                                 f"{tuple(k_ // 2 for k_ in self.pooling_kernel_size)}")
        self.n_conv_layers = n_conv_layers
        widths = [in_chans] + [conv_channels] * (n_conv_layers - 1) + [embed_dim]
        self.conv_layers = nn.Sequential(*[
            nn.Sequential(
                CONV[n](c_in, c_out, kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                         bias=conv_bias),
                nn.ReLU(inplace=True),
                _POOL[n](kernel_size=self.pooling_kernel_size, stride=self.pooling_stride,
                         padding=self.pooling_padding),
            )
            for c_in, c_out in zip(widths[:-1], widths[1:], strict=True)
        ])

    def _trace(self, size: int, axis: int) -> int:
        """Token-grid length along ``axis`` for an input of ``size`` (0 when some stage runs out of input)."""
        for _ in range(self.n_conv_layers):
            size = _out_size(size, self.kernel_size[axis], self.stride[axis], self.padding[axis])
            if size <= 0:
                return 0
            size = _out_size(size, self.pooling_kernel_size[axis], self.pooling_stride[axis],
                             self.pooling_padding[axis])
            if size <= 0:
                return 0
        return size

    def min_size(self, axis: int) -> int:
        """Smallest input length along ``axis`` that leaves at least one token."""
        size = 1
        while self._trace(size, axis) == 0:
            size += 1
        return size

    def grid_for(self, spatial: Sequence[int], name: str = "input size") -> tuple[int, ...]:
        """Token grid for an input of ``spatial`` size, or a ValueError naming the axis that runs out.

        Raises:
            ValueError: when the conv / pool stack leaves no token along some axis.
        """
        spatial = tuple(int(s) for s in spatial)
        if len(spatial) != self.spatial_dims:
            raise ValueError(f"{name} {spatial} has {len(spatial)} axes but the tokenizer is {self.spatial_dims}-D")
        grid = tuple(self._trace(s, axis) for axis, s in enumerate(spatial))
        for axis, g in enumerate(grid):
            if g == 0:
                raise ValueError(
                    f"{name} {spatial} is too small for the tokenizer along axis {axis}: {self.n_conv_layers} "
                    f"conv layer(s) (kernel {self.kernel_size[axis]}, stride {self.stride[axis]}, padding "
                    f"{self.padding[axis]}) each followed by max-pool (kernel {self.pooling_kernel_size[axis]}, "
                    f"stride {self.pooling_stride[axis]}, padding {self.pooling_padding[axis]}) leave no token; "
                    f"use at least {self.min_size(axis)} along that axis, or fewer conv layers / smaller strides")
        return grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial)`` -> ``(B, N, D)`` with ``N = prod(grid_for(spatial))``, row-major."""
        return self.conv_layers(x).flatten(2).transpose(1, 2)


class CCT(ClassifierMixin, nn.Module):
    """Compact Convolutional Transformer for 2D images and 3D volumes or clips.

    The defaults build the paper's ImageNet model, CCT-14/7x2 at 224x224; the registered ``cct_*`` presets hold
    the other sizes and tokenizers.

    Args:
        img_size: input size per spatial axis; the token grid follows from the tokenizer (``grid_size``).
        in_chans: input channels.
        num_classes: classifier outputs; 0 gives a backbone whose ``forward`` returns the pooled features.
        spatial_dims: 1, 2 or 3; inferred from the sequence-valued sizes, else 2.
        embed_dim: token width (the last conv's channels).
        depth: number of transformer blocks.
        num_heads: attention heads; must divide ``embed_dim``.
        mlp_ratio: MLP hidden width over ``embed_dim``.
        qkv_bias: bias on the fused qkv projection (off in the paper).
        n_conv_layers: tokenizer stages of conv + ReLU + max-pool.
        kernel_size, stride, padding: tokenizer conv geometry, one int or one per axis.
        pooling_kernel_size, pooling_stride, pooling_padding: tokenizer max-pool geometry.
        conv_channels: width of the intermediate tokenizer convs.
        pos_embed: ``'learn'`` (trainable table), ``'sincos'`` (fixed N-d grid embedding) or ``'none'``.
        norm_eps: LayerNorm epsilon (1e-5, PyTorch's default, as in the official code).
        drop_rate: dropout before the head.
        pos_drop_rate: dropout after adding positions.
        proj_drop_rate: dropout after attention and MLP projections.
        attn_drop_rate: dropout on attention probabilities (0.1 in the paper).
        drop_path_rate: stochastic depth, rising linearly from 0 to this value over the blocks (0.1 in the paper).
        dynamic_img_size: accept other input sizes, resampling a learned table or rebuilding the sin-cos one.
    """

    def __init__(
        self,
        img_size: int | Sequence[int] = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        *,
        spatial_dims: int | None = None,
        embed_dim: int = 384,
        depth: int = 14,
        num_heads: int = 6,
        mlp_ratio: float = 3.0,
        qkv_bias: bool = False,
        n_conv_layers: int = 2,
        kernel_size: int | Sequence[int] = 7,
        stride: int | Sequence[int] = 2,
        padding: int | Sequence[int] = 3,
        pooling_kernel_size: int | Sequence[int] = 3,
        pooling_stride: int | Sequence[int] = 2,
        pooling_padding: int | Sequence[int] = 1,
        conv_channels: int = 64,
        pos_embed: Literal["learn", "sincos", "none"] = "learn",
        norm_eps: float = 1e-5,
        drop_rate: float = 0.0,
        pos_drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.1,
        drop_path_rate: float = 0.1,
        dynamic_img_size: bool = False,
    ) -> None:
        super().__init__()
        check_choice("pos_embed", pos_embed, ("learn", "sincos", "none"))
        check_core(embed_dim=embed_dim, depth=depth, num_heads=num_heads, num_classes=num_classes, in_chans=in_chans)
        n = spatial_dims or infer_spatial_dims(img_size, kernel_size, stride, padding, pooling_kernel_size,
                                               pooling_stride, pooling_padding)
        self.spatial_dims = n
        self.num_classes = num_classes
        self.num_features = self.embed_dim = embed_dim
        self.depth, self.num_heads = depth, num_heads
        self.num_prefix_tokens = 0
        self.pos_embed_type = pos_embed
        self.dynamic_img_size = dynamic_img_size
        self.grad_checkpointing = False

        self.tokenizer = ConvTokenizer(in_chans, embed_dim, spatial_dims=n, n_conv_layers=n_conv_layers,
                                       kernel_size=kernel_size, stride=stride, padding=padding,
                                       pooling_kernel_size=pooling_kernel_size, pooling_stride=pooling_stride,
                                       pooling_padding=pooling_padding, conv_channels=conv_channels)
        self.img_size = to_ntuple(img_size, n, "img_size")
        self.grid_size = self.tokenizer.grid_for(self.img_size, "img_size")
        self.num_tokens = math.prod(self.grid_size)
        if pos_embed == "learn":
            self.pos_embed = nn.Parameter(torch.zeros(1, self.num_tokens, embed_dim))
        elif pos_embed == "sincos":
            self.register_buffer("pos_embed", sincos_pos_embed(self.grid_size, embed_dim)[None], persistent=False)
        else:
            self.pos_embed = None
        self.pos_drop = nn.Dropout(pos_drop_rate)

        self.blocks = build_blocks(embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                                   qkv_bias=qkv_bias, proj_drop_rate=proj_drop_rate, attn_drop_rate=attn_drop_rate,
                                   drop_path_rate=drop_path_rate, norm_eps=norm_eps)
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.attention_pool = nn.Linear(embed_dim, 1)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    # ------------------------------------------------------------------ init and config
    def init_weights(self) -> None:
        """The official init: Kaiming-normal convs, truncated normal linears (std .02), learned positions std .2."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(m.weight)
        if isinstance(self.pos_embed, nn.Parameter):
            nn.init.trunc_normal_(self.pos_embed, std=0.2)

    @property
    def in_chans(self) -> int:
        return self.tokenizer.in_chans

    # ------------------------------------------------------------------ forward
    def grid_for(self, spatial: Sequence[int]) -> tuple[int, ...]:
        """Token grid for an input of ``spatial`` size, validating it against the model."""
        spatial = tuple(int(s) for s in spatial)
        if spatial != self.img_size and not self.dynamic_img_size:
            raise ValueError(f"input spatial size {spatial} differs from img_size {self.img_size}; resize the "
                             "input or build the model with dynamic_img_size=True")
        return self.grid_size if spatial == self.img_size else self.tokenizer.grid_for(spatial)

    def _check_input(self, x: torch.Tensor) -> tuple[int, ...]:
        check_input_shape(x.shape, self.spatial_dims, self.in_chans)
        return self.grid_for(x.shape[2:])

    def _pos_table(self, grid: tuple[int, ...], x: torch.Tensor) -> torch.Tensor | None:
        if self.pos_embed is None or grid == self.grid_size:
            return self.pos_embed
        if self.pos_embed_type == "sincos":
            return sincos_pos_embed(grid, self.embed_dim, dtype=x.dtype, device=x.device)[None]
        return resample_pos_embed(self.pos_embed, grid, self.grid_size, num_prefix_tokens=0)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial)`` -> normalised tokens ``(B, N, D)``, ``N = prod(grid_for(spatial))``."""
        grid = self._check_input(x)
        x = self.tokenizer(x)
        pos = self._pos_table(grid, x)
        x = self.pos_drop(x + pos if pos is not None else x)
        return self.norm(self.forward_blocks(x))

    def sequence_pool(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sequence pooling of tokens ``(B, N, D)``: returns pooled ``(B, D)`` and the weights ``(B, N)``."""
        weights = self.attention_pool(x).squeeze(-1).softmax(dim=1)
        return torch.einsum("bn,bnd->bd", weights, x), weights

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Sequence-pool tokens ``(B, N, D)`` and classify; ``pre_logits=True`` returns the pooled ``(B, D)``."""
        x = self.head_drop(self.sequence_pool(x)[0])
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial)`` -> logits ``(B, num_classes)`` (pooled features when ``num_classes == 0``)."""
        return self.forward_head(self.forward_features(x))

    def forward_with_pool_weights(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The same output as ``forward`` plus the sequence-pooling weights ``(B, N)`` (they sum to 1 per sample).

        Token ``i`` of the weights is cell ``i`` of the row-major token grid ``grid_for(x.shape[2:])``.
        """
        pooled, weights = self.sequence_pool(self.forward_features(x))
        return self.head(self.head_drop(pooled)), weights

    def pool_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Sequence-pooling weights shaped as the token grid, ``(B, *grid)``, ready to upsample onto ``x``."""
        grid = self.grid_for(x.shape[2:])
        return self.forward_with_pool_weights(x)[1].reshape(x.shape[0], *grid)


# ---------------------------------------------------------------------- presets
# Model sizes of the paper (Table 1 of arXiv:2104.05704): layers, heads, MLP ratio, width.
_SIZES = {
    2: dict(depth=2, num_heads=2, mlp_ratio=1.0, embed_dim=128),
    4: dict(depth=4, num_heads=2, mlp_ratio=1.0, embed_dim=128),
    6: dict(depth=6, num_heads=4, mlp_ratio=2.0, embed_dim=256),
    7: dict(depth=7, num_heads=4, mlp_ratio=2.0, embed_dim=256),
    14: dict(depth=14, num_heads=6, mlp_ratio=3.0, embed_dim=384),
}


def _tokenizer(kernel: int, n_conv_layers: int, img: int, dims: str) -> dict[str, Any]:
    """Tokenizer of an ``{kernel}x{n_conv_layers}`` preset; the official rule stride = max(1, k//2 - 1), pad = k//2.

    2D presets take ``img`` squared. 3D presets of the 32 family tokenize a ``img^3`` volume with the same kernel
    along every axis; 3D presets of the 224 family tokenize an 8-frame clip as vit-pytorch's 3D CCT does: a
    3-wide kernel along the first axis with stride 1 and no pooling there, so every frame keeps its tokens.
    """
    stride, pad = max(1, kernel // 2 - 1), max(1, kernel // 2)
    geo: dict[str, Any] = dict(n_conv_layers=n_conv_layers, kernel_size=kernel, stride=stride, padding=pad,
                               pooling_kernel_size=3, pooling_stride=2, pooling_padding=1)
    if dims == "2d":
        return {**geo, "img_size": img, "spatial_dims": 2}
    if img <= 32:
        return {**geo, "img_size": img, "spatial_dims": 3}
    return {**geo, "img_size": (8, img, img), "spatial_dims": 3, "kernel_size": (3, kernel, kernel),
            "stride": (1, stride, stride), "padding": (1, pad, pad), "pooling_kernel_size": (1, 3, 3),
            "pooling_stride": (1, 2, 2), "pooling_padding": (0, 1, 1)}


def _cct(name: str, overrides: dict[str, Any]) -> CCT:
    """Build ``cct_{layers}_{kernel}x{convs}_{img}_{dims}``, e.g. ``cct_7_3x1_32_2d``."""
    _, layers, tok, img, dims = name.split("_")
    kernel, convs = (int(v) for v in tok.split("x"))
    defaults = {**_SIZES[int(layers)], **_tokenizer(kernel, convs, int(img), dims)}
    return build_model(CCT, defaults, overrides, name=name)


@register_model
def cct_2_3x2_32_2d(**kwargs: Any) -> CCT:
    return _cct("cct_2_3x2_32_2d", kwargs)


@register_model
def cct_4_3x2_32_2d(**kwargs: Any) -> CCT:
    return _cct("cct_4_3x2_32_2d", kwargs)


@register_model
def cct_6_3x1_32_2d(**kwargs: Any) -> CCT:
    return _cct("cct_6_3x1_32_2d", kwargs)


@register_model
def cct_6_3x2_32_2d(**kwargs: Any) -> CCT:
    return _cct("cct_6_3x2_32_2d", kwargs)


@register_model
def cct_7_3x1_32_2d(**kwargs: Any) -> CCT:
    return _cct("cct_7_3x1_32_2d", kwargs)


@register_model
def cct_7_3x2_32_2d(**kwargs: Any) -> CCT:
    return _cct("cct_7_3x2_32_2d", kwargs)


@register_model
def cct_7_7x2_224_2d(**kwargs: Any) -> CCT:
    return _cct("cct_7_7x2_224_2d", kwargs)


@register_model
def cct_14_7x2_224_2d(**kwargs: Any) -> CCT:
    return _cct("cct_14_7x2_224_2d", kwargs)


@register_model
def cct_2_3x2_32_3d(**kwargs: Any) -> CCT:
    return _cct("cct_2_3x2_32_3d", kwargs)


@register_model
def cct_4_3x2_32_3d(**kwargs: Any) -> CCT:
    return _cct("cct_4_3x2_32_3d", kwargs)


@register_model
def cct_6_3x2_32_3d(**kwargs: Any) -> CCT:
    return _cct("cct_6_3x2_32_3d", kwargs)


@register_model
def cct_7_3x2_32_3d(**kwargs: Any) -> CCT:
    return _cct("cct_7_3x2_32_3d", kwargs)


@register_model
def cct_7_7x2_224_3d(**kwargs: Any) -> CCT:
    return _cct("cct_7_7x2_224_3d", kwargs)


@register_model
def cct_14_7x2_224_3d(**kwargs: Any) -> CCT:
    return _cct("cct_14_7x2_224_3d", kwargs)
