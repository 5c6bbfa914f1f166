"""Patch (and tubelet) embedding for any number of spatial dims: a ConvNd with kernel = stride = patch."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .helpers import check_divisible, infer_spatial_dims, to_ntuple

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


class PatchEmbed(nn.Module):
    """``(B, C, *spatial)`` -> tokens ``(B, N, D)`` with ``N = prod(spatial // patch)``.

    A different patch size per axis gives anisotropic tubelets such as ``(2, 16, 16)`` for clips ``(T, H, W)``.

    Args:
        img_size: expected input size per spatial axis.
        patch_size: patch size per spatial axis.
        in_chans: input channels.
        embed_dim: token width.
        spatial_dims: 1, 2 or 3; inferred from ``img_size`` / ``patch_size`` when omitted.
        bias: conv bias.
        dynamic_img_size: accept any input size that the patch divides.
    """

    def __init__(self, img_size: int | Sequence[int] = 224, patch_size: int | Sequence[int] = 16, in_chans: int = 3,
                 embed_dim: int = 768, *, spatial_dims: int | None = None, bias: bool = True,
                 dynamic_img_size: bool = False) -> None:
        super().__init__()
        n = spatial_dims or infer_spatial_dims(img_size, patch_size)
        if n not in _CONV:
            raise ValueError(f"spatial_dims={n} is not supported; use 1, 2 or 3")
        self.spatial_dims = n
        self.img_size = to_ntuple(img_size, n, "img_size")
        self.patch_size = to_ntuple(patch_size, n, "patch_size")
        check_divisible(self.img_size, self.patch_size)
        self.grid_size = tuple(s // p for s, p in zip(self.img_size, self.patch_size))
        self.num_patches = math.prod(self.grid_size)
        self.in_chans = in_chans
        self.dynamic_img_size = dynamic_img_size
        self.proj = _CONV[n](in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size, bias=bias)

    def grid_for(self, spatial: Sequence[int]) -> tuple[int, ...]:
        """Token grid for an input of ``spatial`` size, validating it against the model."""
        spatial = tuple(spatial)
        if spatial != self.img_size:
            if not self.dynamic_img_size:
                raise ValueError(f"input spatial size {spatial} differs from img_size {self.img_size}; resize the "
                                 "input or build the model with dynamic_img_size=True")
            check_divisible(spatial, self.patch_size, "input size")
        return tuple(s // p for s, p in zip(spatial, self.patch_size))

    def check_input(self, x: torch.Tensor) -> tuple[int, ...]:
        """Validate rank and channels of ``x``; return its token grid."""
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(f"expected input of shape (B, C, {', '.join('DHW'[-self.spatial_dims:])}) with "
                             f"{self.spatial_dims + 2} dims, got {tuple(x.shape)}")
        if x.shape[1] != self.in_chans:
            raise ValueError(f"input has {x.shape[1]} channels but the model was built with in_chans="
                             f"{self.in_chans}; change in_chans or the input's channels")
        return self.grid_for(x.shape[2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.proj(x).flatten(2).transpose(1, 2)
