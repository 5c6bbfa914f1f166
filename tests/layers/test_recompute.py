"""Blocks that recompute norm and GELU outputs in the backward pass: same values as plain modules, less memory."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import vit3d
from vit3d.bench import MemoryMeter
from vit3d.layers import Block, PatchEmbed, record_attention
from vit3d.layers import recompute as rc
from vit3d.layers.patch_embed import patchify


def _pair(**kw) -> tuple[Block, Block]:
    torch.manual_seed(0)
    block = Block(32, 4, **kw)
    plain = copy.deepcopy(block)
    plain.recompute_norm_act = False
    return block, plain


def _run(block: Block, x: torch.Tensor, g: torch.Tensor, autocast: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    x = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = block(x)
    out.backward(g.to(out.dtype))
    return out, [x.grad, *(p.grad for p in block.parameters())]


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
@pytest.mark.parametrize("kw", [{}, {"qkv_bias": False, "init_values": 1e-2},
                                {"act_layer": vit3d.layers.get_act_layer("gelu_tanh")}],
                         ids=["default", "layerscale-nobias", "gelu-tanh"])
def test_recomputing_block_equals_plain_modules_bit_for_bit(autocast, kw):
    """Within one row chunk the recomputing path runs the very ops autograd runs: identical values and grads."""
    block, plain = _pair(**kw)
    x, g = torch.randn(2, 9, 32), torch.randn(2, 9, 32)
    out, grads = _run(block, x, g, autocast)
    ref, ref_grads = _run(plain, x, g, autocast)
    assert out.grad_fn is not None and ref.grad_fn is not None
    assert torch.equal(out, ref)
    for a, b in zip(grads, ref_grads, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
def test_row_chunks_sum_to_the_same_gradients(monkeypatch, autocast):
    """Several chunks (5 rows each, the last one short) give autograd's values up to float rounding: a matmul
    over 5 rows may take another kernel than over 21."""
    monkeypatch.setattr(rc, "CHUNK_ROWS", 5)
    block, plain = _pair()
    x, g = torch.randn(3, 7, 32), torch.randn(3, 7, 32)
    out, grads = _run(block, x, g, autocast)
    ref, ref_grads = _run(plain, x, g, autocast)
    assert out.grad_fn.name() == "_ProjResidualMlpBackward"
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    tol = dict(rtol=2e-2, atol=2e-2) if autocast else dict(rtol=1e-5, atol=1e-6)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, **tol)


def _grad_fn_names(t: torch.Tensor) -> set[str]:
    seen, todo = set(), [t.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is None or fn.name() in seen:
            continue
        seen.add(fn.name())
        todo += [f for f, _ in fn.next_functions]
    return seen


RECOMPUTING = {"_LayerNormMlpBackward", "_ProjResidualMlpBackward"}


def test_the_plain_path_is_taken_where_recomputing_would_be_wrong():
    x = torch.randn(2, 5, 32, requires_grad=True)
    block, _ = _pair()
    assert RECOMPUTING & _grad_fn_names(block(x))
    dropout, _ = _pair(proj_drop=0.5)  # dropout between GELU and fc2: the mask is not recomputed
    assert not RECOMPUTING & _grad_fn_names(dropout.train()(x))
    assert RECOMPUTING & _grad_fn_names(dropout.eval()(x))
    model = vit3d.create_model("vit_tiny_patch16_3d", img_size=(4, 32, 32), patch_size=(2, 16, 16), depth=1,
                               num_classes=3)
    clip = torch.randn(1, 3, 4, 32, 32)
    with record_attention(model) as maps:  # the explicit attention path keeps its maps and hooks
        model(clip).sum().backward()
    assert len(maps) == 1 and maps[0].grad_fn is not None
    model.set_recompute_norm_act(False)
    assert all(not b.recompute_norm_act for b in model.blocks)
    assert not RECOMPUTING & _grad_fn_names(model(clip))
    with torch.no_grad():
        assert model.blocks[0](torch.randn(1, 5, model.embed_dim)).grad_fn is None


def test_the_residual_stream_is_rebuilt_only_where_both_branches_are_plain():
    x = torch.randn(2, 5, 32, requires_grad=True)
    assert "_ProjResidualMlpBackward" in _grad_fn_names(_pair()[0](x))
    layerscale = _pair(init_values=0.1)[0]
    assert "_ProjResidualMlpBackward" not in _grad_fn_names(layerscale(x))
    assert "_LayerNormMlpBackward" in _grad_fn_names(layerscale(x))
    droppath = _pair(drop_path=0.1)[0]
    assert "_ProjResidualMlpBackward" not in _grad_fn_names(droppath.train()(x))
    assert "_ProjResidualMlpBackward" in _grad_fn_names(droppath.eval()(x))  # idle DropPath: the same function


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
def test_a_plain_block_saves_no_residual_but_its_input(autocast):
    """Of the fp32 token-width tensors a block's backward needs, only the block input is kept (and in fp32, the
    attention output, which the attention's own backward needs): not the residual stream between the halves."""
    block, _ = _pair()
    x = torch.randn(2, 9, 32, requires_grad=True)
    widths = set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.dtype == torch.float32 and t.untyped_storage().nbytes() == x.numel() * 4:
            widths.add(t.untyped_storage().data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            block(x)
    assert x.untyped_storage().data_ptr() in widths
    assert len(widths) == (1 if autocast else 2)


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
def test_a_training_step_needs_less_memory(autocast):
    """The saved norm and GELU outputs are 6 of 16 token-widths a block keeps: the peak must drop by a fifth."""
    torch.manual_seed(0)
    model = vit3d.create_model("vit_tiny_patch16_3d", img_size=(16, 112, 112), patch_size=(2, 16, 16), depth=2,
                               num_classes=3)
    x = torch.randn(2, 3, 16, 112, 112)

    def peak(enable: bool) -> int:
        model.set_recompute_norm_act(enable)
        model.zero_grad(set_to_none=True)
        with MemoryMeter("cpu") as meter:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = model(x).float().sum()
            loss.backward()
        return meter.peak

    plain, recomputed = peak(False), peak(True)
    assert recomputed < 0.8 * plain, (recomputed, plain)


def test_patch_embedding_saves_its_input_not_the_patchified_copy():
    """Under CPU bf16 autocast the weight gradient equals the one through F.linear(patchify(x)) exactly."""
    torch.manual_seed(0)
    pe = PatchEmbed((4, 8, 8), (2, 4, 4), in_chans=2, embed_dim=16)
    x = torch.randn(3, 2, 4, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = pe(x)
        ref = F.linear(patchify(x.bfloat16(), pe.patch_size), pe.proj.weight.flatten(1), pe.proj.bias)
    assert out.grad_fn.name() == "_PatchLinearBackward"
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, (pe.proj.weight, pe.proj.bias), g)
    ref_grads = torch.autograd.grad(ref, (pe.proj.weight, pe.proj.bias), g)
    assert torch.equal(out, ref)
    for a, b in zip(grads, ref_grads, strict=True):
        assert a.dtype == torch.float32 and torch.equal(a, b)
    xg = x.clone().requires_grad_(True)  # an input that needs its gradient takes the autograd path
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = pe(xg)
    out.float().sum().backward()
    assert xg.grad is not None and xg.grad.shape == x.shape


def test_checkpointed_blocks_recompute_too_and_keep_nothing_but_their_inputs():
    """Under non-reentrant checkpointing the recomputing functions pass every tensor through the checkpoint's
    hooks (none is held on the autograd context): after the forward pass exactly as much memory is held as with
    plain blocks, and the gradients are bit for bit those of the uncheckpointed model."""
    torch.manual_seed(0)
    model = vit3d.create_model("vit_tiny_patch16_3d", img_size=(16, 64, 64), patch_size=(2, 16, 16), depth=3,
                               num_classes=3)
    x = torch.randn(2, 3, 16, 64, 64)

    def step(checkpointing: bool, recompute: bool) -> tuple[int, list[torch.Tensor]]:
        model.set_grad_checkpointing(checkpointing)
        model.set_recompute_norm_act(recompute)
        model.zero_grad(set_to_none=True)
        with MemoryMeter("cpu") as meter:
            loss = model(x).sum()
        loss.backward()
        return meter.retained, [p.grad.clone() for p in model.parameters()]

    plain_held, _ = step(True, False)
    lean_held, lean_grads = step(True, True)
    assert all(b.recompute_norm_act for b in model.blocks)
    uncheckpointed_held, ref_grads = step(False, True)
    for a, b in zip(lean_grads, ref_grads, strict=True):
        assert torch.equal(a, b)
    assert lean_held == plain_held < uncheckpointed_held, (lean_held, plain_held, uncheckpointed_held)
    model.set_recompute_norm_act(False)  # the choice survives checkpointing being turned on and off
    model.set_grad_checkpointing(True)
    model.set_grad_checkpointing(False)
    assert not any(b.recompute_norm_act for b in model.blocks)


def test_torch_compile_runs_the_recomputing_functions_eagerly_and_quietly():
    """Under ``torch.compile`` the recomputing functions are left out of the graph on purpose: dynamo breaks the graph
    at them and at nothing else, and warns about nothing (tracing them, or the saved-tensor-hooks query inside, would
    either fail or hold more memory)."""
    import warnings

    import torch._dynamo as dynamo

    torch.manual_seed(0)
    model = vit3d.create_model("vit_small_patch16_3d", img_size=(4, 32, 32), patch_size=(2, 16, 16), depth=2,
                               num_classes=3)
    x = torch.randn(2, 3, 4, 32, 32)
    dynamo.reset()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = dynamo.explain(lambda inp: model(inp).sum())(x)
    dynamo.reset()
    assert report.graph_break_count == 4  # two blocks, two recomputing calls each
    assert all("torch.compiler.disable" in r.reason for r in report.break_reasons), report.break_reasons
    assert not [w for w in caught if "Dynamo" in str(w.message)]
