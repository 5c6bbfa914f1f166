"""CCT: token grid from the tokenizer, a functional reference forward, 2D/3D identity, paper sizes, bad arguments."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import vit3d
from vit3d.layers import record_attention
from vit3d.models import CCT, list_models
from vit3d.models.cct import ConvTokenizer

TINY = dict(embed_dim=32, depth=2, num_heads=4, mlp_ratio=2.0, conv_channels=8, num_classes=5)
CASES = {
    2: dict(img_size=(20, 24), n_conv_layers=2, kernel_size=3, stride=1, padding=1),
    3: dict(img_size=(4, 12, 16), n_conv_layers=1, kernel_size=(3, 5, 5), stride=(1, 2, 2), padding=(1, 2, 2),
            pooling_kernel_size=(1, 3, 3), pooling_stride=(1, 2, 2), pooling_padding=(0, 1, 1)),
}


def tiny(spatial_dims: int, **overrides) -> CCT:
    return CCT(in_chans=2, **{**TINY, **CASES[spatial_dims], **overrides})


def _input(model: CCT, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, model.in_chans, *model.img_size)


# ---------------------------------------------------------------------- token grid
@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 40), convs=st.integers(1, 3), kernel=st.integers(1, 7), stride=st.integers(1, 3),
       pad=st.integers(0, 3), pool_k=st.integers(1, 4), pool_s=st.integers(1, 3), pool_p=st.integers(0, 2))
def test_grid_matches_torch_conv_and_pool(size, convs, kernel, stride, pad, pool_k, pool_s, pool_p):
    """The predicted grid (or the error) agrees with what PyTorch's own conv / max-pool produce."""
    pool_p = min(pool_p, pool_k // 2)
    tok = ConvTokenizer(1, 3, spatial_dims=1, n_conv_layers=convs, kernel_size=kernel, stride=stride, padding=pad,
                        pooling_kernel_size=pool_k, pooling_stride=pool_s, pooling_padding=pool_p, conv_channels=2)
    try:
        actual = tuple(tok.conv_layers(torch.zeros(1, 1, size)).shape[2:])
    except RuntimeError:  # PyTorch refuses: output size would be < 1
        actual = None
    if actual is None or 0 in actual:
        with pytest.raises(ValueError, match=r"too small for the tokenizer along axis 0.*use at least"):
            tok.grid_for((size,))
        assert tok._trace(tok.min_size(0), 0) >= 1 and tok.min_size(0) > size
    else:
        assert tok.grid_for((size,)) == actual


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_grid_size_and_token_count_follow_the_tokenizer(spatial_dims):
    model = tiny(spatial_dims)
    conv_out = model.tokenizer.conv_layers(_input(model)).shape
    assert model.grid_size == tuple(conv_out[2:])
    assert model.tokenizer(_input(model)).shape[1] == model.num_tokens == math.prod(model.grid_size)
    assert model.spatial_dims == spatial_dims


def test_presets_listed_with_paper_geometry():
    names = list_models("cct*")
    for name in ("cct_2_3x2_32_2d", "cct_4_3x2_32_2d", "cct_6_3x1_32_2d", "cct_7_3x1_32_2d", "cct_7_3x2_32_2d",
                 "cct_7_7x2_224_2d", "cct_14_7x2_224_2d", "cct_2_3x2_32_3d", "cct_7_7x2_224_3d",
                 "cct_14_7x2_224_3d"):
        assert name in names
    with torch.device("meta"):
        grids = {n: vit3d.create_model(n).grid_size for n in ("cct_7_3x1_32_2d", "cct_7_3x2_32_2d",
                                                               "cct_14_7x2_224_2d", "cct_7_3x2_32_3d",
                                                               "cct_14_7x2_224_3d")}
        clip = vit3d.create_model("cct_14_7x2_224_3d")
    # 3x1: stride-1 conv then a stride-2 pool; 7x2: two stride-2 convs and two stride-2 pools.
    assert grids == {"cct_7_3x1_32_2d": (16, 16), "cct_7_3x2_32_2d": (8, 8), "cct_14_7x2_224_2d": (14, 14),
                     "cct_7_3x2_32_3d": (8, 8, 8), "cct_14_7x2_224_3d": (8, 14, 14)}
    assert clip.tokenizer.conv_layers[0][0].weight.shape == (64, 3, 3, 7, 7)  # frame kernel 3 as vit-pytorch


@pytest.mark.parametrize(("name", "overrides", "millions"), [
    # Parameter counts the paper / official README report (CIFAR-10 heads at 32, ImageNet heads at 224/384).
    ("cct_2_3x2_32_2d", dict(num_classes=10), 0.28),
    ("cct_7_3x1_32_2d", dict(num_classes=10), 3.76),
    ("cct_14_7x2_224_2d", dict(), 22.36),
    ("cct_14_7x2_224_2d", dict(img_size=384), 22.51),
])
def test_parameter_counts_match_the_paper(name, overrides, millions):
    with torch.device("meta"):
        model = vit3d.create_model(name, **overrides)
    count = sum(p.numel() for p in model.parameters())
    assert math.floor(count / 1e4) / 100 == millions


# ---------------------------------------------------------------------- forward, backward, oracles
@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("pos_embed", ["learn", "sincos", "none"])
def test_forward_shapes_and_backward(spatial_dims, pos_embed):
    model = tiny(spatial_dims, pos_embed=pos_embed).train()
    x = _input(model)
    out = model(x)
    assert out.shape == (2, 5)
    out.square().sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"
    assert model.forward_features(x).shape == (2, model.num_tokens, 32)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, 32)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_backbone_returns_pooled_features(spatial_dims):
    model = tiny(spatial_dims, num_classes=0).eval()
    x = _input(model)
    feats = model(x)
    assert feats.shape == (2, 32)
    tokens = model.forward_features(x)
    torch.testing.assert_close(feats, model.sequence_pool(tokens)[0])
    model.reset_classifier(7)
    assert model(x).shape == (2, 7)


