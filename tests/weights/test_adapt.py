"""Changing the geometry of 3D checkpoints: frames, tubelet, in-plane size, channels, classes.

Oracles: exact identities. A clip constant in time ("boring") gives the same pooled features after 16 -> 8
frames (and a tubelet change) for a model without a class token whose positions are constant in time: every
token then appears T' times, which leaves attention and average pooling unchanged. The tubelet kernel's
resampling keeps its sum over time, checked in closed form. Known limit, asserted too: with a class token the
identity fails (its share of attention depends on how many patch tokens there are).
"""

from __future__ import annotations

import pytest
import torch

import vit3d
from vit3d.weights import Checkpoint, LoadReport, adapt, inflate, resample_kernel_axis, vit_config


def _inflated(class_token: bool, frames: int = 16) -> tuple[vit3d.VisionTransformer, Checkpoint]:
    """A 3D model inflated from a random 2D one (tiled positions: constant in time)."""
    torch.manual_seed(0)
    kw = dict(class_token=True, global_pool="token") if class_token else dict(class_token=False, global_pool="avg")
    m2 = vit3d.VisionTransformer(32, 8, num_classes=0, embed_dim=32, depth=2, num_heads=2, **kw)
    with torch.no_grad():
        m2.pos_embed.normal_(std=0.5)
    ckpt = inflate(m2.state_dict(), img_size=(frames, 32, 32), patch_size=(2, 8, 8), config=vit_config(m2),
                   method="mean")
    return _build(ckpt), ckpt


def _build(ckpt: Checkpoint) -> vit3d.VisionTransformer:
    model = vit3d.VisionTransformer(**ckpt.config).eval()
    vit3d.weights.load_state_strict(model, ckpt.state_dict)
    return model


def _boring(frames: int, size: int = 32) -> torch.Tensor:
    frame = torch.randn(2, 3, 1, size, size, generator=torch.Generator().manual_seed(3))
    return frame.expand(-1, -1, frames, -1, -1)


@pytest.mark.parametrize("tubelet", [2, 4, 1])
def test_16_to_8_frames_keeps_a_boring_clip_without_class_token(tubelet):
    m16, ckpt = _inflated(class_token=False)
    m8 = _build(adapt(ckpt, img_size=(8, 32, 32), patch_size=(tubelet, 8, 8)))
    with torch.no_grad():
        torch.testing.assert_close(m8(_boring(8)), m16(_boring(16)), atol=1e-5, rtol=1e-5)


def test_with_a_class_token_the_identity_is_only_approximate():
    """The known limit: the class token's share of attention changes with the number of patch tokens."""
    m16, ckpt = _inflated(class_token=True)
    m8 = _build(adapt(ckpt, img_size=(8, 32, 32)))
    with torch.no_grad():
        assert float((m8(_boring(8)) - m16(_boring(16))).abs().max()) > 1e-4


def test_learned_table_resampled_along_every_axis_and_reported():
    torch.manual_seed(0)
    model = vit3d.VisionTransformer((16, 32, 32), (2, 8, 8), num_classes=4, embed_dim=32, depth=1, num_heads=2)
    ckpt = Checkpoint(dict(model.state_dict()), vit_config(model), LoadReport(source="m"))
    out = adapt(ckpt, img_size=(8, 48, 24), in_chans=1, num_classes=6)
    assert out.state_dict["pos_embed"].shape == (1, 1 + 4 * 6 * 3, 32)
    torch.testing.assert_close(out.state_dict["pos_embed"][:, :1], model.pos_embed[:, :1].detach())  # cls slot
    # Trilinear along every axis: the mean over the table is kept to interpolation accuracy, and a table that
    # is linear along time stays linear (closed form for align_corners=False at 8 -> 4 steps).
    lin = torch.arange(8.0)[:, None, None, None].expand(8, 4, 4, 32).reshape(1, -1, 32)
    ramp = Checkpoint({**ckpt.state_dict, "pos_embed": torch.cat([torch.zeros(1, 1, 32), lin], 1)}, ckpt.config,
                      LoadReport())
    t = adapt(ramp, img_size=(8, 32, 32)).state_dict["pos_embed"][0, 1:].reshape(4, 4, 4, 32)[:, 0, 0, 0]
    torch.testing.assert_close(t, torch.tensor([0.5, 2.5, 4.5, 6.5]))
    kinds = {k for k, *_ in out.report.resampled} | {k for k, *_ in out.report.reinitialised}
    assert {"pos_embed", "patch_embed.proj.weight", "head.weight", "head.bias"} <= kinds
    assert any("trilinear along every axis" in how for k, _, _, how in out.report.resampled if k == "pos_embed")
    assert vit3d.VisionTransformer(**out.config)(torch.randn(1, 1, 8, 48, 24)).shape == (1, 6)


def test_sincos_tables_are_rebuilt_not_resampled():
    model = vit3d.create_model("videomae_base_patch16_3d", embed_dim=32, depth=1, num_heads=2, img_size=(16, 32, 32),
                               num_classes=3)
    ckpt = Checkpoint(dict(model.state_dict()), vit_config(model), LoadReport())
    out = adapt(ckpt, img_size=(8, 32, 32))
    assert "pos_embed" not in out.state_dict and out.config["img_size"] == (8, 32, 32)
    assert any("rebuilt by the model for grid (4, 2, 2)" in n for n in out.report.notes)
    m8 = _build(out)
    assert m8.pos_embed.shape == (1, 16, 32)
    torch.testing.assert_close(m8.pos_embed, model.pos_embed[:, :16])  # VideoMAE's table: the first 16 rows


