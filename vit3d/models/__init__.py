"""Model families; importing this package registers every preset."""

from .cct import CCT
from .mae import MaskedAutoencoder
from .registry import build_model, is_model, list_models, model_entrypoint, register_model
from .vit import VisionTransformer

__all__ = ["CCT", "MaskedAutoencoder", "VisionTransformer", "build_model", "is_model", "list_models", "model_entrypoint",
           "register_model"]
