"""Linear layers that recompute their cheap input in the backward pass instead of saving it.

In a pre-norm transformer block, autograd saves per token: the input of each LayerNorm (for the norm's
backward) *and* its output (for the following Linear's weight gradient), the MLP's hidden pre-activation (for
GELU's backward) *and* the GELU output (for ``fc2``'s weight gradient). Norm and activation outputs are cheap to
recompute from what is saved anyway, so these functions save only the first of each pair and rebuild the second
in the backward pass: 6 of the 16 token-widths a block keeps for its backward (norm outputs 2 x 1, GELU output 4),
for an extra LayerNorm and GELU forward per block. Measured with ``benchmarks/levers.py`` on a 2-core CPU
(``vit_small_patch16_3d``, 16x112x112 and 16x224x224 clips, fp32 and bf16), together with the residual rebuild
below: -33 % to -41 % of a training step's peak memory, step time within the +-8 % noise of the A/B. The same
selective recomputation is the default of Megatron-LM (Korthikanti et al. 2022, https://arxiv.org/abs/2205.05198),
there applied to the attention scores.

Where a block's residual branches are plain, :func:`proj_residual_mlp` also drops the residual stream between
attention and MLP (the norm's fp32 input): it is rebuilt from the block input and the attention output, which
the attention saves anyway, for one ``D x D`` matmul per block in the backward pass. Full-width temporaries are
bounded too: the GELU output, the output projection and the norm output for ``fc1``'s weight gradient exist one
row chunk (:data:`CHUNK_ROWS`) at a time, in the forward and the backward pass.

Within one row chunk the forward values and the gradients are bitwise those of ``linear(norm(x))``,
``linear(gelu(h))`` and the residual adds as autograd runs them (tested); over several chunks the weight
gradients are sums of per-chunk products (in fp32) and differ by float summation order, and a matmul over a
chunk may round differently from one over all rows. Under ``torch.autocast`` the matmul runs in the autocast
dtype as ``nn.Linear``'s would, and the norm and activation in their input's dtype (LayerNorm has no CPU autocast
policy; GELU follows its input). Weights are cast again in the backward rather than saved in the autocast dtype.

Under ``torch.compile`` the three functions run eagerly (``torch.compiler.disable``): dynamo breaks the graph at
each call and compiles what lies between. Traced into the graph they ran slower and held more memory in a trial on
the project's CPU, and the saved-tensor-hooks query cannot be traced. A model with ``set_recompute_norm_act(False)``
gives the compiler whole blocks instead, and its partitioner chooses what to recompute (docs/benchmarks.md compares
the two compiled).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = ["CHUNK_ROWS", "layer_norm_linear", "layer_norm_mlp", "proj_residual_mlp"]

# Rows (tokens of all samples) per chunk of the MLP and the output projection: at 1,536 hidden features a
# chunk's temporaries are 3-6 MiB. Up to this many rows the values and gradients equal autograd's bit for bit;
# above it the weight and bias gradients are sums of per-chunk products (in fp32) and differ by float summation
# order (on the CPU measured, forward values still matched bit for bit with 1,024-row chunks).
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


def _row_chunks(rows: int) -> list[slice]:
    """Consecutive row slices of :data:`CHUNK_ROWS` rows (the last one shorter), covering ``rows`` rows."""
    return [slice(r, r + CHUNK_ROWS) for r in range(0, rows, CHUNK_ROWS)]


def _hidden_on_ctx() -> bool:
    """Whether ``fc1``'s output may be held on the autograd context, where the backward pass frees it as soon as it
    is used, rather than passed through ``save_for_backward``. Not while saved-tensor hooks are active (activation
    checkpointing, offloading to the CPU): they must see every tensor the backward pass needs, or checkpointing
    would keep this one alive from the forward pass on. Where torch cannot say, the hooks get it."""
    top = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)
    return top is not None and top(False) is None


def _save(ctx, tensors: tuple, hidden: torch.Tensor) -> None:
    """Save ``tensors`` for the backward pass, and ``hidden`` on ``ctx`` or with them (:func:`_hidden_on_ctx`)."""
    if _hidden_on_ctx():
        ctx.hidden = hidden
        ctx.save_for_backward(*tensors)
    else:
        ctx.hidden = None
        ctx.save_for_backward(*tensors, hidden)


def _saved(ctx) -> tuple:
    """The tensors :func:`_save` saved, with ``ctx.hidden`` set from them where they carried it."""
    saved = ctx.saved_tensors
    if ctx.hidden is None:
        *saved, ctx.hidden = saved
    return tuple(saved)


def _mlp_forward(x: torch.Tensor, norm_weight, norm_bias, eps: float, w1, b1, w2, b2, approximate: str,
                 dtype: torch.dtype, into: torch.Tensor | None = None):
    """``fc2(gelu(fc1(norm(x))))`` with ``fc2`` applied in row chunks, so that the GELU output exists one chunk at
    a time. Returns ``(out, h, mean, rstd)``: ``h`` is ``fc1``'s output (saved for the backward pass); ``out`` is
    a new tensor, or ``into`` with the MLP output added to it in place (a residual stream the caller owns)."""
    y, mean, rstd = torch.native_layer_norm(x, x.shape[-1:], norm_weight, norm_bias, eps)
    h = F.linear(y.to(dtype), w1.to(dtype), _to(b1, dtype))
    del y
    w2c, b2c = w2.to(dtype), _to(b2, dtype)
    rows = h.numel() // h.shape[-1]
    h2 = h.view(rows, -1)
    out = into if into is not None else h.new_empty(*h.shape[:-1], w2.shape[0])
    out2 = out.view(rows, -1)
    for c in _row_chunks(rows):
        part = F.linear(F.gelu(h2[c], approximate=approximate), w2c, b2c)
        if into is not None:
            out2[c].add_(part)
        else:
            out2[c] = part
        del part  # before the next chunk's product is allocated
    return out, h, mean, rstd


def _mlp_backward(ctx, grad: torch.Tensor, x: torch.Tensor | Callable[[], torch.Tensor], mean, rstd, norm_weight,
                  norm_bias, w1, w2, needs: tuple[bool, ...]):
    """Gradients of :func:`_mlp_forward` for ``grad`` of its output (any float dtype; cast chunk by chunk).

    ``ctx`` holds ``hidden`` (``fc1``'s output, taken from it here: a reference left in any caller's frame would
    keep the buffer alive through the norm's backward; see :func:`_saved`), ``eps``, ``approximate`` and
    ``dtype``.
    ``x`` is the norm's input, or a function that rebuilds it (called once the hidden gradient is complete, so
    the two never add up with the GELU chunks). ``needs`` flags ``(x, norm_weight, norm_bias, w1, b1, w2,
    b2)``; unneeded gradients are ``None``, weight and bias gradients come in the weights' dtype.
    """
    h, ctx.hidden = ctx.hidden, None
    eps, approximate, dtype = ctx.eps, ctx.approximate, ctx.dtype
    rows = h.numel() // h.shape[-1]
    h2, g2 = h.view(rows, -1), grad.reshape(rows, -1)
    w2c = w2.to(dtype)
    grad_w1 = grad_w2 = grad_b2 = None

    def accumulate(total: torch.Tensor | None, part: torch.Tensor) -> torch.Tensor:
        """Chunk sums in fp32 (the first chunk's product converted, no zero-filled buffer first)."""
        return part.float() if total is None else total.add_(part)

    # fc2 and GELU in row chunks: the recomputed activation and the activation gradient exist one chunk at a
    # time, and the hidden gradient overwrites the saved pre-activation in place.
    for c in _row_chunks(rows):
        g, hc = g2[c].to(dtype), h2[c]
        if needs[5]:
            act = F.gelu(hc, approximate=approximate)
            part = g.t().mm(act)
            del act  # before the fp32 accumulation allocates
            grad_w2 = accumulate(grad_w2, part)
            del part  # before the next chunk's product is allocated
        if needs[6]:
            grad_b2 = accumulate(grad_b2, g.sum(0))
        torch.ops.aten.gelu_backward.grad_input(g.mm(w2c), hc, approximate=approximate, grad_input=hc)
        del g
    grad_h = h2
    del h, h2, hc  # the loop's slice too, or the buffer outlives grad_h
    x = x() if callable(x) else x
    width = x.shape[-1]
    x2 = x.reshape(rows, width)
    if needs[3]:  # fc1's weight gradient against the norm output, recomputed and cast chunk by chunk
        for c in _row_chunks(rows):
            y = torch.native_layer_norm(x2[c], (width,), norm_weight, norm_bias, eps)[0].to(dtype)
            part = grad_h[c].t().mm(y)
            del y
            grad_w1 = accumulate(grad_w1, part)
            del part
    grad_b1 = grad_h.sum(0) if needs[4] else None
    grad_y = grad_h.mm(w1.to(dtype)).view(x.shape)
    del grad_h  # frees the hidden-width buffer before the norm's backward allocates
    grad_y = grad_y.to(x.dtype)  # the norm's backward runs in its input's dtype
    grad_x, grad_nw, grad_nb = _norm_backward(grad_y, x, mean, rstd, norm_weight, norm_bias, needs[:3])
    wd = w1.dtype
    return grad_x, grad_nw, grad_nb, _to(grad_w1, wd), _to(grad_b1, wd), _to(grad_w2, wd), _to(grad_b2, wd)


class _LayerNormMlp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, norm_weight, norm_bias, eps, w1, b1, w2, b2, approximate, dtype):
        with torch.autocast(x.device.type, enabled=False):
            out, h, mean, rstd = _mlp_forward(x, norm_weight, norm_bias, eps, w1, b1, w2, b2, approximate, dtype)
        _save(ctx, (x, mean, rstd, norm_weight, norm_bias, w1, w2), h)
        ctx.eps, ctx.approximate, ctx.dtype = eps, approximate, dtype
        ctx.has_bias = (b1 is not None, b2 is not None)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, mean, rstd, norm_weight, norm_bias, w1, w2 = _saved(ctx)
        n = ctx.needs_input_grad
        needs = (n[0], n[1], n[2], n[4], ctx.has_bias[0] and n[5], n[6], ctx.has_bias[1] and n[7])
        with torch.autocast(x.device.type, enabled=False):
            grad_x, grad_nw, grad_nb, grad_w1, grad_b1, grad_w2, grad_b2 = _mlp_backward(
                ctx, grad, x, mean, rstd, norm_weight, norm_bias, w1, w2, needs)
        return grad_x, grad_nw, grad_nb, None, grad_w1, grad_b1, grad_w2, grad_b2, None, None


