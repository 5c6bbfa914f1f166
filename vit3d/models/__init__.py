"""Model families; importing this package registers every preset."""

from .cct import CCT
from .mae import MaskedAutoencoder
from .registry import (
    PretrainedTag,
    build_model,
    is_model,
    list_models,
    list_pretrained,
    model_entrypoint,
    pretrained_tag,
    register_model,
    register_pretrained,
    split_model_name,
)
from .vit import VisionTransformer

__all__ = ["CCT", "MaskedAutoencoder", "PretrainedTag", "VisionTransformer", "build_model", "is_model", "list_models",
           "list_pretrained", "model_entrypoint", "pretrained_tag", "register_model", "register_pretrained",
           "split_model_name"]
