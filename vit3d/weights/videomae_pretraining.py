"""HF ``VideoMAEForPreTraining`` (encoder and decoder) as a :class:`vit3d.models.mae.MaskedAutoencoder`, to continue
VideoMAE pretraining (Tong et al. 2022, https://arxiv.org/abs/2203.12602) on new clips or volumes.

The encoder goes through the same converter as every VideoMAE checkpoint (:func:`vit3d.weights.convert_videomae`);
this module adds the decoder. Layout facts (transformers 5.23, ``modeling_videomae.py``):

- ``encoder_to_decoder`` (no bias) -> ``decoder_embed``; ``mask_token`` -> ``mask_token``.
- ``decoder.decoder_layers.{i}`` are VideoMAE layers (q/v-only biases, ``layernorm_before`` / ``_after`` with the
  encoder's eps) -> ``decoder_blocks.{i}`` with the encoder's key mapping.
- ``decoder.norm`` is a plain ``nn.LayerNorm`` (eps 1e-5, not the config's) -> ``decoder_norm``.
- ``decoder.head`` predicts each patch as ``(tubelet, patch, patch, channel)``; vit3d's targets are ordered
  ``(channel, tubelet, patch, patch)`` like a Conv3d kernel, so its rows are permuted -> ``decoder_pred``.
- The decoder positions are VideoMAE's fixed table over the token index, stored nowhere -> ``'sincos_seq'``.
- The loss undoes ImageNet's normalisation for 3-channel inputs before normalising each patch per channel.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch

from vit3d.errors import CheckpointError
from vit3d.models import VisionTransformer
from vit3d.models.mae import MaskedAutoencoder

from .formats import _HF_LEGACY, _fuse_qkv, _move, _videomae_qv_bias
from .io import read_checkpoint
from .load import load_state_strict
from .report import LoadReport, shape
from .video import convert_videomae

__all__ = ["convert_videomae_pretraining", "is_videomae_pretraining", "load_videomae_pretraining"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_DECODER_MARKERS = ("encoder_to_decoder.weight", "decoder.head.weight")
_QKV = ("attention.attention.query", "attention.attention.key", "attention.attention.value")


def convert_videomae_pretraining(state_dict: Mapping[str, torch.Tensor], hf_config: Mapping[str, Any] | None = None,
                                 *, mask_type: Literal["random", "tube"] = "tube", mask_ratio: float = 0.9,
                                 source: str = "<state dict>") -> MaskedAutoencoder:
    """HF ``VideoMAEForPreTraining`` tensors (and its config) -> a :class:`MaskedAutoencoder` holding them.

    ``mae(x, mask)`` then equals transformers' ``loss`` for ``pixel_values = x.permute(0, 2, 1, 3, 4)`` and
    ``bool_masked_pos = mask.mask``. The loading report is ``mae.load_report`` (and the encoder's, as
    ``mae.encoder.load_report``).

    Args:
        state_dict: the model's tensors (``model.state_dict()`` or the safetensors file's).
        hf_config: the model's config as a dict (``model.config.to_dict()`` or ``config.json``); without it the
            decoder head count is taken as heads of 64 and ``norm_pix_loss`` as VideoMAE's default (True).
        mask_type: masks to draw when training on (VideoMAE: ``'tube'``).
        mask_ratio: share of patches hidden (VideoMAE: 0.9).
        source: name for the report and messages.

    Raises:
        CheckpointError: the tensors hold no VideoMAE decoder, or a decoder tensor is missing or left over.
    """
    config = dict(hf_config or {})
    tensors = dict(state_dict)
    if not all(k in tensors for k in _DECODER_MARKERS):
        raise CheckpointError(f"{source} holds no VideoMAE pretraining decoder ({list(_DECODER_MARKERS)} absent); "
                              "for an encoder alone give the weights file to pipelines.networks.Pretrained (vit3d "
                              "pretrain builds a fresh decoder)")
    decoder = {k: v for k, v in tensors.items()
               if k.startswith(("decoder.", "encoder_to_decoder.")) or k == "mask_token"}
    encoder_ckpt = convert_videomae({k: v for k, v in tensors.items() if k not in decoder}, config, source=source)
    encoder = VisionTransformer(**encoder_ckpt.config)
    load_state_strict(encoder, encoder_ckpt.state_dict, source)
    encoder.load_report = encoder_ckpt.report  # type: ignore[assignment]

    report = LoadReport(source=source, format="hf VideoMAEForPreTraining decoder")
    state: dict[str, torch.Tensor] = {}
    _move(decoder, state, "encoder_to_decoder.weight", "decoder_embed.weight", report)
    _move(decoder, state, "mask_token", "mask_token", report)
    depth = len({int(m.group(1)) for k in decoder if (m := re.match(r"decoder\.decoder_layers\.(\d+)\.", k))})
    for i in range(depth):
        p, q = f"decoder.decoder_layers.{i}.", f"decoder_blocks.{i}."
        _videomae_qv_bias(decoder, p, _QKV, report)
        for part in ("weight", "bias"):
            _fuse_qkv(decoder, state, tuple(f"{p}{n}.{part}" for n in _QKV), f"{q}attn.qkv.{part}", report)
            for old, new in _HF_LEGACY:
                _move(decoder, state, f"{p}{old}.{part}", f"{q}{new}.{part}", report)
    for part in ("weight", "bias"):
        _move(decoder, state, f"decoder.norm.{part}", f"decoder_norm.{part}", report)
    tubelet, patch_h, patch_w = encoder.patch_size
    channels = encoder.in_chans
    for part in ("weight", "bias"):
        t = decoder.pop(f"decoder.head.{part}")
        t = t.reshape(tubelet, patch_h, patch_w, channels, *t.shape[1:]).movedim(3, 0).reshape(t.shape)
        state[f"decoder_pred.{part}"] = t
        report.resampled.append((f"decoder.head.{part}", shape(t), shape(t),
                                 "rows permuted from (t, h, w, channel) to vit3d's (channel, t, h, w) patch order"))
    if decoder:
        raise CheckpointError(f"{source}: decoder tensors vit3d does not know: {sorted(decoder)[:8]}")

    dim = int(state["decoder_embed.weight"].shape[0])
    heads = int(config.get("decoder_num_attention_heads") or max(dim // 64, 1))
    if "decoder_num_attention_heads" not in config:
        report.notes.append(f"decoder_num_heads={heads} assumed (heads of {dim // heads}); pass the config to be sure")
    mlp = state["decoder_blocks.0.mlp.fc1.weight"].shape[0] if depth else 4 * dim
    norm_pix = bool(config.get("norm_pix_loss", True))
    rgb = channels == 3
    if not norm_pix and not rgb:
        raise CheckpointError(f"{source}: norm_pix_loss=False needs 3-channel (ImageNet-normalised) input, as in "
                         f"transformers; the checkpoint has {channels} channels")
    mae = MaskedAutoencoder(
        encoder, decoder_embed_dim=dim, decoder_depth=depth, decoder_num_heads=heads, decoder_mlp_ratio=mlp / dim,
        decoder_pos_embed="sincos_seq", decoder_norm_eps=1e-5, mask_type=mask_type, mask_ratio=mask_ratio,
        norm_pix_loss=norm_pix, pixel_mean=IMAGENET_MEAN if rgb else None, pixel_std=IMAGENET_STD if rgb else None)
    decoder_keys = {k: v for k, v in mae.state_dict().items() if not k.startswith("encoder.")}
    missing = sorted(set(decoder_keys) - set(state))
    if missing:
        raise CheckpointError(f"{source}: the VideoMAE decoder lacks {missing}")
    load_state_strict(mae, {**{f"encoder.{k}": v for k, v in encoder.state_dict().items()}, **state}, source)
    report.notes.append(f"decoder: {depth} blocks of width {dim}, fixed sin-cos positions over the token index; "
                        f"norm_pix_loss={norm_pix}" + ("; ImageNet normalisation undone before the targets" if rgb
                                                       else ""))
    mae.load_report = report  # type: ignore[assignment]
    return mae


def is_videomae_pretraining(source: str | Path) -> bool:
    """Whether ``source`` (a file or HF directory) holds a ``VideoMAEForPreTraining`` decoder."""
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        return False
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
    else:
        keys = set(read_checkpoint(path).tensors)
    return all(k in keys for k in _DECODER_MARKERS)


def load_videomae_pretraining(source: str | Path, *, mask_type: Literal["random", "tube"] = "tube",
                              mask_ratio: float = 0.9) -> MaskedAutoencoder:
    """Read a ``VideoMAEForPreTraining`` file or HF directory (``config.json`` beside the weights) safely and
    convert it with :func:`convert_videomae_pretraining`."""
    raw = read_checkpoint(source)
    return convert_videomae_pretraining(raw.tensors, raw.config, mask_type=mask_type, mask_ratio=mask_ratio,
                                        source=raw.source)
