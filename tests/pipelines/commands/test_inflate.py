"""``vit3d inflate``: writes a self-describing safetensors file that ``vit3d.load_model`` rebuilds alone."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import vit3d
from pipelines.cli import main as cli_main
from pipelines.commands.inflate import main
from vit3d.weights import inflate, load_2d


@pytest.fixture
def ckpt_2d(tmp_path):
    model = vit3d.VisionTransformer(32, 8, num_classes=5, embed_dim=64, depth=2, num_heads=2, class_token=False,
                                    global_pool="avg").eval()
    path = tmp_path / "vit2d.safetensors"
    save_file(model.state_dict(), path)
    return model, path


def test_inflate_writes_config_and_provenance(tmp_path, ckpt_2d, capsys):
    model, src = ckpt_2d
    out = tmp_path / "vit3d.safetensors"
    rc = main([str(src), "--out", str(out), "--frames", "8", "--tubelet", "2", "--method", "mean",
               "--num-heads", "2"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "load report" in printed and "mean inflation" in printed and "patch_embed.proj.weight" in printed
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    config, prov = json.loads(meta["vit3d.config"]), json.loads(meta["vit3d.provenance"])
    assert config["img_size"] == [8, 32, 32] and config["patch_size"] == [2, 8, 8] and config["num_heads"] == 2
    assert prov["source"] == str(src) and prov["method"] == "mean" and prov["source_format"] == "timm"
    m3 = vit3d.load_model(out).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (m3(x.unsqueeze(2).repeat(1, 1, 8, 1, 1)) - model(x)).abs().max() <= 1e-4


def test_inflate_options_match_the_library(tmp_path, ckpt_2d, capsys):
    _, src = ckpt_2d
    out = tmp_path / "ct.safetensors"
    argv = ["inflate", str(src), "--out", str(out), "--frames", "4", "--tubelet", "4", "--img-size", "48", "40",
            "--in-chans", "1", "--num-classes", "3", "--pos", "separate", "--num-heads", "2"]
    assert cli_main(argv) == 0
    assert "re-initialised: 3" in capsys.readouterr().out  # head weight, head bias, temporal table
    lib = inflate(load_2d(src, num_heads=2), img_size=(4, 48, 40), patch_size=(4, 8, 8), in_chans=1, num_classes=3,
                  pos="separate")
    cli = vit3d.create_model(None, pretrained=out)
    for key, value in lib.state_dict.items():
        if not key.startswith("head."):  # the fresh head is random
            assert torch.equal(cli.state_dict()[key], value), key
    assert cli.patch_embed.in_chans == 1 and cli.num_classes == 3 and cli.pos_embed_type == "learn_separable"


def test_inflate_errors_are_one_line_exit_2(tmp_path, ckpt_2d, capsys):
    from pipelines.cli import main as vit3d

    _, src = ckpt_2d
    cases = [
        ([str(src), "--out", str(tmp_path / "o.safetensors"), "--frames", "5", "--tubelet", "2"], "not divisible"),
        ([str(tmp_path / "missing.pth"), "--out", str(tmp_path / "o.safetensors")], "missing.pth"),
        ([str(src), "--out", "o.safetensors", "--method", "inflate"], "invalid choice: 'inflate'"),
    ]
    for argv, message in cases:
        assert vit3d(["inflate", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("vit3d inflate: error: ") and err.count("\n") == 1 and message in err, err
