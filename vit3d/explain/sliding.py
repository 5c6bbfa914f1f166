"""Attention maps over whole scans: one map per sliding window, stitched into one map over the scan.

The windows are those of :func:`vit3d.inference.sliding_window_logits` (MONAI's layout). Each window is explained
with :func:`vit3d.explain.explain` and its map (relevance that sums to one over the window's tokens, so windows
are comparable) is blended into the scan as MONAI blends sliding-window outputs: each window weighted by an
importance map (``'gaussian'``: high at the window centre, where a ViT sees the most context; ``'constant'``)
and, on top, by its weight in the class decision (uniform for ``'mean'``, the attention weights for
``'attention'``, a softmax over the windows' logits of the predicted class for ``'max'``). Every voxel of the
scan is covered by at least one window, so the map is defined (and positive, for rollout) everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from vit3d.errors import ConfigError
from vit3d.inference import (
    AGGREGATES,
    Aggregate,
    aggregate_logits,
    crop_windows,
    model_input_size,
    pad_to_window,
    window_batches,
    window_slices,
)
from vit3d.layers import check_choice, to_ntuple

from .maps import AttentionMap, Method, explain

__all__ = ["explain_sliding"]


@torch.no_grad()
def explain_sliding(model: nn.Module, x: torch.Tensor, roi_size: int | Sequence[int] | None = None, *,
                    method: Method = "rollout", overlap: float | Sequence[float] = 0.25,
                    aggregate: Aggregate = "mean", blend: Literal["gaussian", "constant"] = "gaussian",
                    batch_size: int = 4, pad_value: float = 0.0) -> AttentionMap:
    """Attention map of a whole scan ``x`` ``(B, C, *spatial)`` (any size) through sliding windows.

    Args:
        model: the eval model, built for ``roi_size`` inputs.
        x: the scans, preprocessed without cropping (``fov='whole'``).
        roi_size: the window (default the model's ``img_size``).
        method: as in :func:`vit3d.explain.explain`.
        overlap, aggregate, batch_size, pad_value: as in :func:`vit3d.inference.sliding_window_logits`.
        blend: importance of each voxel within a window when windows overlap.

    Returns:
        An :class:`AttentionMap` whose ``map`` covers ``x``'s spatial size, ``logits`` are the aggregate and
        ``tokens`` the per-window token maps ``(B * windows, *grid)`` (window-major).
    """
    from monai.data.utils import compute_importance_map

    check_choice("aggregate", aggregate, AGGREGATES)
    check_choice("blend", blend, ("gaussian", "constant"))
    x = x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)
    roi = model_input_size(model) if roi_size is None else to_ntuple(roi_size, x.ndim - 2, "roi_size")
    if x.ndim - 2 != len(roi):
        raise ConfigError(f"input of shape {tuple(x.shape)} is not (B, C, *spatial) for windows of {roi}")
    device = next(model.parameters()).device
    padded, pad = pad_to_window(x.float(), roi, pad_value)
    windows = window_slices(padded.shape[2:], roi, overlap)
    b = padded.shape[0]
    maps, logits, tokens = [], [], []
    for group in window_batches(windows, batch_size):
        res = explain(model, crop_windows(padded, group).to(device), method=method)
        maps.append(res.map.float().cpu().reshape(len(group), b, *roi))
        logits.append(res.logits.float().cpu().reshape(len(group), b, -1))
        tokens.append(res.tokens.float().cpu())
    window_maps = torch.cat(maps, 0)  # (W, B, *roi)
    window_logits = torch.cat(logits, 0).transpose(0, 1)  # (B, W, K)
    agg, weights = aggregate_logits(window_logits, aggregate)
    if weights is None:  # 'max': how strongly each window votes for the class the scan is given
        top = agg.argmax(-1)
        weights = window_logits[torch.arange(b), :, top].softmax(dim=1)
    weights = weights * weights.shape[1]  # mean 1, so that the blend keeps the maps' scale
    importance = compute_importance_map(roi, mode=blend, device="cpu").float()
    total = torch.zeros(b, *padded.shape[2:])
    norm = torch.zeros(b, *padded.shape[2:])
    for w, sl in enumerate(windows):
        total[(slice(None), *sl)] += importance * weights[:, w].view(b, *([1] * len(roi))) * window_maps[w]
        norm[(slice(None), *sl)] += importance
    stitched = total / norm.clamp_min(torch.finfo(torch.float32).tiny)
    crop = tuple(slice(p0, s - p1) for (p0, p1), s in zip(pad, padded.shape[2:], strict=True))
    return AttentionMap(tokens=torch.cat(tokens, 0), map=stitched[(slice(None), *crop)], logits=agg, method=method,
                        read_from=f"sliding windows ({len(windows)}, {aggregate})")
