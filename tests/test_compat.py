"""vit3d.compat: vit-pytorch's README examples run with only the import changed; keyword mapping; Recorder."""

from __future__ import annotations

import textwrap

import pytest
import torch

import vit3d
from vit3d.compat import CCT, Recorder, SimpleViT, ViT, cct_7, cct_14
from vit3d.layers import record_attention
from vit3d.models import CCT as CanonicalCCT
from vit3d.models import VisionTransformer

# The usage examples of lucidrains/vit-pytorch's README (sections "Usage", "Simple ViT", "CCT", "3D ViT" and
# "Accessing Attention", read at commit 69d24fe), verbatim except for the import lines. Each is paired with
# the output shapes the README documents.
README = {
    "vit": ("""
        import torch
        from vit3d.compat import ViT

        v = ViT(
            image_size = 256,
            patch_size = 32,
            num_classes = 1000,
            dim = 1024,
            depth = 6,
            heads = 16,
            mlp_dim = 2048,
            dropout = 0.1,
            emb_dropout = 0.1
        )

        img = torch.randn(1, 3, 256, 256)

        preds = v(img) # (1, 1000)
        """, {"preds": (1, 1000)}),
    "simple_vit": ("""
        import torch
        from vit3d.compat import SimpleViT

        v = SimpleViT(
            image_size = 256,
            patch_size = 32,
            num_classes = 1000,
            dim = 1024,
            depth = 6,
            heads = 16,
            mlp_dim = 2048
        )

        img = torch.randn(1, 3, 256, 256)

        preds = v(img) # (1, 1000)
        """, {"preds": (1, 1000)}),
    "cct": ("""
        import torch
        from vit3d.compat import CCT

        cct = CCT(
            img_size = (224, 448),
            embedding_dim = 384,
            n_conv_layers = 2,
            kernel_size = 7,
            stride = 2,
            padding = 3,
            pooling_kernel_size = 3,
            pooling_stride = 2,
            pooling_padding = 1,
            num_layers = 14,
            num_heads = 6,
            mlp_ratio = 3.,
            num_classes = 1000,
            positional_embedding = 'learnable', # ['sine', 'learnable', 'none']
        )

        img = torch.randn(1, 3, 224, 448)
        pred = cct(img) # (1, 1000)
        """, {"pred": (1, 1000)}),
    "cct_14": ("""
        import torch
        from vit3d.compat import cct_14

        cct = cct_14(
            img_size = 224,
            n_conv_layers = 1,
            kernel_size = 7,
            stride = 2,
            padding = 3,
            pooling_kernel_size = 3,
            pooling_stride = 2,
            pooling_padding = 1,
            num_classes = 1000,
            positional_embedding = 'learnable', # ['sine', 'learnable', 'none']
        )
        pred = cct(torch.randn(1, 3, 224, 224))  # not in the README, which only builds the model
        """, {"pred": (1, 1000)}),
    "vit_3d": ("""
        import torch
        from vit3d.compat import ViT

        v = ViT(
            image_size = 128,          # image size
            frames = 16,               # number of frames
            image_patch_size = 16,     # image patch size
            frame_patch_size = 2,      # frame patch size
            num_classes = 1000,
            dim = 1024,
            depth = 6,
            heads = 8,
            mlp_dim = 2048,
            dropout = 0.1,
            emb_dropout = 0.1
        )

        video = torch.randn(4, 3, 16, 128, 128) # (batch, channels, frames, height, width)

        preds = v(video) # (4, 1000)
        """, {"preds": (4, 1000)}),
    "simple_vit_3d": ("""
        import torch
        from vit3d.compat import SimpleViT

        v = SimpleViT(
            image_size = 128,          # image size
            frames = 16,               # number of frames
            image_patch_size = 16,     # image patch size
            frame_patch_size = 2,      # frame patch size
            num_classes = 1000,
            dim = 1024,
            depth = 6,
            heads = 8,
            mlp_dim = 2048
        )

        video = torch.randn(4, 3, 16, 128, 128) # (batch, channels, frames, height, width)

        preds = v(video) # (4, 1000)
        """, {"preds": (4, 1000)}),
    "cct_3d": ("""
        import torch
        from vit3d.compat import CCT

        cct = CCT(
            img_size = 224,
            num_frames = 8,
            embedding_dim = 384,
            n_conv_layers = 2,
            frame_kernel_size = 3,
            kernel_size = 7,
            stride = 2,
            padding = 3,
            pooling_kernel_size = 3,
            pooling_stride = 2,
            pooling_padding = 1,
            num_layers = 14,
            num_heads = 6,
            mlp_ratio = 3.,
            num_classes = 1000,
            positional_embedding = 'learnable'
        )

        video = torch.randn(1, 3, 8, 224, 224) # (batch, channels, frames, height, width)
        pred = cct(video)
        """, {"pred": (1, 1000)}),
    "recorder": ("""
        import torch
        from vit3d.compat import ViT

        v = ViT(
            image_size = 256,
            patch_size = 32,
            num_classes = 1000,
            dim = 1024,
            depth = 6,
            heads = 16,
            mlp_dim = 2048,
            dropout = 0.1,
            emb_dropout = 0.1
        )

        # import Recorder and wrap the ViT

        from vit3d.compat import Recorder
        v = Recorder(v)

        # forward pass now returns predictions and the attention maps

        img = torch.randn(1, 3, 256, 256)
        preds, attns = v(img)

        # there is one extra patch due to the CLS token

        attns # (1, 6, 16, 65, 65) - (batch x layers x heads x patch x patch)

        v = v.eject()  # wrapper is discarded and original ViT instance is returned
        """, {"preds": (1, 1000), "attns": (1, 6, 16, 65, 65)}),
}
# The 3D examples cost 100-350 GFLOP each on CPU; they run with -m slow, and scaled copies run by default below.
HEAVY = {"cct_14", "vit_3d", "simple_vit_3d", "cct_3d"}


