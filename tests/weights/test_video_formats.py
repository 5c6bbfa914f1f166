"""HF video checkpoints (VideoMAE, ViViT) load into the one VisionTransformer with transformers' outputs.

Oracle: the randomly initialised ``transformers`` model itself (built here, nothing downloaded), every parameter
redrawn so q/v biases, LayerNorms and tables are all non-trivial. HF takes clips as ``(B, T, C, H, W)``, vit3d
as ``(B, C, T, H, W)``.
"""

from __future__ import annotations

import pytest
import torch

import vit3d
from vit3d.weights import convert_videomae, convert_vivit, load_2d

transformers = pytest.importorskip("transformers")

TOL = 1e-4
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=5)


def _randomise(model: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return model.eval()


def _videomae_cfg(**kw):
    return transformers.VideoMAEConfig(**SMALL, image_size=16, patch_size=8, num_frames=4, tubelet_size=2, **kw)


def _vivit_cfg(**kw):
    return transformers.VivitConfig(**SMALL, image_size=16, tubelet_size=[2, 8, 8], num_frames=4, **kw)


def _clip(frames: int = 4) -> torch.Tensor:
    return torch.randn(2, 3, frames, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("mean_pooling", [True, False])
@pytest.mark.parametrize("cls_name", ["VideoMAEForVideoClassification", "VideoMAEModel"])
def test_videomae_matches_transformers(tmp_path, cls_name, mean_pooling):
    src = _randomise(getattr(transformers, cls_name)(_videomae_cfg(use_mean_pooling=mean_pooling)))
    src.save_pretrained(tmp_path)
    model = vit3d.create_model(None, pretrained=tmp_path).eval()
    assert model.pos_embed_type == "sincos_seq" and model.cls_token is None
    x = _clip()
    with torch.no_grad():
        out = src(pixel_values=x.transpose(1, 2))
        if cls_name == "VideoMAEModel":
            assert float((model.forward_features(x) - out.last_hidden_state).abs().max()) <= TOL
        elif mean_pooling:
            assert float((model(x) - out.logits).abs().max()) <= TOL
        else:  # HF then classifies the first *patch* token (VideoMAE has no class token): vit3d averages
            assert model.global_pool == "avg"


def test_videomae_zero_key_bias_matters(tmp_path):
    """Control: the fused qkv bias holds q, zeros, v; with the q and v biases swapped the logits differ."""
    src = _randomise(transformers.VideoMAEForVideoClassification(_videomae_cfg()))
    ckpt = convert_videomae(src.state_dict(), src.config.to_dict())
    bias = ckpt.state_dict["blocks.0.attn.qkv.bias"]
    attn = src.videomae.encoder.layer[0].attention.attention
    assert torch.equal(bias[32:64], torch.zeros(32)) and torch.equal(bias[:32], attn.query.bias)
    model = vit3d.VisionTransformer(**ckpt.config)
    vit3d.weights.load_state_strict(model, ckpt.state_dict)
    x = _clip()
    with torch.no_grad():
        ref = src(pixel_values=x.transpose(1, 2)).logits
        assert float((model.eval()(x) - ref).abs().max()) <= TOL
        model.blocks[0].attn.qkv.bias[:32], model.blocks[0].attn.qkv.bias[64:] = bias[64:], bias[:32]
        assert float((model(x) - ref).abs().max()) > 1e-3


def test_videomae_pretraining_encoder(tmp_path):
    """``VideoMAEForPreTraining``: the encoder loads (decoder and mask token dropped, each reported)."""
    cfg = _videomae_cfg(use_mean_pooling=False, decoder_hidden_size=16, decoder_num_hidden_layers=1,
                        decoder_num_attention_heads=2, decoder_intermediate_size=32)
    src = _randomise(transformers.VideoMAEForPreTraining(cfg))
    src.save_pretrained(tmp_path)
    ckpt = load_2d(tmp_path)
    dropped = {k for k, _, _ in ckpt.report.dropped}
    assert "mask_token" in dropped and "encoder_to_decoder.weight" in dropped
    assert any(k.startswith("decoder.") for k in dropped)
    model = vit3d.create_model(None, pretrained=tmp_path).eval()
    x = _clip()
    with torch.no_grad():
        ref = src.videomae(pixel_values=x.transpose(1, 2)).last_hidden_state
        assert float((model.forward_features(x) - ref).abs().max()) <= TOL


def test_videomae_in_memory_names():
    """transformers 5 names the q/v biases ``query.bias`` / ``value.bias`` in memory, ``q_bias`` in files."""
    src = _randomise(transformers.VideoMAEForVideoClassification(_videomae_cfg()))
    ckpt = convert_videomae(src.state_dict(), src.config.to_dict())
    model = vit3d.VisionTransformer(**ckpt.config).eval()
    vit3d.weights.load_state_strict(model, ckpt.state_dict)
    x = _clip()
    with torch.no_grad():
        assert float((model(x) - src(pixel_values=x.transpose(1, 2)).logits).abs().max()) <= TOL


@pytest.mark.parametrize("cls_name", ["VivitForVideoClassification", "VivitModel"])
def test_vivit_matches_transformers(tmp_path, cls_name):
    src = _randomise(getattr(transformers, cls_name)(_vivit_cfg()))
    src.save_pretrained(tmp_path)
    model = vit3d.create_model(None, pretrained=tmp_path).eval()
    assert model.act_layer == "gelu_tanh" and model.blocks[0].mlp.act.approximate == "tanh"
    x = _clip()
    with torch.no_grad():
        out = src(pixel_values=x.transpose(1, 2))
        if cls_name == "VivitModel":
            assert float((model.forward_features(x) - out.last_hidden_state).abs().max()) <= TOL
        else:
            assert float((model(x) - out.logits).abs().max()) <= TOL


def test_vivit_exact_gelu_would_not_match():
    """Control for the activation setting: the same weights under exact GELU are ten times further from
    transformers' logits than under the tanh approximation the config names."""
    src = _randomise(transformers.VivitForVideoClassification(_vivit_cfg()))
    ckpt = convert_vivit(src.state_dict(), src.config.to_dict())
    assert ckpt.config["act_layer"] == "gelu_tanh"
    x = _clip()
    errors = {}
    for act in ("gelu_tanh", "gelu"):
        model = vit3d.VisionTransformer(**{**ckpt.config, "act_layer": act}).eval()
        vit3d.weights.load_state_strict(model, ckpt.state_dict)
        with torch.no_grad():
            errors[act] = float((model(x) - src(pixel_values=x.transpose(1, 2)).logits).abs().max())
    assert errors["gelu"] > 10 * max(errors["gelu_tanh"], 1e-7), errors


def test_unknown_activation_is_refused():
    src = transformers.VivitModel(_vivit_cfg(hidden_act="relu"))
    with pytest.raises(ValueError, match="hidden_act='relu'"):
        convert_vivit(src.state_dict(), src.config.to_dict())


def test_timesformer_is_refused_with_the_reason(tmp_path):
    """TimeSformer's divided attention is not the ViT block (README: TimeSformer); its files say so, by name."""
    from vit3d.errors import CheckpointError

    cfg = transformers.TimesformerConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=64, image_size=16, patch_size=8, num_frames=2)
    transformers.TimesformerModel(cfg).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="model_type 'timesformer' is not a plain ViT.*divided"):
        load_2d(tmp_path)

