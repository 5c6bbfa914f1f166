"""Position embeddings: fixed sin-cos for 1-, 2- and 3-D grids, and resampling of learned tables."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

_INTERP = {1: "linear", 2: "bicubic", 3: "trilinear"}


def sincos_pos_embed(grid_size: Sequence[int], dim: int, temperature: float = 10000.0,
                     dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> torch.Tensor:
    """Fixed sin-cos embedding of an N-d grid (Vaswani et al. 2017; MAE/MoCo-v3 layout for 2D).

    Channels are split among the axes in (sin, cos) pairs, axis 0 first; when ``dim / 2`` is not a multiple of the
    number of axes the leading axes get one extra pair. Token order is row-major over ``grid_size``.

    Returns:
        ``(prod(grid_size), dim)`` tensor.
    """
    grid_size = tuple(int(g) for g in grid_size)
    n = len(grid_size)
    if dim % 2:
        raise ValueError(f"sin-cos position embedding needs an even embed_dim, got {dim}")
    pairs = dim // 2
    per_axis = [pairs // n + (1 if i < pairs % n else 0) for i in range(n)]
    if min(per_axis) == 0:
        raise ValueError(f"embed_dim {dim} is too small for a {n}-D sin-cos embedding; use at least {2 * n}")
    coords = torch.meshgrid(*[torch.arange(g, dtype=torch.float64, device=device) for g in grid_size], indexing="ij")
    parts = []
    for axis_coords, k in zip(coords, per_axis, strict=True):
        omega = 1.0 / temperature ** (torch.arange(k, dtype=torch.float64, device=device) / k)
        angles = axis_coords.reshape(-1, 1) * omega.reshape(1, -1)
        parts += [angles.sin(), angles.cos()]
    return torch.cat(parts, dim=1).to(dtype)


def resample_pos_embed(pos_embed: torch.Tensor, new_size: Sequence[int], old_size: Sequence[int], *,
                       num_prefix_tokens: int = 1, interpolation: str | None = None,
                       antialias: bool = False) -> torch.Tensor:
    """Resize a ``(1, prefix + prod(old_size), D)`` table to ``new_size``, keeping prefix tokens intact.

    Works for grids of any number of dims (linear for 1D, bicubic for 2D, trilinear for 3D unless
    ``interpolation`` says otherwise). Returns the input unchanged when the sizes match.
    """
    new_size, old_size = tuple(int(s) for s in new_size), tuple(int(s) for s in old_size)
    if len(new_size) != len(old_size):
        raise ValueError(f"cannot resample a {len(old_size)}-D grid {old_size} to a {len(new_size)}-D grid {new_size}")
    expected = num_prefix_tokens + math.prod(old_size)
    if pos_embed.ndim != 3 or pos_embed.shape[1] != expected:
        raise ValueError(f"pos_embed of shape {tuple(pos_embed.shape)} does not hold {num_prefix_tokens} prefix tokens "
                         f"plus a {old_size} grid ({expected} tokens)")
    if new_size == old_size:
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    dim = grid.shape[-1]
    mode = interpolation or _INTERP[len(old_size)]
    grid = grid.float().reshape(1, *old_size, dim).movedim(-1, 1)
    align = None if mode in ("nearest", "area") else False
    grid = F.interpolate(grid, size=new_size, mode=mode, align_corners=align,
                         antialias=antialias if mode in ("bilinear", "bicubic") else False)
    grid = grid.movedim(1, -1).reshape(1, -1, dim).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)


def sinusoid_table(num_positions: int, dim: int, temperature: float = 10000.0,
                   dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> torch.Tensor:
    """Fixed 1-D sin-cos table over a flattened token index (Vaswani et al. 2017, section 3.5).

    Channel ``2i`` holds ``sin(pos / temperature^(2i / dim))`` and channel ``2i + 1`` the cosine of the same
    angle, interleaved: the layout of VideoMAE (Tong et al. 2022, https://arxiv.org/abs/2203.12602), whose
    checkpoints store no table and regenerate this one over the ``(t, h, w)`` row-major token order.

    Returns:
        ``(num_positions, dim)`` tensor.
    """
    if num_positions < 1 or dim < 1:
        raise ValueError(f"sinusoid_table needs num_positions >= 1 and dim >= 1, got {num_positions}, {dim}")
    pos = torch.arange(num_positions, dtype=torch.float64, device=device)[:, None]
    exponent = (torch.arange(dim, device=device) // 2).to(torch.float64) * 2 / dim
    angles = pos / temperature ** exponent[None]
    table = angles.clone()
    table[:, 0::2], table[:, 1::2] = angles[:, 0::2].sin(), angles[:, 1::2].cos()
    return table.to(dtype)
