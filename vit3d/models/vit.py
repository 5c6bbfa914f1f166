"""Vision Transformer for images, volumes and clips, one class for any number of spatial dims.

- ViT: Dosovitskiy et al. 2020, "An Image is Worth 16x16 Words", https://arxiv.org/abs/2010.11929
- ViViT tubelets: Arnab et al. 2021, https://arxiv.org/abs/2103.15691
- SimpleViT: Beyer et al. 2022, "Better plain ViT baselines for ImageNet-1k", https://arxiv.org/abs/2205.01580
  (a configuration here: fixed sin-cos positions, global average pooling, no class token).

Inputs are ``(B, C, *spatial)`` with spatial order ``(H, W)``, ``(D, H, W)`` or ``(T, H, W)``; parameter names follow
timm's state-dict keys so 2D checkpoints load one to one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

from vit3d.layers import (
    PatchEmbed,
    check_choice,
    infer_spatial_dims,
    resample_pos_embed,
    sincos_pos_embed,
    sinusoid_table,
)
from vit3d.layers.helpers import to_ntuple
from vit3d.layers.mlp import ActName

from ._base import ClassifierMixin, build_blocks, check_core
from .registry import PretrainedTag, build_model, register_model, register_pretrained

__all__ = ["VisionTransformer"]


class VisionTransformer(ClassifierMixin, nn.Module):
    """ViT / SimpleViT for 2D images and 3D volumes or clips.

    Args:
        img_size: input size per spatial axis; its length (or ``patch_size``'s, or ``spatial_dims``) picks 2D or 3D.
        patch_size: patch size per axis; ``(2, 16, 16)`` gives ViViT-style tubelets.
        in_chans: input channels (1 for CT, the number of sequences for multi-sequence MRI, 3 for RGB clips).
        num_classes: classifier outputs; 0 gives a backbone whose ``forward`` returns pooled features.
        spatial_dims: 1, 2 or 3; only needed when both sizes are ints.
        embed_dim: token width.
        depth: number of blocks.
        num_heads: attention heads; must divide ``embed_dim``.
        mlp_ratio: MLP hidden width over ``embed_dim``.
        qkv_bias: bias on the fused qkv projection.
        class_token: prepend a learned class token.
        no_embed_class: add position embeddings to patch tokens only (the class token gets none), as MONAI does.
        global_pool: ``'token'`` reads the class token, ``'avg'`` averages patch tokens.
        fc_norm: LayerNorm after pooling instead of before; defaults to ``global_pool == 'avg'`` as in timm.
        pos_embed: ``'learn'`` (trainable table), ``'sincos'`` (fixed, per grid axis), ``'sincos_seq'`` (fixed
            1-D table over the flattened token index, VideoMAE's), ``'none'``, or ``'learn_separable'``:
            a trainable table over the in-plane grid (axes 1..n-1, with the class-token slot) plus a
            zero-initialised ``pos_embed_temporal`` ``(1, grid[0], D)`` over axis 0, summed per token
            (TimeSformer-style; what ``vit3d inflate --pos separate`` writes).
        init_values: LayerScale init; ``None`` disables LayerScale.
        act_layer: MLP activation: ``'gelu'`` (exact; timm, torchvision, HF ViT, VideoMAE) or ``'gelu_tanh'``
            (tanh approximation; Google's Flax ViT and ViViT checkpoints, HF ``gelu_fast`` / ``gelu_new``).
        norm_eps: LayerNorm epsilon (1e-6 for timm/Google weights, 1e-12 for HF, 1e-5 for MONAI).
        drop_rate: dropout before the head.
        pos_drop_rate: dropout after adding positions.
        patch_drop_rate: fraction of patch tokens randomly dropped during training (cheaper steps).
        proj_drop_rate: dropout after attention and MLP projections.
        attn_drop_rate: dropout on attention probabilities.
        drop_path_rate: stochastic depth, rising linearly to this value over the blocks.
        dynamic_img_size: accept other input sizes by resampling the position embedding on the fly.
    """

    def __init__(
        self,
        img_size: int | Sequence[int] = 224,
        patch_size: int | Sequence[int] = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        *,
        spatial_dims: int | None = None,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        class_token: bool = True,
        no_embed_class: bool = False,
        global_pool: Literal["token", "avg"] = "token",
        fc_norm: bool | None = None,
        pos_embed: Literal["learn", "sincos", "sincos_seq", "none", "learn_separable"] = "learn",
        init_values: float | None = None,
        act_layer: ActName = "gelu",
        norm_eps: float = 1e-6,
        drop_rate: float = 0.0,
        pos_drop_rate: float = 0.0,
        patch_drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        dynamic_img_size: bool = False,
    ) -> None:
        super().__init__()
        check_choice("global_pool", global_pool, ("token", "avg"))
        check_choice("pos_embed", pos_embed, ("learn", "sincos", "sincos_seq", "none", "learn_separable"))
        if global_pool == "token" and not class_token:
            raise ValueError("global_pool='token' needs class_token=True; use global_pool='avg' without a class token")
        check_core(embed_dim=embed_dim, depth=depth, num_heads=num_heads, num_classes=num_classes, in_chans=in_chans)
        if not 0.0 <= patch_drop_rate < 1.0:
            raise ValueError(f"patch_drop_rate {patch_drop_rate} must be in [0, 1)")
        n = spatial_dims or infer_spatial_dims(img_size, patch_size)
        img_size, patch_size = to_ntuple(img_size, n, "img_size"), to_ntuple(patch_size, n, "patch_size")

        self.spatial_dims = n
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.num_features = self.embed_dim = embed_dim
        self.num_prefix_tokens = 1 if class_token else 0
        self.no_embed_class = no_embed_class
        self.pos_embed_type = pos_embed
        self.act_layer = act_layer
        self.dynamic_img_size = dynamic_img_size
        self.patch_drop_rate = patch_drop_rate
        self.grad_checkpointing = False
        use_fc_norm = global_pool == "avg" if fc_norm is None else fc_norm

        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, spatial_dims=n,
                                      dynamic_img_size=dynamic_img_size)
        grid = self.patch_embed.grid_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        pos_tokens = self.patch_embed.num_patches + (0 if no_embed_class else self.num_prefix_tokens)
        self.pos_embed_temporal = None
        if pos_embed == "learn_separable":
            if n < 2:
                raise ValueError("pos_embed='learn_separable' needs at least 2 spatial dims; use 'learn'")
            plane_tokens = math.prod(grid[1:]) + (0 if no_embed_class else self.num_prefix_tokens)
            self.pos_embed = nn.Parameter(torch.zeros(1, plane_tokens, embed_dim))
            self.pos_embed_temporal = nn.Parameter(torch.zeros(1, grid[0], embed_dim))  # zero: starts as 'learn'
        elif pos_embed == "learn":
            self.pos_embed = nn.Parameter(torch.zeros(1, pos_tokens, embed_dim))
        elif pos_embed == "sincos":
            # Fixed, so not saved: it is rebuilt exactly for any grid, no interpolation needed.
            self.register_buffer("pos_embed", sincos_pos_embed(grid, embed_dim)[None], persistent=False)
        elif pos_embed == "sincos_seq":
            self.register_buffer("pos_embed", sinusoid_table(math.prod(grid), embed_dim)[None], persistent=False)
        else:
            self.pos_embed = None
        self.pos_drop = nn.Dropout(pos_drop_rate)

        self.blocks = build_blocks(embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                                   qkv_bias=qkv_bias, proj_drop_rate=proj_drop_rate, attn_drop_rate=attn_drop_rate,
                                   drop_path_rate=drop_path_rate, init_values=init_values, norm_eps=norm_eps,
                                   act_layer=act_layer)
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps) if not use_fc_norm else nn.Identity()
        self.fc_norm = nn.LayerNorm(embed_dim, eps=norm_eps) if use_fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    # ------------------------------------------------------------------ init and config
    def init_weights(self) -> None:
        """timm's default init: truncated normal (std .02) for tables and linears, zero biases."""
        if isinstance(self.pos_embed, nn.Parameter):
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        w = self.patch_embed.proj.weight
        nn.init.trunc_normal_(w, std=math.sqrt(1.0 / w[0].numel()))  # lecun normal, as for jax ViTs

    @property
    def img_size(self) -> tuple[int, ...]:
        return self.patch_embed.img_size

    @property
    def in_chans(self) -> int:
        return self.patch_embed.in_chans

    @property
    def patch_size(self) -> tuple[int, ...]:
        return self.patch_embed.patch_size

    @property
    def grid_size(self) -> tuple[int, ...]:
        return self.patch_embed.grid_size

    # ------------------------------------------------------------------ forward
    def _pos_table(self, grid: tuple[int, ...], x: torch.Tensor) -> torch.Tensor | None:
        """Position table for a token grid, resampled (learned) or rebuilt (sin-cos) when it differs."""
        if self.pos_embed is None:
            return None
        if self.pos_embed_temporal is not None:
            return self._separable_pos_table(grid)
        if grid == self.grid_size:
            return self.pos_embed
        if self.pos_embed_type == "sincos":
            return sincos_pos_embed(grid, self.embed_dim, dtype=x.dtype, device=x.device)[None]
        if self.pos_embed_type == "sincos_seq":
            return sinusoid_table(math.prod(grid), self.embed_dim, dtype=x.dtype, device=x.device)[None]
        prefix = 0 if self.no_embed_class else self.num_prefix_tokens
        return resample_pos_embed(self.pos_embed, grid, self.grid_size, num_prefix_tokens=prefix)

    def _separable_pos_table(self, grid: tuple[int, ...]) -> torch.Tensor:
        """In-plane table plus temporal table, broadcast to ``(1, prefix + prod(grid), D)`` in token order."""
        prefix = 0 if self.no_embed_class else self.num_prefix_tokens
        plane = resample_pos_embed(self.pos_embed, grid[1:], self.grid_size[1:], num_prefix_tokens=prefix)
        time = resample_pos_embed(self.pos_embed_temporal, grid[:1], self.grid_size[:1], num_prefix_tokens=0)
        table = (time[:, :, None] + plane[:, None, prefix:]).flatten(1, 2)
        return torch.cat([plane[:, :prefix], table], dim=1)

    def _pos_embed(self, x: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        pos = self._pos_table(grid, x)
        cls = self.cls_token.expand(x.shape[0], -1, -1) if self.cls_token is not None else None
        if self.no_embed_class or self.pos_embed_type in ("sincos", "sincos_seq"):
            # sin-cos tables cover patch tokens only: a prefix token gets no position (same as a zero slot).
            x = x + pos if pos is not None else x
            x = torch.cat([cls, x], dim=1) if cls is not None else x
        else:
            x = torch.cat([cls, x], dim=1) if cls is not None else x
            x = x + pos if pos is not None else x
        return self.pos_drop(x)

    def _patch_drop(self, x: torch.Tensor) -> torch.Tensor:
        """Keep a random subset of patch tokens per sample (prefix tokens always kept); training only."""
        if not self.training or self.patch_drop_rate == 0.0:
            return x
        p = self.num_prefix_tokens
        B, N = x.shape[0], x.shape[1] - p
        keep = max(1, int(N * (1.0 - self.patch_drop_rate)))
        idx = torch.rand(B, N, device=x.device).argsort(dim=1)[:, :keep] + p
        if p:
            idx = torch.cat([torch.arange(p, device=x.device).expand(B, p), idx], dim=1)
        return x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial)`` -> normalised tokens ``(B, prefix + N, D)``."""
        grid = self.patch_embed.check_input(x)
        x = self.patch_embed.project(x)
        x = self._patch_drop(self._pos_embed(x, grid))
        return self.norm(self.forward_blocks(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool tokens ``(B, N, D)`` and classify; ``pre_logits=True`` returns the pooled ``(B, D)`` features."""
        x = x[:, 0] if self.global_pool == "token" else x[:, self.num_prefix_tokens:].mean(dim=1)
        x = self.head_drop(self.fc_norm(x))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial)`` -> logits ``(B, num_classes)`` (pooled features when ``num_classes == 0``)."""
        return self.forward_head(self.forward_features(x))


# ---------------------------------------------------------------------- presets
_SIZES = {
    "tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "small": dict(embed_dim=384, depth=12, num_heads=6),
    "base": dict(embed_dim=768, depth=12, num_heads=12),
    "large": dict(embed_dim=1024, depth=24, num_heads=16),
}
_GEOMETRY = {
    "2d": dict(img_size=224, patch_size=16, spatial_dims=2),
    "3d": dict(img_size=(16, 224, 224), patch_size=(2, 16, 16), spatial_dims=3),
}
# Configurations of the one ViT: SimpleViT (Beyer et al. 2022); VideoMAE (Tong et al. 2022): sin-cos table over
# the token index, mean pooling with fc_norm; ViViT model 1 (Arnab et al. 2021): 32-frame clips, Flax's tanh GELU.
_FAMILIES = {
    "simple": dict(pos_embed="sincos", class_token=False, global_pool="avg", qkv_bias=False),
    "videomae": dict(pos_embed="sincos_seq", class_token=False, global_pool="avg", fc_norm=True),
    "vivit": dict(img_size=(32, 224, 224), act_layer="gelu_tanh"),
}


def _vit(name: str, overrides: dict[str, Any]) -> VisionTransformer:
    size, dims = name.split("_")[-3], name.split("_")[-1]
    family = _FAMILIES.get(name.split("_")[0], {})
    defaults = {**_SIZES[size], **_GEOMETRY[dims], **family}
    return build_model(VisionTransformer, defaults, overrides, name=name)


@register_model
def vit_tiny_patch16_2d(**kwargs: Any) -> VisionTransformer:
    return _vit("vit_tiny_patch16_2d", kwargs)


@register_model
def vit_small_patch16_2d(**kwargs: Any) -> VisionTransformer:
    return _vit("vit_small_patch16_2d", kwargs)


@register_model
def vit_base_patch16_2d(**kwargs: Any) -> VisionTransformer:
    return _vit("vit_base_patch16_2d", kwargs)


@register_model
def vit_large_patch16_2d(**kwargs: Any) -> VisionTransformer:
    return _vit("vit_large_patch16_2d", kwargs)


@register_model
def vit_tiny_patch16_3d(**kwargs: Any) -> VisionTransformer:
    return _vit("vit_tiny_patch16_3d", kwargs)


@register_model
def vit_small_patch16_3d(**kwargs: Any) -> VisionTransformer:
    return _vit("vit_small_patch16_3d", kwargs)


@register_model
def vit_base_patch16_3d(**kwargs: Any) -> VisionTransformer:
    return _vit("vit_base_patch16_3d", kwargs)


@register_model
def vit_large_patch16_3d(**kwargs: Any) -> VisionTransformer:
    return _vit("vit_large_patch16_3d", kwargs)


@register_model
def simple_vit_tiny_patch16_2d(**kwargs: Any) -> VisionTransformer:
    return _vit("simple_vit_tiny_patch16_2d", kwargs)


@register_model
def simple_vit_small_patch16_2d(**kwargs: Any) -> VisionTransformer:
    return _vit("simple_vit_small_patch16_2d", kwargs)


@register_model
def simple_vit_base_patch16_2d(**kwargs: Any) -> VisionTransformer:
    return _vit("simple_vit_base_patch16_2d", kwargs)


@register_model
def simple_vit_tiny_patch16_3d(**kwargs: Any) -> VisionTransformer:
    return _vit("simple_vit_tiny_patch16_3d", kwargs)


@register_model
def simple_vit_small_patch16_3d(**kwargs: Any) -> VisionTransformer:
    return _vit("simple_vit_small_patch16_3d", kwargs)


@register_model
def simple_vit_base_patch16_3d(**kwargs: Any) -> VisionTransformer:
    return _vit("simple_vit_base_patch16_3d", kwargs)


@register_model
def videomae_base_patch16_3d(**kwargs: Any) -> VisionTransformer:
    return _vit("videomae_base_patch16_3d", kwargs)


@register_model
def videomae_large_patch16_3d(**kwargs: Any) -> VisionTransformer:
    return _vit("videomae_large_patch16_3d", kwargs)


@register_model
def vivit_base_patch16_3d(**kwargs: Any) -> VisionTransformer:
    return _vit("vivit_base_patch16_3d", kwargs)


# ---------------------------------------------------------------------- pretrained tags
# timm's ports of the AugReg ViTs (Steiner et al. 2022, "How to train your ViT?", https://arxiv.org/abs/2106.10270).
# A 3D preset loads the same 2D files, inflated on the fly with vit3d's defaults (vit3d.weights.inflate).
_INFLATED = ("2D weights inflated on load: central-frame tubelet kernel (ViViT), 2D position grid resampled to "
             "the in-plane grid and tiled over the frames; class token and head kept")
for _size in ("tiny", "small", "base", "large"):
    for _tag, _classes, _what in (("augreg_in21k_ft_in1k", 1000, "ImageNet-21k, fine-tuned on ImageNet-1k"),
                                  ("augreg_in21k", 21843, "ImageNet-21k")):
        _src = f"hf-hub:timm/vit_{_size}_patch16_224.{_tag}"
        register_pretrained(f"vit_{_size}_patch16_2d", _tag, PretrainedTag(
            _src, f"AugReg {_what} (Steiner et al. 2022), timm", _classes, "loaded as is (timm layout)"))
        register_pretrained(f"vit_{_size}_patch16_3d", _tag, PretrainedTag(
            _src, f"AugReg {_what} (Steiner et al. 2022), timm", _classes, _INFLATED))
for _size in ("base", "large"):
    register_pretrained(f"videomae_{_size}_patch16_3d", "kinetics400", PretrainedTag(
        f"hf-hub:MCG-NJU/videomae-{_size}-finetuned-kinetics", "VideoMAE self-supervised on Kinetics-400, "
        "fine-tuned on its 400 classes (Tong et al. 2022)", 400, "HF VideoMAE layout converted; sin-cos table "
        "rebuilt by the model; q/v biases fused with a zero k bias"))
register_pretrained("videomae_base_patch16_3d", "kinetics400_pt", PretrainedTag(
    "hf-hub:MCG-NJU/videomae-base", "VideoMAE self-supervised on Kinetics-400, no fine-tuning (Tong et al. 2022)",
    0, "encoder only: pretraining decoder and mask token dropped; final LayerNorm kept (fc_norm off)"))
register_pretrained("vivit_base_patch16_3d", "kinetics400", PretrainedTag(
    "hf-hub:google/vivit-b-16x2-kinetics400", "ViViT-B/16x2 model 1 on Kinetics-400 (Arnab et al. 2021)", 400,
    "HF ViViT layout converted; tanh-approximate GELU (gelu_fast) kept"))
