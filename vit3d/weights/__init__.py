"""Pretrained weights: reading every ViT layout (local or on the Hub), 2D -> 3D inflation, 3D geometry changes.

- :func:`load_2d` reads timm, torchvision, HF transformers, Google ``.npz`` (vit_jax / big_vision) and MONAI ViT
  checkpoints into the canonical (timm) layout, inferring the architecture; nothing in a file is executed.
- :func:`convert_videomae` / :func:`convert_vivit` turn HF video checkpoints (in memory) into the same layout.
- :func:`inflate` turns the 2D checkpoint into a 3D one (central-frame or mean kernels; tiled or separate
  positions; adapted input channels; kept or fresh classifier).
- :func:`adapt` changes the geometry of any (3D) checkpoint: frames, tubelet, in-plane size, channels, classes.
- :func:`save_checkpoint` / :func:`load_model` write and rebuild self-describing vit3d safetensors files.

Every step records what it renamed, resampled, re-initialised or dropped in a :class:`LoadReport`.
"""

from .adapt import (
    adapt,
    adapt_checkpoint,
    adapt_input_conv,
    resample_checkpoint_pos,
    resample_kernel_axis,
    set_classifier,
    set_in_chans,
    set_patch_depth,
)
from .config import cct_config, infer_config, model_config, vit_config
from .formats import FORMAT_NAMES, FORMATS, detect_format
from .inflate import inflate, inflate_patch_kernel
from .load import (
    adapt_file,
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
    "FORMATS", "FORMAT_NAMES", "Checkpoint", "LoadReport", "adapt", "adapt_checkpoint", "adapt_file",
    "adapt_input_conv", "cct_config", "convert_hf_video", "convert_videomae", "convert_videomae_pretraining",
    "convert_vivit", "create_pretrained",
    "detect_format", "infer_config", "inflate", "inflate_file", "inflate_patch_kernel", "load_2d", "load_model",
    "load_videomae_pretraining",
    "load_state_strict", "model_config", "resample_checkpoint_pos", "resample_kernel_axis", "save_checkpoint",
    "save_model", "set_classifier", "set_in_chans", "set_patch_depth", "vit_config",
]
