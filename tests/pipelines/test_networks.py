"""Typed network builders: every preset as a class with its own defaults, pretrained weights, rebuildable configs."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch

import pipelines.networks as networks
import vit3d
from pipelines.networks import Pretrained, network_config, preset_class
from vit3d.errors import ConfigError
from vit3d.models import CCT, VisionTransformer, list_models

SMALL = {"img_size": [4, 16, 16], "patch_size": [2, 8, 8], "embed_dim": 24, "depth": 2, "num_heads": 2}


@pytest.mark.parametrize("name", ["vit_small_patch16_3d", "simple_vit_tiny_patch16_2d", "cct_7_3x1_32_2d"])
def test_preset_class_defaults_are_the_preset(name: str) -> None:
    cls = preset_class(name)
    assert cls is getattr(networks, name) and cls.__module__ == "pipelines.networks" and cls.__name__ == name
    params = inspect.signature(cls).parameters
    with torch.device("meta"):
        reference = vit3d.create_model(name)
    for key, value in reference.model_args.items():
        expected = list(value) if isinstance(value, tuple) else value
        assert params[key].default == expected, key
        assert params[key].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["pretrained"].default is None
    assert issubclass(cls, CCT if name.startswith("cct") else VisionTransformer)


def test_every_registered_model_has_a_builder() -> None:
    assert set(list_models()) <= set(dir(networks))
    with pytest.raises(AttributeError):
        networks.no_such_model  # noqa: B018 - the lookup is the test


def test_builder_equals_the_registry_model_and_rejects_typos() -> None:
    torch.manual_seed(0)
    a = preset_class("vit_tiny_patch16_3d")(**SMALL, num_classes=3, in_chans=1)
    torch.manual_seed(0)
    b = vit3d.create_model("vit_tiny_patch16_3d", **SMALL, num_classes=3, in_chans=1)
    x = torch.randn(2, 1, 4, 16, 16)
    assert torch.equal(a.eval()(x), b.eval()(x))
    with pytest.raises(ConfigError, match="did you mean 'embed_dim'"):
        preset_class("vit_tiny_patch16_3d")(emb_dim=32)


def test_pretrained_preset_and_pretrained_file_load_strictly(tmp_path: Path) -> None:
    from vit3d.weights import save_model

    source = vit3d.create_model("vit_tiny_patch16_3d", **SMALL, num_classes=3, in_chans=1).eval()
    path = save_model(source, tmp_path / "w.safetensors")
    x = torch.randn(1, 1, 4, 16, 16)
    preset = preset_class("vit_tiny_patch16_3d")(**SMALL, num_classes=3, in_chans=1, pretrained=str(path)).eval()
    assert torch.allclose(preset(x), source(x), atol=1e-6)
    from_file = Pretrained(str(path), num_classes=3, in_chans=1, img_size=[4, 16, 16]).eval()
    assert torch.allclose(from_file(x), source(x), atol=1e-6)
    # The stored config rebuilds the architecture with no file: the family class, the file's keywords.
    config = network_config(from_file)
    assert config["class_path"] == "vit3d.models.vit.VisionTransformer"
    rebuilt = VisionTransformer(**config["init_args"]).eval()
    rebuilt.load_state_dict(from_file.state_dict(), strict=True)
    assert torch.equal(rebuilt(x), from_file(x))
    assert "pretrained" not in network_config(preset)["init_args"]
    with pytest.raises(FileNotFoundError, match="pretrained checkpoint not found"):
        Pretrained(str(tmp_path / "none.safetensors"))
