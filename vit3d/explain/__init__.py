"""Where the model looked: attention capture, last-layer maps and attention rollout, mapped onto the input.

Example:
    >>> from vit3d.explain import explain, save_montage
    >>> result = explain(model, x, method="rollout")   # x: (1, C, D, H, W)
    >>> result.map.shape == x.shape[:1] + x.shape[2:]
    >>> save_montage(x[0, 0], result.map[0], "montage.png")

Whole scans larger than the model input: :func:`explain_sliding` (one map stitched from sliding windows);
one input end to end (map, NIfTI on the file's grid, montage, clip animation): :func:`explain_sample`.
"""

from .export import (
    frame_durations,
    invert_with_transform,
    normalize_map,
    overlay_rgb,
    resample_to_reference,
    save_clip_overlay,
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
from .montage import safe_text, save_montage
from .rollout import attention_rollout, fuse_heads, read_tokens
from .sample import (
    ExplainResult,
    explain_sample,
    input_stem,
    mask_in_model_space,
    original_grid,
    unique_stems,
)
from .sliding import explain_sliding

__all__ = [
    "POOL_WEIGHTS_METHOD", "AttentionCapture", "AttentionMap", "ExplainResult", "attention_rollout",
    "capture_attention", "eval_mode", "explain", "explain_sample", "explain_sliding", "frame_durations", "fuse_heads",
    "input_stem", "invert_with_transform", "mask_in_model_space", "normalize_map", "original_grid", "overlay_rgb",
    "read_tokens", "resample_to_reference", "safe_text", "save_clip_overlay", "save_montage", "save_nifti",
    "token_grid", "unique_stems", "upsample_map",
]
