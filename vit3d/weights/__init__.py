"""Pretrained 2D weights and 2D -> 3D inflation.

- :func:`load_2d` reads timm, torchvision, HF transformers, Google ``.npz`` (vit_jax / big_vision) and MONAI ViT
  checkpoints into the canonical (timm) layout, inferring the architecture; nothing in a file is executed.
- :func:`convert_videomae` / :func:`convert_vivit` turn HF video checkpoints (in memory) into the same layout.
- :func:`inflate` turns the 2D checkpoint into a 3D one (central-frame or mean kernels; tiled or separate
  positions; adapted input channels; kept or fresh classifier).
- :func:`save_checkpoint` / :func:`load_model` write and rebuild self-describing vit3d safetensors files.

Every step records what it renamed, resampled, re-initialised or dropped in a :class:`LoadReport`.
"""

from .adapt import adapt_checkpoint, adapt_input_conv, resample_checkpoint_pos, set_classifier, set_in_chans
from .config import infer_config, vit_config
from .formats import FORMATS, detect_format
from .inflate import inflate, inflate_patch_kernel
from .load import (
    create_pretrained,
    inflate_file,
    load_2d,
    load_model,
    load_state_strict,
    save_checkpoint,
    save_model,
)
from .report import Checkpoint, LoadReport
from .video import convert_hf_video, convert_videomae, convert_vivit
from .videomae_pretraining import convert_videomae_pretraining, load_videomae_pretraining

__all__ = [
    "FORMATS", "Checkpoint", "LoadReport", "adapt_checkpoint", "adapt_input_conv", "convert_hf_video",
    "convert_videomae", "convert_videomae_pretraining", "convert_vivit", "create_pretrained",
    "detect_format", "infer_config", "inflate", "inflate_file", "inflate_patch_kernel", "load_2d", "load_model", "load_videomae_pretraining",
    "load_state_strict", "resample_checkpoint_pos", "save_checkpoint", "save_model", "set_classifier",
    "set_in_chans", "vit_config",
]
