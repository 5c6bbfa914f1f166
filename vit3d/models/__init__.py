"""Model families; importing this package registers every preset."""

from .registry import build_model, is_model, list_models, model_entrypoint, register_model
from .vit import VisionTransformer

__all__ = ["VisionTransformer", "build_model", "is_model", "list_models", "model_entrypoint", "register_model"]
