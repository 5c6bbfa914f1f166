"""HF video checkpoints (VideoMAE, ViViT) as canonical :class:`Checkpoint` s, for code that holds a state dict
in memory (a ``transformers`` model, a pretraining run) rather than a file; files and hub names go through
:func:`vit3d.weights.load_2d` / :func:`vit3d.create_model`, which call the same converter.

- VideoMAE: Tong et al. 2022, https://arxiv.org/abs/2203.12602 (HF ``VideoMAEModel``,
  ``VideoMAEForVideoClassification``, and the encoder of ``VideoMAEForPreTraining``; the decoder is dropped).
- ViViT: Arnab et al. 2021, https://arxiv.org/abs/2103.15691 (HF ``VivitModel``, ``VivitForVideoClassification``:
  the unfactorised model 1, joint space-time attention over tubelets).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .config import infer_config
from .formats import convert
from .report import Checkpoint, LoadReport

__all__ = ["convert_hf_video", "convert_videomae", "convert_vivit"]


def convert_hf_video(state_dict: Mapping[str, torch.Tensor], hf_config: Mapping[str, Any] | None = None, *,
                     model_type: str | None = None, source: str = "<state dict>") -> Checkpoint:
    """HF VideoMAE / ViViT / ViT state dict (file or in-memory key names, any of the model classes) ->
    ``Checkpoint(state_dict, config, report)`` that ``VisionTransformer(**config)`` loads strictly.

    Args:
        state_dict: the HF model's tensors (``model.state_dict()`` or the safetensors file's).
        hf_config: the HF config as a dict (``model.config.to_dict()`` or ``config.json``); without it, sizes come
            from the shapes and the input size must be derivable (ViViT's table) or the call fails asking for it.
        model_type: ``'videomae'``, ``'vivit'`` or ``'vit'`` when ``hf_config`` does not say (default: guessed
            from the key names).
        source: name for the report and messages.
    """
    config = dict(hf_config or {})
    if model_type is not None:
        config["model_type"] = model_type
    report = LoadReport(source=source, format="hf")
    state, hints, _ = convert(dict(state_dict), "hf", config=config, report=report)
    return Checkpoint(state, infer_config(state, hints, report), report)


def convert_videomae(state_dict: Mapping[str, torch.Tensor], hf_config: Mapping[str, Any] | None = None, *,
                     source: str = "<state dict>") -> Checkpoint:
    """HF VideoMAE (encoder, classifier or pretraining model) -> canonical :class:`Checkpoint`.

    The model it configures: fixed sin-cos table over the token index (``pos_embed='sincos_seq'``), no class
    token, mean pooling with ``fc_norm`` (an identity one for ``VideoMAEModel``, reported as re-initialised),
    fused qkv with zero key bias, the file's GELU and LayerNorm eps. ``forward_features`` equals
    ``last_hidden_state`` and ``forward`` the classifier's logits (input ``(B, C, T, H, W)``; HF takes
    ``(B, T, C, H, W)``).
    """
    return convert_hf_video(state_dict, hf_config, model_type="videomae", source=source)


def convert_vivit(state_dict: Mapping[str, torch.Tensor], hf_config: Mapping[str, Any] | None = None, *,
                  source: str = "<state dict>") -> Checkpoint:
    """HF ViViT (``VivitModel`` / ``VivitForVideoClassification``) -> canonical :class:`Checkpoint`: class
    token, learned ``(1, 1 + T'H'W', D)`` table, tanh-approximate GELU (``gelu_fast``) from the config."""
    return convert_hf_video(state_dict, hf_config, model_type="vivit", source=source)
