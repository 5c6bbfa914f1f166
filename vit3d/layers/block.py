"""Pre-norm transformer block with optional LayerScale (Touvron et al. 2021, https://arxiv.org/abs/2103.17239)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .attention import Attention
from .drop import DropPath
from .mlp import Mlp
from .recompute import layer_norm_linear, layer_norm_mlp, proj_residual_mlp


class LayerScale(nn.Module):
    """Per-channel learnable scale of a residual branch, initialised small."""

    def __init__(self, dim: int, init_values: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


def _idle(module: nn.Module) -> bool:
    """Whether a residual-branch module passes its input through unchanged in its current mode."""
    if isinstance(module, (nn.Dropout, DropPath)):
        return not module.training or getattr(module, "p", getattr(module, "drop_prob", 0.0)) == 0.0
    return isinstance(module, nn.Identity)


class Block(nn.Module):
    """``x + drop_path(ls1(attn(norm1(x))))`` then ``x + drop_path(ls2(mlp(norm2(x))))``.

    With gradients, the outputs of ``norm1``, ``norm2`` and the MLP activation are recomputed in the backward
    pass instead of saved (:mod:`vit3d.layers.recompute`): 6 of 16 saved token-widths fewer, the same values.
    Where both residual branches are plain (no LayerScale, and DropPath and dropout off or idle), the residual
    stream between the two halves is not saved either but rebuilt from the block input and the attention output,
    which are saved anyway (:func:`~vit3d.layers.recompute.proj_residual_mlp`): one more fp32 token-width fewer.
    ``recompute_norm_act = False`` on a block (or ``set_recompute_norm_act(False)`` on a model) saves them as
    plain modules would; forward hooks on ``norm1``, ``norm2``, ``attn.qkv``, ``attn.proj`` and the MLP's layers
    fire only then. The recomputing path needs a GELU MLP without dropout between its layers; other blocks take
    the plain one. Under ``torch.compile`` the recomputing functions run eagerly between compiled regions.
    """

    def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 proj_drop: float = 0.0, attn_drop: float = 0.0, init_values: float | None = None,
                 drop_path: float = 0.0, norm_eps: float = 1e-6, act_layer: Callable[[], nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.recompute_norm_act = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Under autocast the residual stream is fp32 and LayerNorm runs in it on every device; a low-precision
        # stream under autocast (norms upcast on CUDA, not on CPU) keeps the plain modules' semantics instead.
        if (self.recompute_norm_act and torch.is_grad_enabled() and x.requires_grad
                and self.attn.attn_sink is None and isinstance(self.mlp.act, nn.GELU)
                and not (self.training and self.mlp.drop1.p)
                and (x.dtype == torch.float32 or not torch.is_autocast_enabled(x.device.type))):
            qkv = layer_norm_linear(x, self.norm1, self.attn.qkv)
            if all(_idle(m) for m in (self.ls1, self.drop_path1, self.attn.proj_drop, self.ls2, self.drop_path2,
                                      self.mlp.drop2)):
                return proj_residual_mlp(x, self.attn.mix(qkv), self.attn.proj, self.norm2, self.mlp)
            x = x + self.drop_path1(self.ls1(self.attn.attend(qkv)))
            return x + self.drop_path2(self.ls2(self.mlp.drop2(layer_norm_mlp(x, self.norm2, self.mlp))))
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