def _run(code: str) -> dict:
    namespace: dict = {}
    with torch.no_grad():  # examples as written; no_grad only saves memory and time
        exec(textwrap.dedent(code), namespace)  # noqa: S102 - the README snippets above, nothing external
    return namespace


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in README])
def test_readme_examples_run_with_only_the_import_changed(name):
    code, shapes = README[name]
    assert "vit_pytorch" not in code
    ns = _run(code)
    for var, shape in shapes.items():
        assert tuple(ns[var].shape) == shape, var
    if name == "recorder":
        assert type(ns["v"]) is VisionTransformer  # eject() gave back the plain model


@pytest.mark.parametrize("name", sorted(HEAVY - {"cct_14"}))
def test_heavy_readme_examples_scaled_down(name):
    """The 3D examples with every size divided down (same keywords), so the default suite covers them."""
    code, shapes = README[name]
    for big, small in [("image_size = 128", "image_size = 32"), ("128, 128)", "32, 32)"), ("dim = 1024", "dim = 64"),
                       ("mlp_dim = 2048", "mlp_dim = 96"), ("224, 224)", "64, 64)"), ("img_size = 224", "img_size = 64"),
                       ("embedding_dim = 384", "embedding_dim = 48"), ("num_layers = 14", "num_layers = 2"),
                       ("num_frames = 8", "num_frames = 4"), ("1, 3, 8, 64", "1, 3, 4, 64"),
                       ("depth = 6", "depth = 2"), ("frames = 16", "frames = 4"), ("3, 16, 32", "3, 4, 32"),
                       ("num_classes = 1000", "num_classes = 10")]:
        code = code.replace(big, small)
    ns = _run(code)
    for var, shape in shapes.items():
        assert tuple(ns[var].shape) == (shape[0], 10), var


