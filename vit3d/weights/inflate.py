"""2D -> 3D inflation of a ViT checkpoint: patch kernel, position embedding, input channels, classifier.

- Central-frame kernels: Arnab et al. 2021, "ViViT: A Video Vision Transformer", https://arxiv.org/abs/2103.15691
  (Kinetics-400, ViViT-B: central frame 79.2 top-1 vs filter inflation 77.6).
- Mean (filter) inflation: Carreira & Zisserman 2017, "Quo Vadis, Action Recognition?" (I3D),
  https://arxiv.org/abs/1705.07750
- Separate temporal position table starting at zero: Bertasius et al. 2021 (TimeSformer),
  https://arxiv.org/abs/2102.05095

Both kernel methods map a clip made of one frame repeated to the 2D tokens of that frame, repeated along the new
axis; with tiled (or zero temporal) positions every block then sees each token ``T'`` times, which leaves
attention over patch tokens and average pooling unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

from vit3d.errors import ConfigError
from vit3d.layers import check_choice, resample_pos_embed
from vit3d.layers.helpers import check_divisible, to_ntuple

from .adapt import set_classifier, set_in_chans
from .config import infer_config
from .report import Checkpoint, LoadReport, shape

__all__ = ["inflate", "inflate_patch_kernel"]


def inflate_patch_kernel(weight: torch.Tensor, depth: int, method: Literal["central", "mean"] = "central"
                         ) -> torch.Tensor:
    """2D kernel ``(D, C, kh, kw)`` -> 3D kernel ``(D, C, depth, kh, kw)``.

    ``central``: zeros except the 2D kernel at index ``depth // 2``; ``mean``: the 2D kernel repeated ``depth``
    times and divided by ``depth``. Either way a constant input along the new axis gives the 2D response.
    """
    check_choice("method", method, ("central", "mean"))
    if weight.ndim != 4:
        raise ConfigError(f"expected a 2D patch kernel (D, C, kh, kw), got shape {tuple(weight.shape)}")
    if depth < 1:
        raise ConfigError(f"tubelet depth must be >= 1, got {depth}")
    if method == "mean":
        return weight.unsqueeze(2).repeat(1, 1, depth, 1, 1) / depth
    out = weight.new_zeros(weight.shape[0], weight.shape[1], depth, *weight.shape[2:])
    out[:, :, depth // 2] = weight
    return out


def inflate(
    state_2d: Checkpoint | Mapping[str, torch.Tensor],
    *,
    img_size: Sequence[int],
    patch_size: Sequence[int],
    in_chans: int | None = None,
    num_classes: int | None = None,
    method: Literal["central", "mean"] = "central",
    pos: Literal["tile", "separate"] = "tile",
    config: Mapping[str, Any] | None = None,
) -> Checkpoint:
    """Turn a 2D ViT checkpoint into a 3D one for inputs ``(B, C, T, H, W)`` or ``(B, C, D, H, W)``.

    Args:
        state_2d: a :class:`Checkpoint` from :func:`vit3d.weights.load_2d`, or a canonical 2D state dict (its
            architecture is then inferred from shapes, with heads of 64).
        img_size: 3D input size ``(T, H, W)``; ``(H, W)`` may differ from the checkpoint's (positions are
            resampled bicubically, as :func:`vit3d.layers.resample_pos_embed` does for a 2D model).
        patch_size: tubelet ``(t, ph, pw)``; ``(ph, pw)`` must equal the 2D patch.
        in_chans: input channels of the 3D model (1 for CT or one MRI sequence); ``None`` keeps the 2D count.
        num_classes: classifier outputs; ``None`` keeps the head, 0 drops it, another count re-initialises it.
        method: ``'central'`` (ViViT central frame) or ``'mean'`` (I3D) kernel inflation.
        pos: ``'tile'`` repeats the in-plane table along the new axis; ``'separate'`` keeps it per plane and
            adds a zero-initialised temporal table (model keyword ``pos_embed='learn_separable'``).
        config: the 2D model's keywords when ``state_2d`` is a bare state dict (e.g. ``vit_config(model)``);
            inferred from shapes otherwise. Ignored for a :class:`Checkpoint`.

    Returns:
        ``Checkpoint(state_dict, config, report)``; ``VisionTransformer(**config)`` loads ``state_dict`` strictly.
    """
    check_choice("method", method, ("central", "mean"))
    check_choice("pos", pos, ("tile", "separate"))
    if isinstance(state_2d, Checkpoint):
        ckpt = Checkpoint(dict(state_2d.state_dict), dict(state_2d.config), state_2d.report.copy())
    else:
        report = LoadReport(source="<state dict>", format="timm")
        cfg = dict(config) if config is not None else infer_config(dict(state_2d), report=report)
        ckpt = Checkpoint(dict(state_2d), cfg, report)
    cfg = ckpt.config
    if cfg["spatial_dims"] != 2:
        raise ConfigError(f"inflate expects a 2D checkpoint; this one has spatial_dims={cfg['spatial_dims']}")
    img_size, patch_size = to_ntuple(img_size, 3, "img_size"), to_ntuple(patch_size, 3, "patch_size")
    if patch_size[1:] != tuple(cfg["patch_size"]):
        raise ConfigError(f"in-plane patch {patch_size[1:]} differs from the checkpoint's patch "
                         f"{tuple(cfg['patch_size'])}; use patch_size=({patch_size[0]}, "
                         f"{', '.join(map(str, cfg['patch_size']))})")
    check_divisible(img_size, patch_size)
    if pos == "separate" and cfg["pos_embed"] != "learn":
        raise ConfigError(f"pos='separate' needs a learned position table; the checkpoint uses {cfg['pos_embed']!r}")

    if in_chans is not None:
        ckpt = set_in_chans(ckpt, in_chans)
    if num_classes is not None:
        ckpt = set_classifier(ckpt, num_classes)
    state, cfg, report = dict(ckpt.state_dict), dict(ckpt.config), ckpt.report

    w2 = state["patch_embed.proj.weight"]
    state["patch_embed.proj.weight"] = inflate_patch_kernel(w2, patch_size[0], method)
    how = (f"central-frame inflation (ViViT): 2D kernel at index {patch_size[0] // 2} of {patch_size[0]}"
           if method == "central" else f"mean inflation (I3D): repeated {patch_size[0]} times, divided by "
           f"{patch_size[0]}")
    report.resampled.append(("patch_embed.proj.weight", shape(w2), shape(state["patch_embed.proj.weight"]), how))

    grid2 = tuple(s // p for s, p in zip(cfg["img_size"], cfg["patch_size"], strict=True))
    grid3 = tuple(s // p for s, p in zip(img_size, patch_size, strict=True))
    if cfg["pos_embed"] == "learn":
        prefix = 1 if cfg["class_token"] and not cfg["no_embed_class"] else 0
        table = state["pos_embed"]
        plane = resample_pos_embed(table, grid3[1:], grid2, num_prefix_tokens=prefix)
        if pos == "tile":
            tiled = plane[:, prefix:].repeat(1, grid3[0], 1)  # token order (t, h, w): the plane repeats per step
            state["pos_embed"] = torch.cat([plane[:, :prefix], tiled], dim=1)
            how = f"in-plane grid {grid2} -> {grid3[1:]} (bicubic), tiled {grid3[0]} times along the new axis"
        else:
            state["pos_embed"] = plane
            temporal = torch.zeros(1, grid3[0], cfg["embed_dim"], dtype=table.dtype)
            state["pos_embed_temporal"] = temporal
            report.reinitialised.append(("pos_embed_temporal", shape(temporal), "new temporal table, zeros"))
            how = f"in-plane grid {grid2} -> {grid3[1:]} (bicubic), kept per plane"
        report.resampled.append(("pos_embed", shape(table), shape(state["pos_embed"]),
                                 how + ("; class-token slot untouched" if prefix else "")))
    elif cfg["pos_embed"] == "sincos":
        report.notes.append("fixed sin-cos positions are rebuilt for the 3D grid; the repeated-frame identity "
                            "with the 2D model does not hold for them")

    report.notes.append(f"inflated to img_size {img_size}, patch_size {patch_size} ({method} kernel, {pos} positions)")
    cfg.update(img_size=img_size, patch_size=patch_size, spatial_dims=3,
               pos_embed="learn_separable" if pos == "separate" else cfg["pos_embed"])
    return Checkpoint(state, cfg, report)
