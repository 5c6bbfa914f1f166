"""Patch (and tubelet) embedding for any number of spatial dims: a ConvNd with kernel = stride = patch.

The parameters are those of the ConvNd (``proj.weight`` ``(D, C, *patch)``, ``proj.bias``), so checkpoints and
inflation see a convolution. On CPU in bf16 the same map is computed as a "patchify" reshape and one
``F.linear`` with ``weight.flatten(1)``, which equals the convolution (kernel = stride means no patch overlaps) and
was measured faster: forward + backward of a 2x16x16 tubelet embedding to 384 wide, one thread, 2-core AMD EPYC,
torch 2.13, bf16 autocast: 24-33 vs 32-46 ms (batch 4, 16x112x112) and 46-49 vs 58-61 ms (batch 2, 16x224x224).
In fp32 the two tied within noise (44-63 vs 44-75 ms, 89-101 vs 98-109 ms), and the linear path saves its own
permuted fp32 copy of the input for the weight gradient where the convolution saves the input itself (+19 MB
at batch 2 of 3x16x224x224), so fp32 keeps the convolution. Other devices keep it too (cuDNN) until measured there.
When the input needs no gradient (training on data), the bf16 path saves a reference to the input rather than its
patchified bf16 copy and patchifies again for the weight gradient (-9 MiB at batch 2 of 3x16x224x224).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vit3d.errors import ConfigError

from .helpers import CONV, check_divisible, check_input_shape, infer_spatial_dims, to_ntuple
from .recompute import _to, _weight_grads


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
        if n not in CONV:
            raise ConfigError(f"spatial_dims={n} is not supported; use 1, 2 or 3")
        self.spatial_dims = n
        self.img_size = to_ntuple(img_size, n, "img_size")
        self.patch_size = to_ntuple(patch_size, n, "patch_size")
        check_divisible(self.img_size, self.patch_size)
        self.grid_size = tuple(s // p for s, p in zip(self.img_size, self.patch_size, strict=True))
        self.num_patches = math.prod(self.grid_size)
        self.in_chans = in_chans
        self.dynamic_img_size = dynamic_img_size
        self.proj = CONV[n](in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size, bias=bias)

    def grid_for(self, spatial: Sequence[int]) -> tuple[int, ...]:
        """Token grid for an input of ``spatial`` size, validating it against the model."""
        spatial = tuple(spatial)
        if spatial != self.img_size:
            if not self.dynamic_img_size:
                raise ConfigError(f"input spatial size {spatial} differs from img_size {self.img_size}; resize the "
                                 "input or build the model with dynamic_img_size=True")
            check_divisible(spatial, self.patch_size, "input size")
        return tuple(s // p for s, p in zip(spatial, self.patch_size, strict=True))

    def check_input(self, x: torch.Tensor) -> tuple[int, ...]:
        """Validate rank and channels of ``x``; return its token grid."""
        check_input_shape(x.shape, self.spatial_dims, self.in_chans)
        return self.grid_for(x.shape[2:])

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens ``(B, N, D)`` of an input already validated by :meth:`check_input` (patchify + linear on CPU bf16)."""
        autocast = x.device.type == "cpu" and torch.is_autocast_enabled("cpu")
        if x.device.type != "cpu" or not (autocast or x.dtype == torch.bfloat16):
            return self.proj(x).flatten(2).transpose(1, 2)
        dtype = torch.get_autocast_dtype("cpu") if autocast else x.dtype
        if not x.requires_grad and torch.is_grad_enabled():
            return _PatchLinear.apply(x, self.proj.weight, self.proj.bias, self.patch_size, dtype)
        # cast before the permuting copy: half the bytes to move
        return F.linear(patchify(x.to(dtype), self.patch_size), self.proj.weight.flatten(1), self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.project(x)


class _PatchLinear(torch.autograd.Function):
    """``F.linear(patchify(x), w.flatten(1), b)`` in ``dtype`` for an ``x`` that needs no gradient, saving ``x``
    itself (which its caller holds anyway) instead of the patchified copy the weight gradient reads."""

    @staticmethod
    def forward(ctx, x, weight, bias, patch_size, dtype):
        with torch.autocast(x.device.type, enabled=False):
            out = F.linear(patchify(x.to(dtype), patch_size), weight.flatten(1).to(dtype), _to(bias, dtype))
        ctx.save_for_backward(x, weight)
        ctx.patch_size, ctx.dtype, ctx.has_bias = patch_size, dtype, bias is not None
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        with torch.autocast(x.device.type, enabled=False):
            grad_w, grad_b = _weight_grads(grad, patchify(x.to(ctx.dtype), ctx.patch_size), ctx.needs_input_grad[1],
                                           ctx.has_bias and ctx.needs_input_grad[2])
        grad_w = None if grad_w is None else grad_w.to(weight.dtype).reshape(weight.shape)
        return None, grad_w, _to(grad_b, weight.dtype), None, None


def patchify(x: torch.Tensor, patch_size: Sequence[int]) -> torch.Tensor:
    """``(B, C, *spatial)`` -> ``(B, N, C * prod(patch))``: non-overlapping patches, each flattened as ``(C, *patch)``.

    Patches are ordered row-major over the token grid and their values in the order of a ConvNd weight
    ``(D, C, *patch)``, so ``F.linear(patchify(x, p), w.flatten(1), b)`` equals the strided convolution.
    """
    B, C, *spatial = x.shape
    n = len(spatial)
    grid = [s // p for s, p in zip(spatial, patch_size, strict=True)]
    x = x.reshape(B, C, *[v for g, p in zip(grid, patch_size, strict=True) for v in (g, p)])
    x = x.permute(0, *range(2, 2 + 2 * n, 2), 1, *range(3, 3 + 2 * n, 2))
    return x.reshape(B, math.prod(grid), C * math.prod(patch_size))
