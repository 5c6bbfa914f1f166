"""Building blocks shared by every vit3d model, for any number of spatial dims."""

from .attention import Attention, record_attention
from .block import Block, LayerScale
from .drop import DropPath, drop_path
from .helpers import check_choice, check_divisible, infer_spatial_dims, to_ntuple
from .mlp import ACT_LAYERS, Mlp, get_act_layer
from .patch_embed import PatchEmbed
from .pos_embed import resample_pos_embed, sincos_pos_embed, sinusoid_table

__all__ = [
    "ACT_LAYERS", "Attention", "Block", "DropPath", "LayerScale", "Mlp", "PatchEmbed", "check_choice",
    "check_divisible", "drop_path", "get_act_layer", "infer_spatial_dims", "record_attention", "resample_pos_embed",
    "sincos_pos_embed", "sinusoid_table", "to_ntuple",
]
