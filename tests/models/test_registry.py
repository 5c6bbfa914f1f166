"""Registry-wide checks: every registered model builds tiny, runs forward and backward, and rejects typos."""

import pytest
import torch

import vit3d
from vit3d.models import list_models

# Tiny overrides per family (keyed by name prefix); input shape follows from the model's own img_size.
TINY_OVERRIDES = {
    "vit_": dict(embed_dim=32, depth=2, num_heads=2, num_classes=3),
    "simple_vit_": dict(embed_dim=36, depth=2, num_heads=2, num_classes=3),
    "videomae_": dict(embed_dim=32, depth=2, num_heads=2, num_classes=3),
    "vivit_": dict(embed_dim=32, depth=2, num_heads=2, num_classes=3),
    "cct_": dict(embed_dim=32, depth=1, num_heads=2, num_classes=3, conv_channels=8, img_size=16),
}
TINY_GEOMETRY = {"2d": dict(img_size=(16, 16), patch_size=(8, 8)),
                 "3d": dict(img_size=(4, 16, 16), patch_size=(2, 8, 8))}


def tiny_model(name: str) -> torch.nn.Module:
    prefix = max((p for p in TINY_OVERRIDES if name.startswith(p)), key=len)
    overrides = dict(TINY_OVERRIDES[prefix])
    if "img_size" not in overrides:
        overrides.update(TINY_GEOMETRY[name.rsplit("_", 1)[-1]])
    return vit3d.create_model(name, **overrides)


def test_registry_lists_required_presets():
    names = list_models()
    for size in ("tiny", "small", "base", "large"):
        for dims in ("2d", "3d"):
            assert f"vit_{size}_patch16_{dims}" in names
    for size in ("tiny", "small", "base"):
        for dims in ("2d", "3d"):
            assert f"simple_vit_{size}_patch16_{dims}" in names
    assert list_models("vit_*_3d") == sorted(n for n in names if n.startswith("vit_") and n.endswith("_3d"))


def test_preset_defaults():
    m = vit3d.models.model_entrypoint("vit_base_patch16_3d")
    with torch.device("meta"):
        model = m()
    assert model.img_size == (16, 224, 224) and model.patch_size == (2, 16, 16) and model.embed_dim == 768
    with torch.device("meta"):
        model = vit3d.create_model("vit_large_patch16_2d")
    assert model.img_size == (224, 224) and model.patch_size == (16, 16) and len(model.blocks) == 24


@pytest.mark.parametrize("name", list_models())
def test_every_model_forward_backward(name):
    model = tiny_model(name).train()
    x = torch.randn(2, model.in_chans, *model.img_size)
    out = model(x)
    assert out.shape == (2, 3)
    out.square().sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{name}: no gradient for {missing}"


def test_unknown_model_and_keyword():
    with pytest.raises(ValueError, match="did you mean vit_small_patch16_3d"):
        vit3d.create_model("vit_smal_patch16_3d")
    with pytest.raises(ValueError, match="unknown keyword.*'num_head' \\(did you mean 'num_heads'\\?\\)"):
        vit3d.create_model("vit_tiny_patch16_3d", num_head=3)
    with pytest.raises(ValueError, match="needs pretrained"):
        vit3d.create_model(None)


def test_register_model_rejects_duplicates():
    from vit3d.models.registry import register_model

    def vit_tiny_patch16_2d():
        return None

    with pytest.raises(ValueError, match="already registered"):
        register_model(vit_tiny_patch16_2d)


def test_pretrained_tags_name_registered_models():
    """Every tag belongs to a registered preset, each preset's first tag is its default, and a tagged name builds
    the preset's architecture (weights only with pretrained=True, as in timm)."""
    from vit3d.models import is_model, list_pretrained, pretrained_tag

    tags = list_pretrained()
    assert "vit_base_patch16_3d.augreg_in21k" in tags and "videomae_base_patch16_3d.kinetics400" in tags
    for full in tags:
        base = full.split(".")[0]
        assert is_model(base) and is_model(full)
        assert pretrained_tag(full)[1].source.startswith("hf-hub:")
    assert pretrained_tag("vit_base_patch16_3d")[0] == "augreg_in21k_ft_in1k"
    assert not is_model("vit_base_patch16_3d.nope")
    with torch.device("meta"):
        model = vit3d.create_model("vit_base_patch16_3d.augreg_in21k")
    assert model.img_size == (16, 224, 224) and not hasattr(model, "load_report")
