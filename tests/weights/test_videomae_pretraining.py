"""HF ``VideoMAEForPreTraining`` (encoder + decoder) as a vit3d MaskedAutoencoder: the same loss on the same mask.

Oracle: the randomly initialised ``transformers`` model itself (built here, nothing downloaded), every parameter
redrawn so q/v biases, LayerNorms and the mask token are non-trivial. HF takes clips as ``(B, T, C, H, W)`` and
the mask as ``bool_masked_pos`` ``(B, N)``; vit3d takes ``(B, C, T, H, W)`` and the same boolean map.
"""

from __future__ import annotations

import pytest
import torch

from vit3d.models.mae import mask_from_bool, tube_mask
from vit3d.weights import convert_videomae_pretraining, load_model, load_videomae_pretraining, save_model
from vit3d.weights.videomae_pretraining import is_videomae_pretraining

transformers = pytest.importorskip("transformers")


def _model(**kw: object) -> torch.nn.Module:
    config = transformers.VideoMAEConfig(
        image_size=16, patch_size=8, num_frames=4, tubelet_size=2, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, decoder_hidden_size=24, decoder_num_hidden_layers=2,
        decoder_num_attention_heads=3, decoder_intermediate_size=48, **kw)
    model = transformers.VideoMAEForPreTraining(config)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return model.eval()


def _hf_loss_and_logits(model: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        out = model(x.permute(0, 2, 1, 3, 4), bool_masked_pos=mask)
    return out.loss, out.logits


@pytest.mark.parametrize(("channels", "norm_pix", "mean_pooling"),
                         [(3, True, True), (3, False, False), (1, True, True), (2, True, False)])
def test_loss_and_predictions_equal_transformers(channels: int, norm_pix: bool, mean_pooling: bool) -> None:
    hf = _model(num_channels=channels, norm_pix_loss=norm_pix, use_mean_pooling=mean_pooling)
    mae = convert_videomae_pretraining(hf.state_dict(), hf.config.to_dict(), mask_ratio=0.5, source="hf").eval()
    x = torch.randn(2, channels, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    mask = tube_mask(2, (2, 2, 2), 0.5, generator=torch.Generator().manual_seed(2))
    hf_loss, hf_logits = _hf_loss_and_logits(hf, x, mask.mask)
    with torch.no_grad():
        pred = mae.predict(x, mask)
        loss = mae.loss(x, pred, mask)
    # HF orders each patch's outputs (t, h, w, channel); vit3d (channel, t, h, w) like the Conv3d kernel.
    hf_pred = hf_logits.reshape(2, -1, 2, 8, 8, channels).movedim(-1, 2).reshape(pred.shape)
    torch.testing.assert_close(pred, hf_pred, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(loss, hf_loss, rtol=1e-5, atol=1e-6)
    assert abs(float(loss) - float(hf_loss)) < 1e-5 * float(hf_loss)


def test_random_masks_agree_too_and_every_tensor_is_used() -> None:
    hf = _model(num_channels=3)
    mae = convert_videomae_pretraining(hf.state_dict(), hf.config.to_dict(), mask_ratio=0.5).eval()
    x = torch.randn(3, 3, 4, 16, 16)
    mask = mask_from_bool(torch.tensor([[1, 0, 1, 1, 0, 1, 0, 1], [0, 0, 1, 1, 1, 1, 1, 0],
                                        [1, 1, 1, 0, 0, 0, 1, 1]], dtype=torch.bool))
    hf_loss, _ = _hf_loss_and_logits(hf, x, mask.mask)
    with torch.no_grad():
        torch.testing.assert_close(mae(x, mask), hf_loss, rtol=1e-5, atol=1e-6)
    assert mae.decoder_pos_type == "sincos_seq" and mae.pixel_mean == (0.485, 0.456, 0.406)
    assert any("permuted" in how for *_, how in mae.load_report.resampled)


def test_directory_round_trip_and_encoder_for_fit(tmp_path) -> None:
    hf = _model(num_channels=3)
    hf.save_pretrained(tmp_path / "videomae")
    assert is_videomae_pretraining(tmp_path / "videomae")
    mae = load_videomae_pretraining(tmp_path / "videomae", mask_ratio=0.5).eval()
    x = torch.randn(2, 3, 4, 16, 16)
    mask = tube_mask(2, (2, 2, 2), 0.75, generator=torch.Generator().manual_seed(0))
    hf_loss, _ = _hf_loss_and_logits(hf, x, mask.mask)
    with torch.no_grad():
        torch.testing.assert_close(mae(x, mask), hf_loss, rtol=1e-5, atol=1e-6)
    # the encoder saved alone is a vit3d file that rebuilds the same model
    path = save_model(mae.encoder, tmp_path / "encoder.safetensors")
    again = load_model(path).eval()
    with torch.no_grad():
        torch.testing.assert_close(again.forward_features(x), mae.encoder.eval().forward_features(x))


def test_an_encoder_without_decoder_is_refused() -> None:
    hf = _model(num_channels=3)
    encoder_only = {k: v for k, v in hf.state_dict().items() if k.startswith("videomae.")}
    with pytest.raises(ValueError, match="no VideoMAE pretraining decoder"):
        convert_videomae_pretraining(encoder_only, hf.config.to_dict(), mask_ratio=0.5)
    assert not is_videomae_pretraining("/nonexistent/file.safetensors")
