"""Linear layers that recompute their cheap input in the backward pass instead of saving it.

In a pre-norm transformer block, autograd saves per token: the input of each LayerNorm (for the norm's
backward) *and* its output (for the following Linear's weight gradient), the MLP's hidden pre-activation (for
GELU's backward) *and* the GELU output (for ``fc2``'s weight gradient). Norm and activation outputs are cheap to
recompute from what is saved anyway, so these functions save only the first of each pair and rebuild the second
in the backward pass: 6 of the 16 token-widths a block keeps for its backward (norm outputs 2 x 1, GELU output 4),
for an extra LayerNorm and GELU forward per block. Measured with ``benchmarks/levers.py`` on a 2-core CPU
(``vit_small_patch16_3d``, 16x112x112 and 16x224x224 clips, fp32 and bf16): -27 % to -36 % of a training step's
peak memory, step time within the +-6 % noise of the A/B. The same selective recomputation is the default of Megatron-LM
(Korthikanti et al. 2022, https://arxiv.org/abs/2205.05198), there applied to the attention scores.

The forward values are bitwise those of ``linear(norm(x))`` and ``linear(gelu(h))``; gradients match autograd's
up to float summation order. Under ``torch.autocast`` the matmul runs in the autocast dtype as ``nn.Linear``'s
would, and the norm and activation in their input's dtype (LayerNorm has no CPU autocast policy; GELU follows
its input). Weights are cast again in the backward rather than saved in the autocast dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = ["CHUNK_ROWS", "layer_norm_linear", "layer_norm_mlp"]

# Rows (tokens of all samples) per chunk of the MLP's backward pass: at 1,536 hidden features a chunk's
# temporaries are 3-6 MiB. Up to this many rows the gradients equal autograd's bit for bit; above it ``fc2``'s
# weight and bias gradients are sums of per-chunk products (in fp32) and differ by float summation order.
CHUNK_ROWS = 1024


def _compute_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype ``nn.Linear`` would run in here: the autocast dtype when autocast is on for ``x``'s device."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return weight.dtype


def _weight_grads(grad: torch.Tensor, inp: torch.Tensor, needs_weight: bool,
                  needs_bias: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Gradients of ``F.linear(inp, weight, bias)`` w.r.t. weight and bias (``None`` where not needed)."""
    flat_grad = grad.reshape(-1, grad.shape[-1])
    grad_w = flat_grad.t().mm(inp.reshape(-1, inp.shape[-1])) if needs_weight else None
    grad_b = flat_grad.sum(0) if needs_bias else None
    return grad_w, grad_b


def _to(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """``t`` in ``dtype`` (``None`` stays ``None``)."""
    return None if t is None else t.to(dtype)


def _norm_backward(grad_y: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor,
                   norm_weight: torch.Tensor | None, norm_bias: torch.Tensor | None,
                   needs: tuple[bool, ...]) -> tuple[torch.Tensor | None, ...]:
    """LayerNorm's input, weight and bias gradients (``needs``: the Function's ``needs_input_grad``)."""
    mask = [needs[0], norm_weight is not None and needs[1], norm_bias is not None and needs[2]]
    return torch.ops.aten.native_layer_norm_backward(grad_y.to(x.dtype), x, x.shape[-1:], mean, rstd, norm_weight,
                                                     norm_bias, mask)


class _LayerNormLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, norm_weight, norm_bias, eps, weight, bias, dtype):
        device = x.device.type
        with torch.autocast(device, enabled=False):
            y, mean, rstd = torch.native_layer_norm(x, x.shape[-1:], norm_weight, norm_bias, eps)
            out = F.linear(y.to(dtype), weight.to(dtype), _to(bias, dtype))
        ctx.save_for_backward(x, mean, rstd, norm_weight, norm_bias, weight)
        ctx.eps, ctx.dtype, ctx.has_bias = eps, dtype, bias is not None
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, mean, rstd, norm_weight, norm_bias, weight = ctx.saved_tensors
        device = x.device.type
        with torch.autocast(device, enabled=False):
            y = torch.native_layer_norm(x, x.shape[-1:], norm_weight, norm_bias, ctx.eps)[0].to(ctx.dtype)
            grad_w, grad_b = _weight_grads(grad, y, ctx.needs_input_grad[4], ctx.has_bias and ctx.needs_input_grad[5])
            del y  # before the input gradient is allocated: the two are never alive together
            grad_y = grad.matmul(weight.to(ctx.dtype))
            grad_x, grad_nw, grad_nb = _norm_backward(grad_y, x, mean, rstd, norm_weight, norm_bias,
                                                      ctx.needs_input_grad)
        return grad_x, grad_nw, grad_nb, None, _to(grad_w, weight.dtype), _to(grad_b, weight.dtype), None


