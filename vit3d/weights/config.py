"""Architecture of a canonical state dict, read from tensor shapes (and hints where shapes cannot tell), and
the constructor keywords of a built :class:`VisionTransformer`."""

from __future__ import annotations

import math
import re
from typing import Any

import torch
from torch import nn

from vit3d.layers import LayerScale
from vit3d.models import VisionTransformer

from .report import LoadReport

__all__ = ["HINT_KEYS", "infer_config", "vit_config"]

# Keywords the caller may give when shapes cannot settle them (num_heads always; img_size for non-square grids).
HINT_KEYS = ("num_heads", "img_size", "norm_eps", "pos_embed", "global_pool", "fc_norm", "no_embed_class",
             "class_token", "qkv_bias", "act_layer")


def _heads_for(dim: int) -> int | None:
    """Conventional head count: heads of 64 (ViT-Ti/S/B/L), 16 heads of 80 for ViT-H (1280)."""
    if dim == 1280:
        return 16
    return dim // 64 if dim % 64 == 0 else None


def _root(n: int, dims: int) -> int | None:
    r = round(n ** (1.0 / dims))
    return r if r ** dims == n else None


def infer_config(state: dict[str, torch.Tensor], hints: dict[str, Any] | None = None,
                 report: LoadReport | None = None) -> dict[str, Any]:
    """:class:`VisionTransformer` keywords that fit the canonical ``state``.

    Shapes give embed_dim, depth, patch size, in_chans, mlp_ratio, qkv bias, class token, LayerScale, classifier
    size and the position grid; ``hints`` supply num_heads, LayerNorm eps and a non-square image size.

    Raises:
        ValueError: when a needed tensor is missing or the grid or head count cannot be settled.
    """
    hints = dict(hints or {})
    report = report if report is not None else LoadReport()
    if "__config__" in hints:
        return dict(hints["__config__"])
    if "patch_embed.proj.weight" not in state:
        raise ValueError(f"state has no patch_embed.proj.weight (keys: {sorted(state)[:8]}...); it is not a "
                         "convolutional-patch ViT")
    proj = state["patch_embed.proj.weight"]
    spatial_dims = proj.ndim - 2
    embed_dim, in_chans, patch = int(proj.shape[0]), int(proj.shape[1]), tuple(int(p) for p in proj.shape[2:])
    depth = len({int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))})
    if depth == 0:
        raise ValueError("state has no blocks.{i}.* tensors; nothing to build a transformer from")
    class_token = "cls_token" in state
    fc1 = state.get("blocks.0.mlp.fc1.weight")
    cfg: dict[str, Any] = dict(
        patch_size=patch, in_chans=in_chans, num_classes=int(state["head.weight"].shape[0]) if "head.weight" in
        state else 0, spatial_dims=spatial_dims, embed_dim=embed_dim, depth=depth,
        mlp_ratio=float(fc1.shape[0]) / embed_dim if fc1 is not None else 4.0,
        qkv_bias="blocks.0.attn.qkv.bias" in state, class_token=class_token,
    )
    if "blocks.0.ls1.gamma" in state:
        cfg["init_values"] = float(state["blocks.0.ls1.gamma"].abs().mean()) or 1e-5

    heads = hints.get("num_heads") or _heads_for(embed_dim)
    if heads is None:
        raise ValueError(f"cannot infer num_heads for embed_dim {embed_dim} (not a multiple of 64) and the "
                         "checkpoint does not store it; pass num_heads=... (CLI: --num-heads)")
    if "num_heads" not in hints:
        report.assumed.append("num_heads")
        report.notes.append(f"num_heads={heads} assumed (heads of {embed_dim // heads}); the checkpoint does not "
                            "store it: pass num_heads=... if it used another count")
    cfg["num_heads"] = int(heads)
    cfg["norm_eps"] = float(hints.get("norm_eps", 1e-6))
    cfg["act_layer"] = hints.get("act_layer", "gelu")

    # Pooling: timm's fc_norm (avg) or no class token -> average; else the class token.
    has_fc_norm = "fc_norm.weight" in state
    cfg["global_pool"] = hints.get("global_pool", "avg" if has_fc_norm or not class_token else "token")
    cfg["fc_norm"] = bool(hints.get("fc_norm", has_fc_norm))

    prefix = 1 if class_token else 0
    pos = state.get("pos_embed")
    if pos is None:
        choice = hints.get("pos_embed")
        if choice not in ("sincos", "sincos_seq", "none"):
            raise ValueError("state has no pos_embed table; pass pos_embed='sincos' (fixed sin-cos positions per "
                             "axis), 'sincos_seq' (VideoMAE's table over the token index) or 'none' to say which "
                             "the model used")
        cfg["pos_embed"] = choice
        size = hints.get("img_size")
        if size is None:
            raise ValueError("without a pos_embed table the input size is unknown; pass img_size=...")
        cfg["img_size"] = tuple(size) if not isinstance(size, int) else (size,) * spatial_dims
        cfg["no_embed_class"] = False
        return cfg
    cfg["pos_embed"] = "learn"
    n_pos = int(pos.shape[1])
    # (no_embed_class, grid tokens): a class-token slot in the table first (timm, HF, torchvision, vit_jax), then
    # none (MONAI, big_vision, timm's no_embed_class models), unless the format said which.
    if "no_embed_class" in hints and prefix:
        candidates = [(bool(hints["no_embed_class"]), n_pos - (0 if hints["no_embed_class"] else prefix))]
    else:
        candidates = [(False, n_pos - prefix), (True, n_pos)] if prefix else [(False, n_pos)]
    choice = None
    size_hint = hints.get("img_size")
    if size_hint is not None:
        size = (size_hint,) * spatial_dims if isinstance(size_hint, int) else tuple(size_hint)
        hinted = tuple(s // p for s, p in zip(size, patch, strict=False))
        choice = next(((nec, hinted) for nec, n in candidates if math.prod(hinted) == n), None)
    if choice is None:
        choice = next(((nec, (side,) * spatial_dims) for nec, n in candidates
                       if (side := _root(n, spatial_dims))), None)
    if choice is None:
        counts = " or ".join(str(n) for _, n in candidates)
        raise ValueError(f"pos_embed holds {counts} grid tokens, not a square/cube grid; pass img_size=... "
                         f"(a size whose grid over patch {patch} has that many cells)")
    cfg["no_embed_class"], grid = choice
    cfg["img_size"] = tuple(g * p for g, p in zip(grid, patch, strict=True))
    return cfg


def vit_config(model: nn.Module) -> dict[str, Any]:
    """Constructor keywords that rebuild ``model``'s architecture (dropout rates are left at their defaults)."""
    if not isinstance(model, VisionTransformer):
        raise ValueError(f"vit_config expects a vit3d VisionTransformer, got {type(model).__name__}")
    block = model.blocks[0]
    cfg: dict[str, Any] = dict(
        img_size=tuple(model.img_size), patch_size=tuple(model.patch_size), in_chans=model.patch_embed.in_chans,
        num_classes=model.num_classes, spatial_dims=model.spatial_dims, embed_dim=model.embed_dim,
        depth=len(model.blocks), num_heads=block.attn.num_heads,
        mlp_ratio=block.mlp.fc1.out_features / model.embed_dim, qkv_bias=block.attn.qkv.bias is not None,
        class_token=model.cls_token is not None, no_embed_class=model.no_embed_class,
        global_pool=model.global_pool, fc_norm=isinstance(model.fc_norm, nn.LayerNorm),
        pos_embed=model.pos_embed_type, norm_eps=block.norm1.eps, act_layer=model.act_layer,
        dynamic_img_size=model.dynamic_img_size,
    )
    if isinstance(block.ls1, LayerScale):
        gamma = block.ls1.gamma
        cfg["init_values"] = 1e-5 if gamma.is_meta else float(gamma.detach().abs().mean()) or 1e-5
    return cfg
