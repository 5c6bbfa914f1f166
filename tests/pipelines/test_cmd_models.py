"""``vit3d models``: the table of registered models and one model's config and parameter count."""

from __future__ import annotations

import json

import torch

import vit3d
from pipelines.cli import main as cli_main
from pipelines.commands.models import describe_model, main


def test_lists_registered_models(capsys):
    assert main(["vit_*"]) == 0
    out = capsys.readouterr().out
    for name in vit3d.list_models("vit_*"):
        assert name in out


def test_cli_dispatches(capsys):
    assert cli_main(["models", "vit_tiny_*"]) == 0
    assert "vit_tiny_patch16_3d" in capsys.readouterr().out


def test_shows_config_and_exact_parameter_count(capsys):
    assert main(["vit_tiny_patch16_3d"]) == 0
    out = capsys.readouterr().out
    d, depth, tokens = 192, 12, 8 * 14 * 14  # closed form for ViT-Ti with 2x16x16 tubelets on 16x224x224
    real = (d * 3 * 2 * 16 * 16 + d) + d + (tokens + 1) * d + depth * (12 * d * d + 13 * d) + 2 * d + (d * 1000 + 1000)
    assert f"parameters: {real:,}" in out and "2x16x16" in out and "num_heads" in out


def test_json_config_rebuilds_the_model(capsys):
    assert main(["simple_vit_tiny_patch16_2d", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    with torch.device("meta"):
        model = vit3d.VisionTransformer(**info["config"])
    assert sum(p.numel() for p in model.parameters()) == info["params"]
    assert info["params"] == describe_model("simple_vit_tiny_patch16_2d")["params"]


def test_unknown_name_suggests(capsys):
    assert main(["vit_tiny_patch16_3"]) == 2
    assert "did you mean vit_tiny_patch16_3d" in capsys.readouterr().err
    assert main(["nothing_*"]) == 2


def test_models_pretrained_lists_tags_and_sources(capsys):
    import json

    from pipelines.commands.models import main as models_main
    from vit3d.models import list_pretrained

    assert models_main(["--pretrained", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list_pretrained()
    by_name = {r["name"]: r for r in rows}
    tag = by_name["vit_base_patch16_3d.augreg_in21k"]
    assert tag["source"] == "hf-hub:timm/vit_base_patch16_224.augreg_in21k" and "inflated" in tag["on_load"]
    assert by_name["videomae_base_patch16_3d.kinetics400"]["default"] is True
    assert models_main(["vivit*", "--pretrained"]) == 0
    assert "google/vivit-b-16x2-kinetics400" in capsys.readouterr().out
    assert models_main(["nothing*", "--pretrained"]) == 2


def test_cct_json_config_rebuilds_the_model(capsys):
    """CCT is described by its constructor keywords (vit3d.weights.cct_config), which rebuild it exactly."""
    for name in ("cct_7_3x2_32_2d", "cct_14_7x2_224_3d", "cct_6_3x1_32_2d"):
        assert main([name, "--json"]) == 0
        info = json.loads(capsys.readouterr().out)
        with torch.device("meta"):
            again = vit3d.models.CCT(**info["config"])
            ref = vit3d.create_model(name)
        assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
        assert again.grid_size == ref.grid_size
