"""Multi-head self-attention with a fused qkv projection (Vaswani et al. 2017, https://arxiv.org/abs/1706.03762).

The default path runs :func:`torch.nn.functional.scaled_dot_product_attention` (flash / memory-efficient kernels
where the device has them). One case takes an explicit ``softmax(q k^T / sqrt(d)) v`` instead, because it was
measured faster there: a CPU training step in bf16 with at most :data:`CPU_BF16_EXPLICIT_MAX_TOKENS` tokens (see
:func:`use_explicit_attention`). :meth:`Attention.forward_with_attn` is the explicit opt-in path that also returns
the attention probabilities; :func:`record_attention` switches a whole model onto it for one block of code so the
maps can be read without touching the model's ``forward``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from vit3d.errors import ConfigError

# CPU bf16, forward + backward, batch 4, 6 heads of 64, CPU time of one thread (2-core AMD EPYC with AVX-512 bf16,
# torch 2.13): explicit 8.6 / 30 / 113 / 653 ms against SDPA 21 / 57 / 173 / 921 ms at 197 / 393 / 785 / 1569
# tokens. In fp32, and without gradients in either dtype, SDPA was as fast or faster at every length. Above
# this length the explicit path's saved (B, heads, N, N) probabilities cost more memory than its time saves
# (1,569 tokens: +59 MB per layer at batch 2), so SDPA keeps long sequences. Re-measure with
# `python benchmarks/levers.py --cpu-time` before changing it.
CPU_BF16_EXPLICIT_MAX_TOKENS = 1024


def use_explicit_attention(q: torch.Tensor) -> bool:
    """Whether :class:`Attention` computes ``q`` ``(B, heads, N, head_dim)`` explicitly rather than with SDPA.

    True only on CPU, for bf16 ``q`` that needs gradients, with ``N <= CPU_BF16_EXPLICIT_MAX_TOKENS``: there the
    fused CPU kernel's backward is slower than matmul-softmax-matmul. CUDA and every other case use SDPA.
    """
    return (q.device.type == "cpu" and q.dtype == torch.bfloat16 and q.requires_grad
            and q.shape[-2] <= CPU_BF16_EXPLICIT_MAX_TOKENS)


class Attention(nn.Module):
    """Self-attention over tokens ``(B, N, D)``; parameter names follow timm (``qkv``, ``proj``)."""

    def __init__(self, dim: int, num_heads: int = 8, *, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"embed_dim {dim} is not divisible by num_heads {num_heads}; "
                             f"pick num_heads among the divisors of {dim}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.attn_sink: list[torch.Tensor] | None = None  # set by record_attention

    def _split_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(B, N, D)`` -> q, k, v each ``(B, heads, N, head_dim)``."""
        return self._heads(self.qkv(x))

    def _heads(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The ``qkv`` projection ``(B, N, 3 D)`` -> q, k, v each ``(B, heads, N, head_dim)`` (views)."""
        B, N, _ = qkv.shape
        return qkv.reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)

    def _merge(self, out: torch.Tensor) -> torch.Tensor:
        """``(B, heads, N, head_dim)`` -> ``(B, N, D)``, heads side by side (a view of SDPA's CPU output)."""
        B, _, N, _ = out.shape
        return out.transpose(1, 2).reshape(B, N, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.attn_sink is not None:
            out, attn = self.forward_with_attn(x)
            self.attn_sink.append(attn)
            return out
        return self.attend(self.qkv(x))

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """Attention and output projection from the ``qkv`` projection ``(B, N, 3 D)`` (the rest of
        :meth:`forward`, for a caller that computed ``qkv`` itself; see :class:`~vit3d.layers.Block`)."""
        return self.proj_drop(self.proj(self.mix(qkv)))

    def mix(self, qkv: torch.Tensor) -> torch.Tensor:
        """The heads' outputs ``(B, N, D)`` before the output projection, from the ``qkv`` projection."""
        q, k, v = self._heads(qkv)
        if use_explicit_attention(q):
            attn = q @ k.transpose(-2, -1)
            attn.mul_(self.scale)  # in place: the matmul's backward needs q and k, not its output
            # softmax in bf16: the CPU kernel accumulates in fp32 internally, and saving one bf16 copy of the
            # (B, heads, N, N) probabilities (not an fp32 one plus a bf16 cast) is what makes this path fast.
            out = self.attn_drop(attn.softmax(dim=-1)) @ v
        else:
            dropout_p = self.attn_drop.p if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=self.scale)
        return self._merge(out)

    def forward_with_attn(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Explicit softmax(q k^T / sqrt(d)) v; returns the output and the probabilities ``(B, heads, N, N)``."""
        q, k, v = self._split_qkv(x)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = attn.float().softmax(dim=-1).to(q.dtype)
        out = self.attn_drop(attn) @ v
        return self.proj_drop(self.proj(self._merge(out))), attn


@contextmanager
def record_attention(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Record every :class:`Attention` layer's probabilities during the forward passes run inside the block.

    The yielded list fills with one ``(B, heads, N, N)`` tensor per attention layer per forward pass, in
    execution order. Only the attention layers switch to the explicit path; everything else is unchanged, and
    the model returns to SDPA when the block exits.

    Example:
        >>> with record_attention(model) as maps:
        ...     logits = model(x)
        >>> len(maps) == model_depth
    """
    layers = [m for m in model.modules() if isinstance(m, Attention)]
    if not layers:
        raise ConfigError(f"{type(model).__name__} has no vit3d Attention layers to record")
    maps: list[torch.Tensor] = []
    for layer in layers:
        layer.attn_sink = maps
    try:
        yield maps
    finally:
        for layer in layers:
            layer.attn_sink = None
