"""``vit3d adapt``: a 3D checkpoint's geometry changed from the command line, through the dispatcher."""

from __future__ import annotations

import pytest
import torch

import vit3d
from pipelines.cli import main
from vit3d.weights import inflate, save_checkpoint, vit_config


@pytest.fixture
def clip_model(tmp_path):
    """A 16-frame vit3d file without a class token, inflated from 2D (positions constant in time)."""
    torch.manual_seed(0)
    m2 = vit3d.VisionTransformer(32, 8, num_classes=0, embed_dim=32, depth=1, num_heads=2, class_token=False,
                                 global_pool="avg")
    ckpt = inflate(m2.state_dict(), img_size=(16, 32, 32), patch_size=(2, 8, 8), config=vit_config(m2))
    path = save_checkpoint(ckpt, tmp_path / "m16.safetensors")
    return vit3d.load_model(path).eval(), path


def test_adapt_16_to_8_frames(clip_model, tmp_path, capsys):
    m16, path = clip_model
    out = tmp_path / "m8.safetensors"
    assert main(["adapt", str(path), "--out", str(out), "--frames", "8", "--tubelet", "4"]) == 0
    printed = capsys.readouterr().out
    assert "tubelet 2 -> 4" in printed and "grid (8, 4, 4) -> (2, 4, 4)" in printed and str(out) in printed
    m8 = vit3d.load_model(out).eval()
    assert m8.img_size == (8, 32, 32) and m8.patch_size == (4, 8, 8)
    frame = torch.randn(2, 3, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m8(frame.expand(-1, -1, 8, -1, -1)), m16(frame.expand(-1, -1, 16, -1, -1)),
                                   atol=1e-5, rtol=1e-5)


def test_adapt_videomae_dir_size_channels_classes(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.VideoMAEConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=64, image_size=32, patch_size=16, num_frames=4,
                                      tubelet_size=2, num_labels=7)
    transformers.VideoMAEForVideoClassification(cfg).save_pretrained(tmp_path / "videomae")
    out = tmp_path / "adapted.safetensors"
    argv = ["adapt", str(tmp_path / "videomae"), "--out", str(out), "--frames", "2", "--img-size", "48", "64",
            "--in-chans", "1", "--num-classes", "3"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "rebuilt by the model" in printed and "summed over input channels" in printed and "7 -> 3" in printed
    model = vit3d.load_model(out)
    assert model.img_size == (2, 48, 64) and model.in_chans == 1 and model.pos_embed_type == "sincos_seq"
    assert model(torch.randn(1, 1, 2, 48, 64)).shape == (1, 3)


def test_adapt_user_errors_are_one_line(clip_model, tmp_path, capsys):
    _, path = clip_model
    m2 = vit3d.VisionTransformer(16, 8, num_classes=0, embed_dim=32, depth=1, num_heads=2)
    save_checkpoint(vit3d.weights.Checkpoint(m2.state_dict(), vit_config(m2), vit3d.weights.LoadReport()),
                    tmp_path / "flat.safetensors")
    for argv in (["adapt", str(tmp_path / "flat.safetensors"), "--out", str(tmp_path / "x.safetensors")],
                 ["adapt", str(path), "--out", str(tmp_path / "x.safetensors"), "--frames", "7"],
                 ["adapt", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "x.safetensors")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("vit3d adapt: error: "), err
    assert not (tmp_path / "x.safetensors").exists()
