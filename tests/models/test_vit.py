import pytest
import torch

import vit3d
from vit3d.layers import record_attention, sincos_pos_embed
from vit3d.models import VisionTransformer

TINY = dict(embed_dim=32, depth=2, num_heads=2)


def test_preset_shapes_small_3d_and_2d():
    m = vit3d.create_model("vit_small_patch16_3d", img_size=(16, 112, 112), num_classes=10, depth=1)
    assert m(torch.randn(2, 3, 16, 112, 112)).shape == (2, 10)
    m2 = vit3d.create_model("vit_tiny_patch16_2d", depth=1)
    assert m2(torch.randn(2, 3, 224, 224)).shape == (2, 1000)


def test_spatial_dims_from_sizes():
    assert VisionTransformer((8, 16, 16), 4, **TINY).spatial_dims == 3
    assert VisionTransformer(16, (2, 4, 4), **TINY).patch_embed.img_size == (16, 16, 16)
    assert VisionTransformer(16, 4, spatial_dims=1, **TINY).grid_size == (4,)
    assert VisionTransformer(16, 4, **TINY).grid_size == (4, 4)


@pytest.mark.parametrize("img_size,patch_size", [((16, 16), (4, 4)), ((4, 16, 16), (2, 8, 4))])
def test_forward_features_head_and_backbone(img_size, patch_size):
    m = VisionTransformer(img_size, patch_size, in_chans=2, num_classes=5, **TINY).eval()
    x = torch.randn(3, 2, *img_size)
    feats = m.forward_features(x)
    n = m.patch_embed.num_patches
    assert feats.shape == (3, 1 + n, 32)
    pooled = m.forward_head(feats, pre_logits=True)
    torch.testing.assert_close(pooled, feats[:, 0])
    torch.testing.assert_close(m(x), m.head(pooled))
    backbone = VisionTransformer(img_size, patch_size, in_chans=2, num_classes=0, **TINY)
    assert backbone(x).shape == (3, 32)


def test_simple_vit_is_a_configuration():
    m = vit3d.create_model("simple_vit_tiny_patch16_3d", img_size=(4, 16, 16), patch_size=(2, 8, 8), **TINY)
    assert m.cls_token is None and m.num_prefix_tokens == 0 and m.global_pool == "avg"
    assert "pos_embed" not in m.state_dict()  # fixed sin-cos is rebuilt, never saved
    torch.testing.assert_close(m.pos_embed[0], sincos_pos_embed((2, 2, 2), 32))
    x = torch.randn(2, 3, 4, 16, 16)
    feats = m.forward_features(x)
    torch.testing.assert_close(m(x), m.head(m.fc_norm(feats.mean(1))))
    assert m.blocks[0].attn.qkv.bias is None


def test_dynamic_img_size_resamples_positions():
    m = VisionTransformer((4, 16, 16), (2, 8, 8), num_classes=3, dynamic_img_size=True, **TINY).eval()
    assert m(torch.randn(1, 3, 6, 24, 16)).shape == (1, 3)
    # at the native size the dynamic path is exactly the static one
    static = VisionTransformer((4, 16, 16), (2, 8, 8), num_classes=3, **TINY).eval()
    static.load_state_dict(m.state_dict())
    x = torch.randn(1, 3, 4, 16, 16)
    torch.testing.assert_close(m(x), static(x))


def test_dynamic_sincos_rebuilds_table_exactly():
    m = VisionTransformer((4, 8), 4, pos_embed="sincos", class_token=False, global_pool="avg",
                          dynamic_img_size=True, **TINY).eval()
    big = VisionTransformer((8, 8), 4, pos_embed="sincos", class_token=False, global_pool="avg", **TINY).eval()
    big.load_state_dict(m.state_dict())
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(m(x), big(x))


def test_no_embed_class_adds_no_position_to_class_token():
    m = VisionTransformer(8, 4, no_embed_class=True, **TINY)
    assert m.pos_embed.shape == (1, 4, 32)
    x = m._pos_embed(torch.zeros(1, 4, 32), (2, 2))
    torch.testing.assert_close(x[:, 0], m.cls_token[:, 0])
    torch.testing.assert_close(x[:, 1:], m.pos_embed)