def _residual_add(x: torch.Tensor, a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x + F.linear(a, weight, bias)`` in row chunks, so that the projection exists one chunk at a time; the
    forward and the backward pass rebuild it by the same ops, so the two agree bit for bit."""
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    rows, width = x.numel() // x.shape[-1], x.shape[-1]
    x2, a2, out2 = x.reshape(rows, width), a.reshape(rows, -1), out.view(rows, width)
    for c in _row_chunks(rows):
        torch.add(x2[c], F.linear(a2[c], weight, bias), out=out2[c])
    return out


class _ProjResidualMlp(torch.autograd.Function):
    """``x1 = x + proj(a)``, then ``x1 + mlp(norm(x1))``: the second half of a block whose residual branches are
    plain. ``x1`` is not saved but recomputed in the backward pass from ``x`` and ``a``, which the block's
    attention saves anyway (one extra ``D x D`` matmul for a token-width of fp32 memory per block)."""

    @staticmethod
    def forward(ctx, x, a, wp, bp, norm_weight, norm_bias, eps, w1, b1, w2, b2, approximate, dtype):
        with torch.autocast(x.device.type, enabled=False):
            x1 = _residual_add(x, a.to(dtype), wp.to(dtype), _to(bp, dtype))
            out, h, mean, rstd = _mlp_forward(x1, norm_weight, norm_bias, eps, w1, b1, w2, b2, approximate, dtype,
                                              into=x1)
        _save(ctx, (x, a, wp, bp, mean, rstd, norm_weight, norm_bias, w1, w2), h)
        ctx.eps, ctx.approximate, ctx.dtype = eps, approximate, dtype
        ctx.has_bias = (bp is not None, b1 is not None, b2 is not None)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, a, wp, bp, mean, rstd, norm_weight, norm_bias, w1, w2 = _saved(ctx)
        n, dtype = ctx.needs_input_grad, ctx.dtype
        needs = (True, n[4], n[5], n[7], ctx.has_bias[1] and n[8], n[9], ctx.has_bias[2] and n[10])
        with torch.autocast(x.device.type, enabled=False):
            a_c = a.to(dtype)
            grad_x1, grad_nw, grad_nb, grad_w1, grad_b1, grad_w2, grad_b2 = _mlp_backward(
                ctx, grad, lambda: _residual_add(x, a_c, wp.to(dtype), _to(bp, dtype)), mean, rstd, norm_weight,
                norm_bias, w1, w2, needs)
            grad_x1.add_(grad)  # the residual's share: autograd adds the same two terms
            grad_p = grad_x1.to(dtype)
            grad_wp, grad_bp = _weight_grads(grad_p, a_c, n[2], ctx.has_bias[0] and n[3])
            grad_a = grad_p.matmul(wp.to(dtype)).to(a.dtype) if n[1] else None
        return (grad_x1, grad_a, _to(grad_wp, wp.dtype), _to(grad_bp, wp.dtype), grad_nw, grad_nb, None,
                grad_w1, grad_b1, grad_w2, grad_b2, None, None)


@torch.compiler.disable
def layer_norm_linear(x: torch.Tensor, norm: nn.LayerNorm, linear: nn.Linear) -> torch.Tensor:
    """``linear(norm(x))`` over the last axis, saving ``x`` but not the normalised tensor for the backward pass."""
    return _LayerNormLinear.apply(x, norm.weight, norm.bias, norm.eps, linear.weight, linear.bias,
                                  _compute_dtype(x, linear.weight))


@torch.compiler.disable
def layer_norm_mlp(x: torch.Tensor, norm: nn.LayerNorm, mlp: nn.Module) -> torch.Tensor:
    """``mlp.fc2(mlp.act(mlp.fc1(norm(x))))`` for a GELU ``mlp.act``, saving ``x`` and ``fc1``'s output only."""
    return _LayerNormMlp.apply(x, norm.weight, norm.bias, norm.eps, mlp.fc1.weight, mlp.fc1.bias, mlp.fc2.weight,
                               mlp.fc2.bias, mlp.act.approximate, _compute_dtype(x, mlp.fc1.weight))


@torch.compiler.disable
def proj_residual_mlp(x: torch.Tensor, a: torch.Tensor, proj: nn.Linear, norm: nn.LayerNorm,
                      mlp: nn.Module) -> torch.Tensor:
    """``x1 + mlp(norm(x1))`` with ``x1 = x + proj(a)``, saving ``x``, ``a`` and ``fc1``'s output only.

    For a block with no LayerScale, DropPath or dropout on its residual branches: ``x`` is the block input and
    ``a`` the attention heads' merged output (:meth:`~vit3d.layers.Attention.mix`), both saved by the attention
    already, so the residual stream between the two halves costs no memory until the backward pass.
    """
    return _ProjResidualMlp.apply(x, a, proj.weight, proj.bias, norm.weight, norm.bias, norm.eps, mlp.fc1.weight,
                                  mlp.fc1.bias, mlp.fc2.weight, mlp.fc2.bias, mlp.act.approximate,
                                  _compute_dtype(x, mlp.fc1.weight))