# ---------------------------------------------------------------------- keyword mapping
def test_vit_keywords_map_onto_vision_transformer():
    v = ViT(image_size=(32, 48), patch_size=8, num_classes=7, dim=48, depth=3, heads=4, mlp_dim=100, channels=1,
            dropout=0.2, emb_dropout=0.3)
    assert isinstance(v, VisionTransformer)
    assert v.img_size == (32, 48) and v.patch_size == (8, 8) and v.in_chans == 1 and len(v.blocks) == 3
    assert v.cls_token is not None and v.global_pool == "token"
    blk = v.blocks[0]
    assert blk.mlp.fc1.out_features == 100  # mlp_dim exactly, although 100 / 48 is not a round ratio
    assert blk.attn.num_heads == 4 and blk.attn.qkv.bias is None  # vit-pytorch has no qkv bias
    assert (blk.attn.attn_drop.p, blk.attn.proj_drop.p, blk.mlp.drop1.p, v.pos_drop.p) == (0.2, 0.2, 0.2, 0.3)
    mean = ViT(image_size=32, patch_size=8, num_classes=0, dim=32, depth=1, heads=2, mlp_dim=64, pool="mean")
    assert mean.cls_token is None and mean.global_pool == "avg"
    assert mean(torch.randn(2, 3, 32, 32)).shape == (2, 32)  # num_classes=0: pooled features


def test_vit_3d_keywords():
    v = ViT(image_size=32, frames=6, image_patch_size=16, frame_patch_size=3, num_classes=5, dim=32, depth=1,
            heads=2, mlp_dim=64)
    assert v.spatial_dims == 3 and v.img_size == (6, 32, 32) and v.patch_size == (3, 16, 16)
    s = SimpleViT(image_size=32, frames=6, image_patch_size=16, frame_patch_size=3, num_classes=5, dim=36, depth=1,
                  heads=2, mlp_dim=64)
    assert s.pos_embed_type == "sincos" and s.cls_token is None and s.global_pool == "avg"
    assert s(torch.randn(2, 3, 6, 32, 32)).shape == (2, 5)
    with pytest.raises(ValueError, match="Frames|frames|img_size \\(6, 32, 32\\) is not divisible"):
        ViT(image_size=32, frames=6, image_patch_size=16, frame_patch_size=4, num_classes=5, dim=32, depth=1,
            heads=2, mlp_dim=64)
    with pytest.raises(ValueError, match="needs both frames and frame_patch_size"):
        ViT(image_size=32, frames=6, image_patch_size=16, num_classes=5, dim=32, depth=1, heads=2, mlp_dim=64)


def test_cct_keywords_map_onto_canonical_cct():
    cct = CCT(img_size=32, num_frames=4, embedding_dim=32, n_input_channels=1, n_conv_layers=2, frame_kernel_size=5,
              kernel_size=3, stride=1, padding=1, num_layers=3, num_heads=2, mlp_ratio=2.0, num_classes=4,
              positional_embedding="sine", stochastic_depth_rate=0.2, attention_dropout=0.0)
    assert isinstance(cct, CanonicalCCT) and cct.spatial_dims == 3 and cct.img_size == (4, 32, 32)
    tok = cct.tokenizer
    assert tok.kernel_size == (5, 3, 3) and tok.padding == (2, 1, 1) and tok.stride == (1, 1, 1)
    assert tok.pooling_kernel_size == (1, 3, 3) and tok.pooling_padding == (0, 1, 1)
    assert cct.grid_size == (4, 8, 8)  # frames keep their tokens, as in vit-pytorch's 3D CCT
    assert cct.pos_embed_type == "sincos" and cct.blocks[-1].drop_path1.drop_prob == pytest.approx(0.2)
    assert cct(torch.randn(1, 1, 4, 32, 32)).shape == (1, 4)


def test_cct_helpers_build_the_registered_presets():
    """vit-pytorch's cct_7(kernel_size=3, n_conv_layers=1) at 32 px is the paper's CCT-7/3x1, our cct_7_3x1_32_2d."""
    with torch.device("meta"):
        ours = vit3d.create_model("cct_7_3x1_32_2d", num_classes=10)
        theirs = cct_7(img_size=32, n_conv_layers=1, num_classes=10, positional_embedding="learnable")
        big = cct_14(img_size=224, n_conv_layers=2, kernel_size=7, num_classes=1000, positional_embedding="learnable")
        big_ours = vit3d.create_model("cct_14_7x2_224_2d")
    for a, b in ((ours, theirs), (big_ours, big)):
        assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
        assert a.grid_size == b.grid_size


