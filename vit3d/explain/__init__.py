"""Where the model looked: attention capture, last-layer maps and attention rollout, mapped onto the input.

Example:
    >>> from vit3d.explain import explain, save_montage
    >>> result = explain(model, x, method="rollout")   # x: (1, C, D, H, W)
    >>> result.map.shape == x.shape[:1] + x.shape[2:]
    >>> save_montage(x[0, 0], result.map[0], "montage.png")
"""

from .export import (
    invert_with_transform,
    normalize_map,
    overlay_rgb,
    resample_to_reference,
    save_clip_overlay,
    save_montage,
    save_nifti,
)
from .maps import (
    POOL_WEIGHTS_METHOD,
    AttentionCapture,
    AttentionMap,
    capture_attention,
    eval_mode,
    explain,
    token_grid,
    upsample_map,
)
from .rollout import attention_rollout, fuse_heads, read_tokens

__all__ = [
    "POOL_WEIGHTS_METHOD", "AttentionCapture", "AttentionMap", "attention_rollout", "capture_attention", "eval_mode",
    "explain", "fuse_heads", "invert_with_transform", "normalize_map", "overlay_rgb", "read_tokens",
    "resample_to_reference", "save_clip_overlay", "save_montage", "save_nifti", "token_grid", "upsample_map",
]
