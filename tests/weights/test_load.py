"""Strict loading, ``create_model(name, pretrained=...)``, the self-describing vit3d file and ``load_model``."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import vit3d
from vit3d.models import list_models
from vit3d.weights import (
    infer_config,
    inflate,
    load_2d,
    load_model,
    load_state_strict,
    save_checkpoint,
    save_model,
    vit_config,
)


@pytest.fixture
def tiny_ckpt(tmp_path):
    model = vit3d.VisionTransformer(32, 8, num_classes=5, embed_dim=64, depth=2, num_heads=1).eval()
    path = tmp_path / "tiny.safetensors"
    save_file(model.state_dict(), path)
    return model, path


def test_shapes_give_the_architecture():
    model = vit3d.VisionTransformer((48, 32), 8, in_chans=2, num_classes=7, embed_dim=128, depth=3, num_heads=2,
                                    mlp_ratio=2.0, qkv_bias=False, init_values=0.1, no_embed_class=True)
    cfg = infer_config(model.state_dict(), {"img_size": (48, 32)})
    assert cfg["img_size"] == (48, 32) and cfg["patch_size"] == (8, 8) and cfg["in_chans"] == 2
    assert (cfg["embed_dim"], cfg["depth"], cfg["num_heads"], cfg["mlp_ratio"]) == (128, 3, 2, 2.0)
    assert cfg["qkv_bias"] is False and cfg["no_embed_class"] is True and cfg["num_classes"] == 7
    assert cfg["init_values"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="not a square"):
        infer_config(model.state_dict())


def test_heads_not_inferable_needs_a_hint():
    model = vit3d.VisionTransformer(16, 8, num_classes=0, embed_dim=48, depth=1, num_heads=3)
    with pytest.raises(ValueError, match="num_heads"):
        infer_config(model.state_dict())


@pytest.mark.parametrize("name", list_models("*vit_*"))
def test_vit_config_rebuilds_every_preset(name):
    with torch.device("meta"):
        model = vit3d.create_model(name)
    if not isinstance(model, vit3d.VisionTransformer):
        pytest.skip(f"{name} is not a VisionTransformer")
    with torch.device("meta"):
        again = vit3d.VisionTransformer(**vit_config(model))
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_strict_load_names_missing_unexpected_and_mismatched():
    model = vit3d.VisionTransformer(16, 8, num_classes=3, embed_dim=64, depth=1, num_heads=1)
    state = dict(model.state_dict())
    state.pop("norm.weight")
    state["extra.weight"] = torch.zeros(2, 2)
    state["head.weight"] = torch.zeros(4, 64)
    with pytest.raises(ValueError) as err:
        load_state_strict(model, state, "x.pth")
    msg = str(err.value)
    assert "norm.weight" in msg and "extra.weight [2, 2]" in msg and "head.weight: checkpoint [4, 64] vs model [3, 64]" in msg


def test_unexpected_key_in_file_is_an_error(tmp_path):
    model = vit3d.VisionTransformer(16, 8, num_classes=3, embed_dim=64, depth=1, num_heads=1)
    state = {**model.state_dict(), "reg_token": torch.zeros(1, 4, 64)}
    save_file(state, tmp_path / "reg.safetensors")
    with pytest.raises(ValueError, match=r"reg_token \[1, 4, 64\]"):
        vit3d.create_model(None, pretrained=tmp_path / "reg.safetensors")


def test_named_preset_mismatch_names_keys(tiny_ckpt):
    _, path = tiny_ckpt
    with pytest.raises(ValueError) as err:
        vit3d.create_model("vit_tiny_patch16_2d", pretrained=path)
    assert "embed_dim: checkpoint 64, asked 192" in str(err.value)
    assert "patch_embed.proj.weight: checkpoint [64, 3, 8, 8] vs model [192, 3, 16, 16]" in str(err.value)


def test_named_preset_geometry_must_be_asked(tmp_path):
    src = vit3d.create_model("vit_tiny_patch16_2d", img_size=32, num_classes=10, depth=1).eval()
    save_file(src.state_dict(), tmp_path / "t.safetensors")
    with pytest.raises(ValueError, match="num_classes=1000"):  # preset default differs, not asked for
        vit3d.create_model("vit_tiny_patch16_2d", pretrained=tmp_path / "t.safetensors", img_size=32, depth=1)
    same = vit3d.create_model("vit_tiny_patch16_2d", pretrained=tmp_path / "t.safetensors", img_size=32, depth=1,
                              num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(same(x), src(x))
    fresh = vit3d.create_model("vit_tiny_patch16_2d", pretrained=tmp_path / "t.safetensors", img_size=64, depth=1,
                               num_classes=4)
    kinds = str(fresh.load_report)
    assert "head.weight" in kinds and "pos_embed: [1, 5, 192] -> [1, 17, 192]" in kinds


def test_overrides_adapt_geometry_and_reject_architecture(tiny_ckpt):
    src, path = tiny_ckpt
    model = vit3d.create_model(None, pretrained=path, num_heads=1, in_chans=1, num_classes=0, img_size=48)
    assert model.patch_embed.proj.weight.shape == (64, 1, 8, 8) and model.num_classes == 0
    assert model.pos_embed.shape == (1, 37, 64)
    with pytest.raises(ValueError, match="depth: checkpoint 2, asked 3"):
        vit3d.create_model(None, pretrained=path, depth=3)
    with pytest.raises(ValueError, match="unknown keyword"):
        vit3d.create_model(None, pretrained=path, dropout=0.1)


def test_3d_preset_from_2d_checkpoint_inflates(tmp_path):
    src = vit3d.create_model("vit_tiny_patch16_2d", img_size=32, depth=1, num_classes=0, class_token=False,
                             global_pool="avg").eval()
    save_file(src.state_dict(), tmp_path / "t.safetensors")
    m3 = vit3d.create_model("vit_tiny_patch16_3d", pretrained=tmp_path / "t.safetensors", img_size=(4, 32, 32),
                            depth=1, num_classes=0).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert (m3(x.unsqueeze(2).repeat(1, 1, 4, 1, 1)) - src(x)).abs().max() <= 1e-4


def test_vit3d_file_round_trip(tmp_path):
    m2 = vit3d.VisionTransformer(32, 8, num_classes=5, embed_dim=32, depth=2, num_heads=4, norm_eps=1e-5).eval()
    ck = inflate(m2.state_dict(), img_size=(4, 32, 32), patch_size=(2, 8, 8), pos="separate", in_chans=1,
                 config=vit_config(m2))
    path = save_checkpoint(ck, tmp_path / "out.safetensors", {"source": "m2", "method": "central"})
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert json.loads(meta["vit3d.provenance"]) == {"source": "m2", "method": "central"}
    assert json.loads(meta["vit3d.config"])["num_heads"] == 4
    built = vit3d.VisionTransformer(**ck.config).eval()
    built.load_state_dict(ck.state_dict)
    for loaded in (load_model(path), vit3d.load_model(path), vit3d.create_model(None, pretrained=path)):
        loaded.eval()
        x = torch.randn(2, 1, 4, 32, 32)
        with torch.no_grad():
            assert torch.equal(loaded(x), built(x))
        assert loaded.blocks[0].norm1.eps == 1e-5 and loaded.pos_embed_type == "learn_separable"
    assert load_2d(path).report.format == "vit3d"


def test_save_model_then_load_model(tmp_path):
    model = vit3d.create_model("simple_vit_tiny_patch16_3d", img_size=(4, 32, 32), depth=1, num_classes=3).eval()
    save_model(model, tmp_path / "m.safetensors")
    again = load_model(tmp_path / "m.safetensors", drop_path_rate=0.1, dynamic_img_size=True).eval()
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
        assert again(torch.randn(1, 3, 8, 48, 32)).shape == (1, 3)  # the override took effect
    with pytest.raises(ValueError, match=r"\.safetensors"):
        save_model(model, tmp_path / "m.pth")


def test_non_square_grid_uses_the_requested_size(tmp_path):
    src = vit3d.VisionTransformer((40, 32), 8, num_classes=2, embed_dim=64, depth=1, num_heads=1).eval()
    save_file(src.state_dict(), tmp_path / "wide.safetensors")
    with pytest.raises(ValueError, match="img_size"):
        vit3d.create_model(None, pretrained=tmp_path / "wide.safetensors")
    model = vit3d.create_model(None, pretrained=tmp_path / "wide.safetensors", img_size=(40, 32)).eval()
    x = torch.randn(1, 3, 40, 32)
    with torch.no_grad():
        assert torch.equal(model(x), src(x))


def test_a_2d_checkpoint_with_no_model_name_asks_for_inflation(tmp_path):
    """`model: null` with a 2D file and a 3D img_size from the data: a clear error, not a size mismatch."""
    from vit3d.errors import ConfigError

    net2d = vit3d.create_model("vit_tiny_patch16_2d", img_size=(32, 32), patch_size=(16, 16), num_classes=2,
                               embed_dim=64, depth=1, num_heads=1)
    path = tmp_path / "vit2d.safetensors"
    save_file({k: v.contiguous() for k, v in net2d.state_dict().items()}, str(path))
    with pytest.raises(ConfigError, match="inflate it first"):
        vit3d.create_model(None, pretrained=path, img_size=(16, 32, 32), num_classes=2)