@pytest.mark.parametrize(("fn", "kwargs", "match"), [
    (ViT, dict(image_size=32, patch_size=8, num_classes=2, dim=32, depth=1, heads=2, mlp_dim=64, hieght=3),
     r"ViT got unknown keyword\(s\) 'hieght'"),
    (ViT, dict(image_size=32, patch_size=8, num_classes=2, dim=32, depth=1, heads=2, mlp_dims=64),
     r"'mlp_dims' \(did you mean 'mlp_dim'\?\)"),
    (SimpleViT, dict(image_size=32, patch_size=8, num_classes=2, dim=32, depth=1, heads=2, mlp_dim=64, dropout=0.1),
     r"SimpleViT got unknown keyword\(s\) 'dropout'"),
    (CCT, dict(img_size=32, embeding_dim=32), r"'embeding_dim' \(did you mean 'embedding_dim'\?\)"),
    (CCT, dict(img_size=32, frame_kernel_size=3), "pass num_frames too"),
    (CCT, dict(img_size=32, positional_embedding="learned"), "did you mean 'learnable'"),
    (cct_7, dict(img_size=32, num_clases=10), r"'num_clases' \(did you mean 'num_classes'\?\)"),
    (ViT, dict(image_size=32, patch_size=8, num_classes=2, dim=32, depth=1, heads=2, mlp_dim=64, pool="max"),
     r"pool='max' is not one of \['cls', 'mean'\]"),
    (ViT, dict(image_size=32, patch_size=8, num_classes=2, dim=128, depth=1, heads=8, mlp_dim=64, dim_head=64),
     r"dim_head=64 with heads=8 gives an attention width of 512.*choose heads = dim / dim_head = 2"),
    (ViT, dict(image_size=32, patch_size=8, image_patch_size=8, num_classes=2, dim=32, depth=1, heads=2, mlp_dim=64),
     "give exactly one of patch_size"),
    (ViT, dict(image_size=30, patch_size=8, num_classes=2, dim=32, depth=1, heads=2, mlp_dim=64),
     r"img_size \(30, 30\) is not divisible by patch_size \(8, 8\)"),
    (CCT, dict(img_size=4, n_conv_layers=2, kernel_size=7, stride=2, padding=0),
     "too small for the tokenizer along axis 0"),
])
def test_mistakes_raise(fn, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(**kwargs)


def test_positional_arguments_and_matching_dim_head():
    with pytest.raises(TypeError, match="keyword arguments only"):
        ViT(32, 8, 2, 32, 1, 2, 64)
    v = ViT(image_size=32, patch_size=8, num_classes=2, dim=128, depth=1, heads=2, mlp_dim=64, dim_head=64)
    assert v.blocks[0].attn.head_dim == 64


# ---------------------------------------------------------------------- Recorder
def test_recorder_matches_record_attention_and_ejects():
    model = ViT(image_size=32, patch_size=8, num_classes=3, dim=32, depth=3, heads=4, mlp_dim=64).eval()
    rec = Recorder(model)
    x = torch.randn(2, 3, 32, 32)
    preds, attns = rec(x)
    assert attns.shape == (2, 3, 4, 17, 17) and not attns.requires_grad
    with record_attention(model) as maps:
        ref = model(x)
    torch.testing.assert_close(preds, ref)
    torch.testing.assert_close(attns, torch.stack(maps, dim=1).detach())
    torch.testing.assert_close(attns.sum(-1), torch.ones(2, 3, 4, 17))
    _, again = rec(x)  # recordings do not pile up across calls
    assert again.shape == attns.shape
    assert rec.vit is model and rec.eject() is model
    with pytest.raises(RuntimeError, match="ejected"):
        rec(x)
    # the model is left untouched: its own forward runs SDPA again and agrees
    torch.testing.assert_close(model(x), ref)


def test_recorder_on_cct_and_on_models_without_attention():
    cct = CCT(img_size=16, embedding_dim=16, n_conv_layers=1, kernel_size=3, stride=1, padding=1, num_layers=2,
              num_heads=2, num_classes=3).eval()
    _, attns = Recorder(cct, device="cpu")(torch.randn(1, 3, 16, 16))
    assert attns.shape == (1, 2, 2, 64, 64)
    with pytest.raises(ValueError, match="no vit3d Attention layers"):
        Recorder(torch.nn.Linear(3, 3))