class _LayerNormMlp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, norm_weight, norm_bias, eps, w1, b1, w2, b2, approximate, dtype):
        with torch.autocast(x.device.type, enabled=False):
            y, mean, rstd = torch.native_layer_norm(x, x.shape[-1:], norm_weight, norm_bias, eps)
            h = F.linear(y.to(dtype), w1.to(dtype), _to(b1, dtype))
            del y
            out = F.linear(F.gelu(h, approximate=approximate), w2.to(dtype), _to(b2, dtype))
        ctx.save_for_backward(x, mean, rstd, norm_weight, norm_bias, w1, w2)
        ctx.hidden = h  # an intermediate, held on ctx so that the backward pass can free it as soon as it is used
        ctx.eps, ctx.approximate, ctx.dtype = eps, approximate, dtype
        ctx.has_bias = (b1 is not None, b2 is not None)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, mean, rstd, norm_weight, norm_bias, w1, w2 = ctx.saved_tensors
        h, ctx.hidden = ctx.hidden, None
        needs, dtype, approximate = ctx.needs_input_grad, ctx.dtype, ctx.approximate
        rows, width = x.numel() // x.shape[-1], x.shape[-1]
        x2, h2, g2 = x.reshape(rows, width), h.view(rows, -1), grad.reshape(rows, -1)
        w2c = w2.to(dtype)
        grad_w2 = grad_b2 = None

        def accumulate(total: torch.Tensor | None, part: torch.Tensor) -> torch.Tensor:
            """Chunk sums in fp32 (the first chunk's product converted, no zero-filled buffer first)."""
            return part.float() if total is None else total.add_(part)

        with torch.autocast(x.device.type, enabled=False):
            # fc2 and GELU in row chunks: the recomputed activation and the activation gradient exist one chunk
            # at a time, and the hidden gradient overwrites the saved pre-activation in place.
            for r in range(0, rows, CHUNK_ROWS):
                g, hc = g2[r:r + CHUNK_ROWS], h2[r:r + CHUNK_ROWS]
                act = F.gelu(hc, approximate=approximate)
                part = g.t().mm(act) if needs[6] else None
                del act  # before the fp32 accumulation allocates
                if part is not None:
                    grad_w2 = accumulate(grad_w2, part)
                if ctx.has_bias[1] and needs[7]:
                    grad_b2 = accumulate(grad_b2, g.sum(0))
                torch.ops.aten.gelu_backward.grad_input(g.mm(w2c), hc, approximate=approximate, grad_input=hc)
            grad_h = h2
            del h, h2, hc  # the loop's slice too, or the buffer outlives grad_h
            # the norm output again, cast chunk by chunk, for fc1's weight gradient
            y = torch.empty(rows, width, dtype=dtype, device=x.device)
            for r in range(0, rows, CHUNK_ROWS):
                y[r:r + CHUNK_ROWS] = torch.native_layer_norm(x2[r:r + CHUNK_ROWS], (width,), norm_weight, norm_bias,
                                                              ctx.eps)[0]
            grad_w1, grad_b1 = _weight_grads(grad_h, y, needs[4], ctx.has_bias[0] and needs[5])
            del y
            grad_y = grad_h.mm(w1.to(dtype)).view(x.shape)
            del grad_h  # frees the hidden-width buffer before the norm's backward allocates
            grad_x, grad_nw, grad_nb = _norm_backward(grad_y, x, mean, rstd, norm_weight, norm_bias, needs)
        wd = w1.dtype
        return (grad_x, grad_nw, grad_nb, None, _to(grad_w1, wd), _to(grad_b1, wd), _to(grad_w2, wd),
                _to(grad_b2, wd), None, None)


def layer_norm_linear(x: torch.Tensor, norm: nn.LayerNorm, linear: nn.Linear) -> torch.Tensor:
    """``linear(norm(x))`` over the last axis, saving ``x`` but not the normalised tensor for the backward pass."""
    return _LayerNormLinear.apply(x, norm.weight, norm.bias, norm.eps, linear.weight, linear.bias,
                                  _compute_dtype(x, linear.weight))


def layer_norm_mlp(x: torch.Tensor, norm: nn.LayerNorm, mlp: nn.Module) -> torch.Tensor:
    """``mlp.fc2(mlp.act(mlp.fc1(norm(x))))`` for a GELU ``mlp.act``, saving ``x`` and ``fc1``'s output only."""
    return _LayerNormMlp.apply(x, norm.weight, norm.bias, norm.eps, mlp.fc1.weight, mlp.fc1.bias, mlp.fc2.weight,
                               mlp.fc2.bias, mlp.act.approximate, _compute_dtype(x, mlp.fc1.weight))
