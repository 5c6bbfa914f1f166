"""Inflation: a clip or volume made of one frame repeated gives the 2D model's output on that frame.

The identity is exact for the whole model when there is no class token (every token is seen ``T'`` times, which
leaves attention and average pooling unchanged), and for class-token models when the new axis holds one token
(``frames == tubelet``). With a class token and ``T' > 1`` the class token is one key among ``T'`` copies of each
patch key, so its share of attention drops: the identity then holds for the embedded tokens, checked here, and
the logits differ (measured in ``test_class_token_shifts_attention_weight``).
"""

from __future__ import annotations

import pytest
import torch

import vit3d
from vit3d.layers import resample_pos_embed
from vit3d.weights import Checkpoint, LoadReport, inflate, inflate_patch_kernel, vit_config

TOL = 1e-4
POOLED = dict(class_token=False, global_pool="avg")


def _model_2d(**kw) -> vit3d.VisionTransformer:
    args = dict(img_size=32, patch_size=8, num_classes=5, embed_dim=32, depth=2, num_heads=2)
    model = vit3d.VisionTransformer(**{**args, **kw}).eval()
    with torch.no_grad():
        if model.cls_token is not None:
            model.cls_token.normal_()
        model.patch_embed.proj.bias.normal_()
    return model


def _build(ckpt: Checkpoint) -> vit3d.VisionTransformer:
    model = vit3d.VisionTransformer(**ckpt.config).eval()
    model.load_state_dict(ckpt.state_dict, strict=True)
    return model


def _repeat(x: torch.Tensor, frames: int) -> torch.Tensor:
    return x.unsqueeze(2).repeat(1, 1, frames, 1, 1)


@pytest.mark.parametrize("method", ["central", "mean"])
@pytest.mark.parametrize("pos", ["tile", "separate"])
@pytest.mark.parametrize("kw", [POOLED, dict(POOLED, fc_norm=False, qkv_bias=False)])
def test_repeated_frame_identity(method, pos, kw):
    m2 = _model_2d(**kw)
    ck = inflate(m2.state_dict(), img_size=(8, 32, 32), patch_size=(2, 8, 8), method=method, pos=pos,
                 config=vit_config(m2))
    m3 = _build(ck)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (m3(_repeat(x, 8)) - m2(x)).abs().max() <= TOL


@pytest.mark.parametrize("method", ["central", "mean"])
@pytest.mark.parametrize("pos", ["tile", "separate"])
def test_repeated_frame_identity_after_in_plane_resize(method, pos):
    """New in-plane size: compared with the 2D model at that size carrying the same resampled table."""
    m2 = _model_2d(**POOLED)
    ck = inflate(m2.state_dict(), img_size=(4, 48, 40), patch_size=(2, 8, 8), method=method, pos=pos,
                 config=vit_config(m2))
    m3 = _build(ck)
    ref = vit3d.VisionTransformer(**{**vit_config(m2), "img_size": (48, 40)}).eval()
    state = dict(m2.state_dict())
    state["pos_embed"] = resample_pos_embed(state["pos_embed"], (6, 5), (4, 4), num_prefix_tokens=0)
    ref.load_state_dict(state)
    x = torch.randn(2, 3, 48, 40)
    with torch.no_grad():
        assert (m3(_repeat(x, 4)) - ref(x)).abs().max() <= TOL
    assert any(k == "pos_embed" for k, *_ in ck.report.resampled)


@pytest.mark.parametrize("method", ["central", "mean"])
@pytest.mark.parametrize("kw", [dict(), dict(no_embed_class=True), dict(global_pool="avg")])
def test_class_token_identity_with_one_temporal_token(method, kw):
    m2 = _model_2d(**kw)
    m3 = _build(inflate(m2.state_dict(), img_size=(4, 32, 32), patch_size=(4, 8, 8), method=method,
                        config=vit_config(m2)))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (m3(_repeat(x, 4)) - m2(x)).abs().max() <= TOL


@pytest.mark.parametrize("method", ["central", "mean"])
@pytest.mark.parametrize("pos", ["tile", "separate"])
@pytest.mark.parametrize("kw", [dict(), dict(no_embed_class=True)])
def test_class_token_models_embed_repeated_frames_exactly(method, pos, kw):
    """Embedded tokens (patches + positions + class token) of the repeated clip are the 2D tokens, repeated."""
    m2 = _model_2d(**kw)
    m3 = _build(inflate(m2.state_dict(), img_size=(6, 32, 32), patch_size=(2, 8, 8), method=method, pos=pos,
                        config=vit_config(m2)))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        t2 = m2._pos_embed(m2.patch_embed(x), m2.grid_size)
        t3 = m3._pos_embed(m3.patch_embed(_repeat(x, 6)), m3.grid_size)
    assert (t3[:, :1] - t2[:, :1]).abs().max() <= 1e-6
    assert (t3[:, 1:] - t2[:, 1:].repeat(1, 3, 1)).abs().max() <= 1e-5


def test_class_token_shifts_attention_weight():
    """The documented limit: with a class token and T' > 1 the logits move (one cls key vs T' patch copies)."""
    m2 = _model_2d()
    m3 = _build(inflate(m2.state_dict(), img_size=(8, 32, 32), patch_size=(2, 8, 8), config=vit_config(m2)))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (m3(_repeat(x, 8)) - m2(x)).abs().max() > TOL


