"""vit3d: Vision Transformers for images, CT/MRI volumes and video clips."""

from vit3d.factory import create_model
from vit3d.models import VisionTransformer, list_models, list_pretrained, register_model

__version__ = "0.1.0"


def load_model(path, **overrides):  # noqa: ANN001, ANN201 - thin re-export, documented in vit3d.weights
    """Rebuild a model from a vit3d safetensors file (``vit3d inflate`` output); see :func:`vit3d.weights.load_model`."""
    from vit3d.weights import load_model as _load_model

    return _load_model(path, **overrides)


__all__ = ["VisionTransformer", "__version__", "create_model", "list_models", "list_pretrained", "load_model",
           "register_model"]