@pytest.mark.parametrize("old,new", [(2, 1), (1, 2), (2, 4), (3, 2), (4, 3)])
def test_kernel_resampling_keeps_the_sum_over_time(old, new):
    w = torch.randn(5, 3, old, 4, 4, dtype=torch.float64)
    out = resample_kernel_axis(w, new, axis=0)
    assert out.shape == (5, 3, new, 4, 4)
    torch.testing.assert_close(out.sum(2), w.sum(2))
    if new == 1:
        torch.testing.assert_close(out[:, :, 0], w.sum(2))
    if old == 1:  # I3D's mean inflation
        torch.testing.assert_close(out, w.expand(-1, -1, new, -1, -1) / new)


def test_bad_requests_name_the_fix():
    _, ckpt = _inflated(class_token=False)
    with pytest.raises(ValueError, match=r"only the tubelet depth .* Use patch_size=\(2, 8, 8\)"):
        adapt(ckpt, patch_size=(2, 4, 4))
    with pytest.raises(ValueError, match="not divisible"):
        adapt(ckpt, img_size=(7, 32, 32))
    with pytest.raises(ValueError, match="2 entries but 3 spatial dims"):
        adapt(ckpt, img_size=(32, 32), patch_size=(2, 8, 8))


def test_create_model_adapts_frames_of_a_video_checkpoint(tmp_path):
    """``create_model(None, pretrained=3D file, img_size=..., patch_size=...)`` goes through the same code."""
    m16, ckpt = _inflated(class_token=False)
    vit3d.weights.save_checkpoint(ckpt, tmp_path / "m16.safetensors")
    m8 = vit3d.create_model(None, pretrained=tmp_path / "m16.safetensors", img_size=(8, 32, 32),
                            patch_size=(4, 8, 8)).eval()
    with torch.no_grad():
        torch.testing.assert_close(m8(_boring(8)), m16(_boring(16)), atol=1e-5, rtol=1e-5)


def test_adapt_separable_positions_and_tubelet():
    """The README's chain: inflate with separate positions, then fewer frames and thinner tubelets."""
    m2 = vit3d.VisionTransformer(32, 8, num_classes=2, embed_dim=32, depth=1, num_heads=2)
    ck = inflate(m2.state_dict(), img_size=(8, 32, 32), patch_size=(2, 8, 8), config=vit_config(m2), pos="separate")
    out = adapt(ck, img_size=(4, 24, 24), patch_size=(1, 8, 8))
    assert out.state_dict["pos_embed_temporal"].shape == (1, 4, 32)
    assert out.state_dict["pos_embed"].shape == (1, 1 + 3 * 3, 32)
    model = vit3d.VisionTransformer(**out.config)
    vit3d.weights.load_state_strict(model, out.state_dict)
    assert model(torch.randn(1, 3, 4, 24, 24)).shape == (1, 2)


def test_monai_3d_vit_adapts(tmp_path):
    """A MONAI 3D ViT (no position on its class token): frames and classes changed, the class token kept."""
    nets = pytest.importorskip("monai.networks.nets")
    src = nets.ViT(in_channels=1, img_size=(8, 16, 16), patch_size=(2, 4, 4), hidden_size=32, mlp_dim=64,
                   num_layers=1, num_heads=2, spatial_dims=3, classification=True, num_classes=4).eval()
    torch.save(src.state_dict(), tmp_path / "monai3d.pth")
    out = vit3d.weights.adapt_file(tmp_path / "monai3d.pth", tmp_path / "m.safetensors", frames=4, num_classes=3,
                                   num_heads=2)
    assert out.config["no_embed_class"] and out.state_dict["pos_embed"].shape == (1, 2 * 4 * 4, 32)
    torch.testing.assert_close(out.state_dict["cls_token"], src.cls_token.detach())
    model = vit3d.load_model(tmp_path / "m.safetensors")
    assert model(torch.randn(1, 1, 4, 16, 16)).shape == (1, 3)


def test_vivit_checkpoint_at_fewer_frames(tmp_path):
    """HF ViViT's learned table (with its class-token slot) resampled from 4 to 2 frames through create_model."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.VivitConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                   image_size=16, tubelet_size=[2, 8, 8], num_frames=4, num_labels=3)
    src = transformers.VivitForVideoClassification(cfg).eval()
    src.save_pretrained(tmp_path)
    model = vit3d.create_model(None, pretrained=tmp_path, img_size=(2, 16, 16)).eval()
    table = src.vivit.embeddings.position_embeddings.detach()
    torch.testing.assert_close(model.pos_embed[:, :1], table[:, :1])  # the class-token slot is not resampled
    assert model.pos_embed.shape == (1, 1 + 1 * 2 * 2, 32) and model.act_layer == "gelu_tanh"
    assert any(k == "pos_embed" for k, *_ in model.load_report.resampled)
    assert model(torch.randn(1, 3, 2, 16, 16)).shape == (1, 3)