@pytest.mark.parametrize("in_chans", [1, 6])
def test_input_channel_adaptation_identity(in_chans):
    """1 channel: a grey frame copied to RGB in 2D; 6 channels: the RGB channels repeated, in order."""
    m2 = _model_2d(**POOLED)
    ck = inflate(m2.state_dict(), img_size=(4, 32, 32), patch_size=(2, 8, 8), in_chans=in_chans,
                 config=vit_config(m2))
    m3 = _build(ck)
    assert ck.config["in_chans"] == in_chans
    if in_chans == 1:
        grey = torch.randn(2, 1, 32, 32)
        x2, x3 = grey.expand(-1, 3, -1, -1), grey
    else:
        x2 = torch.randn(2, 3, 32, 32)
        x3 = x2.repeat(1, 2, 1, 1)
    with torch.no_grad():
        assert (m3(_repeat(x3, 4)) - m2(x2)).abs().max() <= TOL
    assert any(k == "patch_embed.proj.weight" and "channel" in how for k, _, _, how in ck.report.resampled)


def test_kernel_methods_closed_form():
    w = torch.randn(4, 3, 2, 2)
    central = inflate_patch_kernel(w, 3, "central")
    assert torch.equal(central[:, :, 1], w) and central[:, :, [0, 2]].abs().sum() == 0
    mean = inflate_patch_kernel(w, 4, "mean")
    assert torch.allclose(mean.sum(2), w) and torch.allclose(mean[:, :, 0], w / 4)


def test_head_kept_reinitialised_or_dropped():
    m2 = _model_2d()
    base = dict(img_size=(4, 32, 32), patch_size=(2, 8, 8), config=vit_config(m2))
    kept = inflate(m2.state_dict(), num_classes=5, **base)
    assert torch.equal(kept.state_dict["head.weight"], m2.head.weight) and not kept.report.reinitialised
    fresh = inflate(m2.state_dict(), num_classes=11, **base)
    assert fresh.state_dict["head.weight"].shape == (11, 32)
    assert {k for k, _, _ in fresh.report.reinitialised} == {"head.weight", "head.bias"}
    _build(fresh)
    bare = inflate(m2.state_dict(), num_classes=0, **base)
    assert "head.weight" not in bare.state_dict and bare.config["num_classes"] == 0
    assert {k for k, _, _ in bare.report.dropped} == {"head.weight", "head.bias"}
    _build(bare)


def test_separate_positions_start_at_zero_and_train():
    m2 = _model_2d()
    ck = inflate(m2.state_dict(), img_size=(4, 32, 32), patch_size=(2, 8, 8), pos="separate", config=vit_config(m2))
    assert ck.config["pos_embed"] == "learn_separable"
    assert torch.equal(ck.state_dict["pos_embed_temporal"], torch.zeros(1, 2, 32))
    assert torch.equal(ck.state_dict["pos_embed"], m2.pos_embed.detach())  # in-plane table and cls slot untouched
    m3 = _build(ck).train()
    m3(torch.randn(1, 3, 4, 32, 32)).sum().backward()
    assert all(p.grad is not None for p in m3.parameters())


def test_inflate_from_loaded_checkpoint_keeps_report():
    m2 = _model_2d()
    report = LoadReport(source="x.pth", format="timm", notes=["from load_2d"])
    ck = inflate(Checkpoint(dict(m2.state_dict()), vit_config(m2), report), img_size=(2, 32, 32),
                 patch_size=(2, 8, 8))
    assert ck.report.notes[0] == "from load_2d" and report.resampled == []  # input report not mutated
    assert "central-frame" in str(ck.report)


@pytest.mark.parametrize("bad,match", [
    (dict(patch_size=(2, 4, 4)), "in-plane patch"),
    (dict(img_size=(5, 32, 32)), "not divisible"),
    (dict(method="centre"), "did you mean 'central'"),
    (dict(pos="tiled"), "'tile'"),
    (dict(img_size=(32, 32)), "3 spatial dims"),
])
def test_bad_arguments(bad, match):
    m2 = _model_2d()
    args = {**dict(img_size=(4, 32, 32), patch_size=(2, 8, 8), config=vit_config(m2)), **bad}
    with pytest.raises(ValueError, match=match):
        inflate(m2.state_dict(), **args)


def test_3d_checkpoint_is_not_inflated_again():
    m2 = _model_2d()
    ck = inflate(m2.state_dict(), img_size=(4, 32, 32), patch_size=(2, 8, 8), config=vit_config(m2))
    with pytest.raises(ValueError, match="2D checkpoint"):
        inflate(ck, img_size=(4, 32, 32), patch_size=(2, 8, 8))


@pytest.mark.parametrize("kw", [dict(), dict(no_embed_class=True), POOLED])
def test_separate_equals_tile_while_temporal_table_is_zero(kw):
    """On any clip, not just repeated frames: the separable table with zero time part is the tiled table."""
    m2 = _model_2d(**kw)
    args = dict(img_size=(6, 32, 32), patch_size=(2, 8, 8), config=vit_config(m2))
    tile, sep = _build(inflate(m2.state_dict(), pos="tile", **args)), _build(inflate(m2.state_dict(), pos="separate",
                                                                                      **args))
    x = torch.randn(2, 3, 6, 32, 32)
    with torch.no_grad():
        assert (tile(x) - sep(x)).abs().max() <= 1e-5
        sep.pos_embed_temporal.normal_()
        assert (tile.forward_features(x) - sep.forward_features(x)).abs().max() > 1e-2  # the table is used
