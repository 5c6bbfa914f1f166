"""Model families; importing this package registers every preset."""

from .cct import CCT
from .registry import build_model, is_model, list_models, model_entrypoint, register_model
from .vit import VisionTransformer

__all__ = ["CCT", "VisionTransformer", "build_model", "is_model", "list_models", "model_entrypoint",
           "register_model"]