def _reference_forward(model: CCT, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CCT written out with torch.nn.functional from the state dict: tokenizer, pre-norm blocks, sequence pool."""
    sd, n = model.state_dict(), model.spatial_dims
    conv, pool = {2: F.conv2d, 3: F.conv3d}[n], {2: F.max_pool2d, 3: F.max_pool3d}[n]
    tok = model.tokenizer
    for i in range(tok.n_conv_layers):
        x = conv(x, sd[f"tokenizer.conv_layers.{i}.0.weight"], stride=tok.stride, padding=tok.padding)
        x = pool(F.relu(x), tok.pooling_kernel_size, tok.pooling_stride, tok.pooling_padding)
    x = x.flatten(2).transpose(1, 2)
    if model.pos_embed is not None:
        x = x + model.pos_embed
    eps, D = model.norm.eps, model.embed_dim
    heads = model.blocks[0].attn.num_heads
    for i in range(len(model.blocks)):
        p = f"blocks.{i}."
        h = F.layer_norm(x, (D,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps)
        q, k, v = F.linear(h, sd[p + "attn.qkv.weight"], sd.get(p + "attn.qkv.bias")).chunk(3, dim=-1)
        q, k, v = (t.unflatten(-1, (heads, D // heads)).transpose(1, 2) for t in (q, k, v))
        a = ((q @ k.transpose(-2, -1)) / math.sqrt(D // heads)).softmax(-1)
        h = (a @ v).transpose(1, 2).flatten(2)
        x = x + F.linear(h, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        h = F.layer_norm(x, (D,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps)
        h = F.linear(F.gelu(F.linear(h, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])),
                     sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
        x = x + h
    x = F.layer_norm(x, (D,), sd["norm.weight"], sd["norm.bias"], eps)
    w = F.linear(x, sd["attention_pool.weight"], sd["attention_pool.bias"])[..., 0].softmax(dim=1)
    pooled = (w[..., None] * x).sum(dim=1)
    return F.linear(pooled, sd["head.weight"], sd["head.bias"]), w


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("pos_embed", ["learn", "sincos"])
def test_matches_functional_reference(spatial_dims, pos_embed):
    model = tiny(spatial_dims, pos_embed=pos_embed, qkv_bias=spatial_dims == 3).eval()
    x = _input(model)
    with torch.no_grad():
        ref_logits, ref_w = _reference_forward(model, x)
        logits, w = model.forward_with_pool_weights(x)
        torch.testing.assert_close(model(x), ref_logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(w, ref_w, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(w.sum(dim=1), torch.ones(2))
    assert model.pool_weights(x).shape == (2, *model.grid_size)
    torch.testing.assert_close(model.pool_weights(x).flatten(1), w)


def test_3d_with_a_flat_first_axis_equals_2d():
    """A 3D CCT whose kernels are 1 along axis 0 is the 2D CCT applied to each slice of a 1-slice volume."""
    geo2 = dict(kernel_size=3, stride=1, padding=1, pooling_kernel_size=3, pooling_stride=2, pooling_padding=1)
    geo3 = {k: (1 if "kernel" in k or "stride" in k else 0, v, v) for k, v in geo2.items()}
    m2 = CCT(img_size=(12, 12), in_chans=2, n_conv_layers=2, pos_embed="learn", **TINY, **geo2).eval()
    m3 = CCT(img_size=(1, 12, 12), in_chans=2, n_conv_layers=2, pos_embed="learn", **TINY, **geo3).eval()
    sd = {k: v.unsqueeze(2) if k.startswith("tokenizer.") else v for k, v in m2.state_dict().items()}
    m3.load_state_dict(sd, strict=True)
    x = torch.randn(2, 2, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(m3(x.unsqueeze(2)), m2(x))


def test_stochastic_depth_rises_linearly_and_dropout_is_off_in_eval():
    model = CCT(img_size=16, depth=5, embed_dim=16, num_heads=2, kernel_size=3, stride=1, padding=1,
                n_conv_layers=1, drop_path_rate=0.2)
    rates = [getattr(b.drop_path1, "drop_prob", 0.0) for b in model.blocks]
    assert rates == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])
    x = torch.randn(1, 3, 16, 16)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))


def test_record_attention_captures_every_block():
    model = tiny(3).eval()
    with record_attention(model) as maps, torch.no_grad():
        model(_input(model, batch=1))
    assert len(maps) == len(model.blocks)
    assert maps[0].shape == (1, 4, model.num_tokens, model.num_tokens)
    torch.testing.assert_close(maps[-1].sum(-1), torch.ones(1, 4, model.num_tokens))


def test_grad_checkpointing_gives_the_same_gradients():
    model = tiny(2, attn_drop_rate=0.0, drop_path_rate=0.0)
    x = _input(model)
    model(x).sum().backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing()
    model(x).sum().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref[n], msg=n)


@pytest.mark.parametrize("pos_embed", ["learn", "sincos", "none"])
def test_dynamic_img_size(pos_embed):
    model = tiny(2, pos_embed=pos_embed, dynamic_img_size=True).eval()
    fixed = tiny(2, pos_embed=pos_embed).eval()
    fixed.load_state_dict(model.state_dict())
    x = _input(model)
    with torch.no_grad():
        torch.testing.assert_close(model(x), fixed(x))  # native size: identical
        other = torch.randn(2, 2, 28, 16)
        assert model(other).shape == (2, 5)
        assert model.pool_weights(other).shape == (2, *model.tokenizer.grid_for((28, 16)))
    with pytest.raises(ValueError, match=r"input spatial size \(28, 16\) differs from img_size \(20, 24\).*"
                                         "dynamic_img_size=True"):
        fixed(other)
    unpadded = tiny(2, padding=0, dynamic_img_size=True)
    with pytest.raises(ValueError, match=r"input size \(2, 16\) is too small for the tokenizer along axis 0"):
        unpadded(torch.randn(1, 2, 2, 16))


# ---------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(img_size=8, n_conv_layers=3, kernel_size=3, stride=2, padding=0),
     r"img_size \(8, 8\) is too small for the tokenizer along axis 0: 3 conv layer\(s\).*use at least \d+"),
    (dict(img_size=32, pooling_kernel_size=3, pooling_padding=2),
     r"pooling_padding \(2, 2\) exceeds half of pooling_kernel_size \(3, 3\).*at most \(1, 1\)"),
    (dict(img_size=32, embed_dim=30, num_heads=4), "embed_dim 30 is not divisible by num_heads 4"),
    (dict(img_size=32, pos_embed="learned"), "pos_embed='learned' is not one of.*did you mean 'learn'"),
    (dict(img_size=(8, 32, 32), kernel_size=(3, 3), spatial_dims=3), r"kernel_size \(3, 3\) has 2 entries but 3"),
    (dict(img_size=(8, 32, 32), kernel_size=(3, 3)), r"disagree on the number of spatial dims"),
    (dict(img_size=32, padding=-1), r"padding \(-1, -1\) must be >= 0"),
    (dict(img_size=32, n_conv_layers=0), "n_conv_layers must be at least 1"),
    (dict(img_size=32, depth=0), "depth must be at least 1"),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CCT(**{"embed_dim": 16, "num_heads": 2, "depth": 1, **kwargs})


def test_bad_inputs_raise():
    model = tiny(2)
    with pytest.raises(ValueError, match=r"expected input of shape \(B, C, H, W\) with 4 dims"):
        model(torch.randn(2, 2, 4, 20, 24))
    with pytest.raises(ValueError, match="input has 3 channels but the model was built with in_chans=2"):
        model(torch.randn(2, 3, 20, 24))
    with pytest.raises(ValueError, match="unknown keyword.*'embedding_dim' \\(did you mean 'embed_dim'\\?\\)"):
        vit3d.create_model("cct_7_3x1_32_2d", embedding_dim=64)


# ---------------------------------------------------------------------- learning on real data
@pytest.mark.slow
def test_cct_learns_sklearn_digits():
    """benchmarks/cct_digits.py: the documented run reaches >= 97% test accuracy (minutes on 2 CPU cores)."""
    import importlib.util
    from pathlib import Path

    pytest.importorskip("sklearn")
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "cct_digits.py"
    spec = importlib.util.spec_from_file_location("cct_digits", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main([])
    assert result["test_accuracy"] >= 0.97, result