def test_patch_drop_only_in_training():
    m = VisionTransformer((4, 16, 16), (2, 8, 8), patch_drop_rate=0.5, **TINY)
    x = torch.randn(2, 3, 4, 16, 16)
    assert m.train().forward_features(x).shape == (2, 1 + 4, 32)
    assert m.eval().forward_features(x).shape == (2, 1 + 8, 32)


def test_grad_checkpointing_gives_identical_gradients():
    torch.manual_seed(1)
    a = VisionTransformer((4, 16, 16), (2, 8, 8), **TINY).train()
    b = VisionTransformer((4, 16, 16), (2, 8, 8), **TINY).train()
    b.load_state_dict(a.state_dict())
    b.set_grad_checkpointing()
    x = torch.randn(2, 3, 4, 16, 16)
    a(x).sum().backward()
    b(x).sum().backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa.grad, pb.grad, msg=name)


def test_bf16_autocast_forward_backward():
    m = VisionTransformer((4, 16, 16), (2, 8, 8), num_classes=4, **TINY)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(torch.randn(2, 3, 4, 16, 16))
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert m.patch_embed.proj.weight.grad.dtype == torch.float32


def test_capture_keeps_logits():
    m = VisionTransformer((4, 16, 16), (2, 8, 8), num_classes=4, **TINY).eval()
    x = torch.randn(2, 3, 4, 16, 16)
    with record_attention(m) as maps:
        captured = m(x)
    torch.testing.assert_close(captured, m(x), atol=1e-5, rtol=1e-5)
    assert len(maps) == 2 and maps[0].shape == (2, 2, 9, 9)


def test_state_dict_keys_follow_timm():
    keys = set(VisionTransformer(8, 4, depth=1, embed_dim=8, num_heads=2, num_classes=2).state_dict())
    assert {"cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.norm1.weight", "blocks.0.attn.qkv.weight",
            "blocks.0.attn.qkv.bias", "blocks.0.attn.proj.weight", "blocks.0.norm2.bias", "blocks.0.mlp.fc1.weight",
            "blocks.0.mlp.fc2.weight", "norm.weight", "head.weight", "head.bias"} <= keys


def test_reset_classifier():
    m = VisionTransformer(8, 4, num_classes=2, **TINY)
    m.reset_classifier(7)
    assert m(torch.randn(1, 3, 8, 8)).shape == (1, 7)


@pytest.mark.parametrize("kwargs,message", [
    (dict(img_size=(16, 100, 112), patch_size=(2, 16, 16)), r"not divisible by patch_size \(2, 16, 16\) along axis 1"),
    (dict(embed_dim=30, num_heads=4), "embed_dim 30 is not divisible by num_heads 4"),
    (dict(global_pool="cls"), "global_pool='cls' is not one of"),
    (dict(pos_embed="sin"), "did you mean 'sincos'"),
    (dict(class_token=False), "global_pool='token' needs class_token=True"),
    (dict(img_size=(8, 8), patch_size=(2, 2, 2)), "disagree on the number of spatial dims"),
    (dict(depth=0), "depth must be at least 1"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VisionTransformer(**{**dict(img_size=16, patch_size=4, **TINY), **kwargs})


def test_bad_inputs():
    m = VisionTransformer((4, 16, 16), (2, 8, 8), in_chans=1, **TINY)
    with pytest.raises(ValueError, match=r"expected input of shape \(B, C, D, H, W\)"):
        m(torch.randn(2, 1, 16, 16))
    with pytest.raises(ValueError, match="in_chans=1"):
        m(torch.randn(2, 3, 4, 16, 16))
    with pytest.raises(ValueError, match="dynamic_img_size=True"):
        m(torch.randn(2, 1, 8, 16, 16))
    dyn = VisionTransformer((4, 16, 16), (2, 8, 8), in_chans=1, dynamic_img_size=True, **TINY)
    with pytest.raises(ValueError, match="input size"):
        dyn(torch.randn(2, 1, 5, 16, 16))
