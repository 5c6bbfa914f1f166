"""Architecture of a canonical state dict, read from tensor shapes (and hints where shapes cannot tell), and
the constructor keywords of a built :class:`VisionTransformer`."""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from vit3d.errors import CheckpointError
from vit3d.layers import LayerScale
from vit3d.models import CCT, VisionTransformer

from .report import LoadReport

__all__ = ["HINT_KEYS", "LIMITS", "UnknownGridError", "cct_config", "check_fits", "check_stored_config",
           "infer_config", "model_config", "vit_config"]

# Keywords the caller may give when shapes cannot settle them (num_heads always; img_size for non-square grids).
HINT_KEYS = ("num_heads", "img_size", "norm_eps", "pos_embed", "global_pool", "fc_norm", "no_embed_class",
             "class_token", "qkv_bias", "act_layer")


class UnknownGridError(ValueError):
    """The position table's token count is no square/cube grid of the patch: the input size must be given."""


# Bounds on the numbers a file's metadata may claim, checked before anything is allocated from them (a 2.6 B
# parameter ViT-G is depth 48, width 1664; a 16x224x224 clip at 2x16x16 is 1,568 tokens). Past these, a file is
# refused rather than trusted to fit in memory.
LIMITS: dict[str, tuple[float, float]] = {
    "depth": (1, 256), "embed_dim": (1, 16384), "num_heads": (1, 1024), "in_chans": (1, 4096),
    "num_classes": (0, 1_000_000), "mlp_ratio": (1 / 64, 64), "img_size": (1, 65536), "patch_size": (1, 4096),
    "spatial_dims": (1, 3), "tokens": (1, 2 ** 17),
}


def check_stored_config(config: Mapping[str, Any], source: str = "") -> dict[str, Any]:
    """Validate a constructor config read from a file (vit3d safetensors metadata) before any model is built.

    Keys must be :class:`VisionTransformer` keywords; sizes and counts must be numbers of the right type inside
    :data:`LIMITS`, with ``img_size`` / ``patch_size`` one entry per spatial dim and at most ``LIMITS['tokens']``
    patches. Returns the config with sizes as tuples.

    Raises:
        CheckpointError: naming the file, the key, the value and the bound.
    """
    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"checkpoint metadata 'vit3d.config' {what}", file=source or None,
                               fix="the file is damaged or was not written by vit3d; refusing to build a model "
                                   "from it")

    params = inspect.signature(VisionTransformer.__init__).parameters
    unknown = sorted(set(config) - set(params) - {"self"})
    if unknown:
        raise bad(f"has unknown keys {unknown}")
    cfg = dict(config)
    for key in ("depth", "embed_dim", "num_heads", "in_chans", "num_classes", "spatial_dims"):
        if key in cfg:
            value = cfg[key]
            lo, hi = LIMITS[key]
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise bad(f"says {key}: {value!r}; expected an integer in [{lo:g}, {hi:g}]")
    if "mlp_ratio" in cfg:
        value, (lo, hi) = cfg["mlp_ratio"], LIMITS["mlp_ratio"]
        if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
            raise bad(f"says mlp_ratio: {value!r}; expected a number in [{lo:g}, {hi:g}]")
    dims = cfg.get("spatial_dims")
    for key in ("img_size", "patch_size"):
        if key not in cfg:
            raise bad(f"has no {key}")
        value = cfg[key]
        values = [value] if isinstance(value, int) and not isinstance(value, bool) else value
        lo, hi = LIMITS[key]
        if (not isinstance(values, list | tuple) or not values or (dims is not None and len(values) not in (1, dims))
                or any(isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi for v in values)):
            raise bad(f"says {key}: {value!r}; expected {dims or 'one per spatial dim'} integers in [{lo}, {hi}]")
        cfg[key] = tuple(values) if isinstance(value, list | tuple) else value
    img, patch = cfg["img_size"], cfg["patch_size"]
    n = dims or max(len(v) if isinstance(v, tuple) else 1 for v in (img, patch))
    img_t = img if isinstance(img, tuple) else (img,) * n
    patch_t = patch if isinstance(patch, tuple) else (patch,) * n
    tokens = math.prod(max(i // p, 1) for i, p in zip(img_t, patch_t, strict=False))
    if tokens > LIMITS["tokens"][1]:
        raise bad(f"says img_size {img} with patch_size {patch}: {tokens:,} tokens, over the limit of "
                  f"{int(LIMITS['tokens'][1]):,}")
    return cfg


def check_fits(state: Mapping[str, torch.Tensor], config: Mapping[str, Any], source: str = "") -> None:
    """Check, on the meta device (nothing allocated), that ``VisionTransformer(**config)`` has exactly the
    tensors of ``state`` with their shapes: a config that does not describe the file's tensors is refused
    before a model is built or the config is copied anywhere.

    Raises:
        CheckpointError: naming the file and the first differing tensors.
    """
    try:
        with torch.device("meta"):
            own = VisionTransformer(**config).state_dict()
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"its config cannot build a model ({err})", file=source or None) from err
    diffs = [f"{k}: file {list(state[k].shape)} vs config {list(v.shape)}" for k, v in own.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if diffs or missing or extra:
        parts = diffs[:4] + ([f"missing {missing[:4]}"] if missing else [])
        if extra:
            parts.append(f"unexpected {[f'{k} {list(state[k].shape)}' for k in extra[:4]]}")
        raise CheckpointError("its stored config does not describe its tensors: " + "; ".join(parts),
                              file=source or None, fix="the file is damaged or its metadata was edited")


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
        raise UnknownGridError(f"pos_embed holds {counts} grid tokens, not a square/cube grid; pass img_size=... "
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


def cct_config(model: nn.Module) -> dict[str, Any]:
    """Constructor keywords that rebuild a :class:`vit3d.models.CCT` 's architecture (dropout rates are left at
    their defaults), read from its modules as :func:`vit_config` does for the ViT."""
    if not isinstance(model, CCT):
        raise ValueError(f"cct_config expects a vit3d CCT, got {type(model).__name__}")
    tok, block = model.tokenizer, model.blocks[0]
    first_conv = tok.conv_layers[0][0]
    return dict(
        img_size=tuple(model.img_size), in_chans=tok.in_chans, num_classes=model.num_classes,
        spatial_dims=model.spatial_dims, embed_dim=model.embed_dim, depth=len(model.blocks),
        num_heads=block.attn.num_heads, mlp_ratio=block.mlp.fc1.out_features / model.embed_dim,
        qkv_bias=block.attn.qkv.bias is not None, n_conv_layers=tok.n_conv_layers,
        kernel_size=tuple(tok.kernel_size), stride=tuple(tok.stride), padding=tuple(tok.padding),
        pooling_kernel_size=tuple(tok.pooling_kernel_size), pooling_stride=tuple(tok.pooling_stride),
        pooling_padding=tuple(tok.pooling_padding),
        conv_channels=first_conv.out_channels if tok.n_conv_layers > 1 else 64,
        pos_embed=model.pos_embed_type, norm_eps=block.norm1.eps, dynamic_img_size=model.dynamic_img_size,
    )


def model_config(model: nn.Module) -> dict[str, Any]:
    """Constructor keywords of any vit3d model family (:func:`vit_config` or :func:`cct_config`)."""
    if isinstance(model, CCT):
        return cct_config(model)
    return vit_config(model)
