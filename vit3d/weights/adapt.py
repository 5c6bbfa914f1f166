"""Pure functions that adapt a canonical checkpoint to another geometry of the same architecture: input
channels (timm's ``adapt_input_conv``), position grid (resampled), classifier (kept, re-initialised or dropped)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from vit3d.layers import resample_pos_embed
from vit3d.models import VisionTransformer

from .report import Checkpoint, shape

__all__ = ["adapt_checkpoint", "adapt_input_conv", "resample_checkpoint_pos", "set_classifier"]

# Architecture keywords a checkpoint fixes: a request for another value is an error, never a silent change.
ARCH_KEYS = ("embed_dim", "depth", "num_heads", "mlp_ratio", "qkv_bias", "class_token", "no_embed_class",
             "global_pool", "fc_norm", "pos_embed")


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Patch kernel ``(D, C, *k)`` for ``in_chans`` inputs.

    1 channel sums the kernels (a grey image copied to every channel gives the same tokens); N channels repeat
    the kernels cyclically and rescale by ``C / N`` (N channels holding the C originals repeated, in order,
    give the same tokens when N is a multiple of C).
    """
    if in_chans < 1:
        raise ValueError(f"in_chans must be >= 1, got {in_chans}")
    c = weight.shape[1]
    if in_chans == c:
        return weight
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = math.ceil(in_chans / c)
    return weight.repeat(1, reps, *([1] * (weight.ndim - 2)))[:, :in_chans] * (c / in_chans)


def _grid(cfg: Mapping[str, Any]) -> tuple[int, ...]:
    return tuple(s // p for s, p in zip(cfg["img_size"], cfg["patch_size"], strict=True))


def resample_checkpoint_pos(ckpt: Checkpoint, img_size: tuple[int, ...]) -> Checkpoint:
    """Resample the learned position grid of ``ckpt`` for inputs of ``img_size`` (same patch size)."""
    state, cfg, report = dict(ckpt.state_dict), dict(ckpt.config), ckpt.report.copy()
    img_size = tuple(int(s) for s in img_size)
    new_cfg = {**cfg, "img_size": img_size}
    old_grid, new_grid = _grid(cfg), _grid(new_cfg)
    if any(s % p for s, p in zip(img_size, cfg["patch_size"], strict=True)):
        raise ValueError(f"img_size {img_size} is not divisible by the checkpoint's patch_size {cfg['patch_size']}")
    if new_grid != old_grid and cfg["pos_embed"] in ("learn", "learn_separable"):
        prefix = 0 if cfg["no_embed_class"] or not cfg["class_token"] else 1
        old, new = (old_grid, new_grid) if cfg["pos_embed"] == "learn" else (old_grid[1:], new_grid[1:])
        before = state["pos_embed"]
        state["pos_embed"] = resample_pos_embed(before, new, old, num_prefix_tokens=prefix)
        if state["pos_embed"] is not before:
            report.resampled.append(("pos_embed", shape(before), shape(state["pos_embed"]),
                                     f"grid {old} -> {new}, {'bicubic' if len(old) == 2 else 'interpolated'}"))
        if cfg["pos_embed"] == "learn_separable" and new_grid[0] != old_grid[0]:
            before = state["pos_embed_temporal"]
            state["pos_embed_temporal"] = resample_pos_embed(before, new_grid[:1], old_grid[:1], num_prefix_tokens=0)
            report.resampled.append(("pos_embed_temporal", shape(before), shape(state["pos_embed_temporal"]),
                                     f"{old_grid[0]} -> {new_grid[0]} steps, linear"))
    return Checkpoint(state, new_cfg, report)


def set_classifier(ckpt: Checkpoint, num_classes: int) -> Checkpoint:
    """Keep the head when ``num_classes`` matches; drop it for 0; otherwise start a fresh one (timm's init)."""
    state, cfg, report = dict(ckpt.state_dict), dict(ckpt.config), ckpt.report.copy()
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0, got {num_classes}")
    if num_classes == cfg["num_classes"]:
        return ckpt
    for key in ("head.weight", "head.bias"):
        if key in state:
            t = state.pop(key)
            if num_classes == 0:
                report.dropped.append((key, shape(t), "num_classes=0 asked for: backbone without a classifier"))
    if num_classes > 0:
        weight = torch.empty(num_classes, cfg["embed_dim"])
        torch.nn.init.trunc_normal_(weight, std=0.02)
        state["head.weight"], state["head.bias"] = weight, torch.zeros(num_classes)
        why = f"{cfg['num_classes']} -> {num_classes} classes: new head (trunc normal, std 0.02; zero bias)"
        report.reinitialised += [("head.weight", shape(weight), why), ("head.bias", (num_classes,), why)]
    cfg["num_classes"] = num_classes
    return Checkpoint(state, cfg, report)


def set_in_chans(ckpt: Checkpoint, in_chans: int) -> Checkpoint:
    """Adapt the patch kernel to ``in_chans`` inputs (see :func:`adapt_input_conv`)."""
    if in_chans == ckpt.config["in_chans"]:
        return ckpt
    state, cfg, report = dict(ckpt.state_dict), dict(ckpt.config), ckpt.report.copy()
    before = state["patch_embed.proj.weight"]
    state["patch_embed.proj.weight"] = adapt_input_conv(before, in_chans)
    how = ("summed over input channels" if in_chans == 1 else
           f"repeated to {in_chans} channels, scaled by {before.shape[1]}/{in_chans}")
    report.resampled.append(("patch_embed.proj.weight", shape(before), shape(state["patch_embed.proj.weight"]), how))
    cfg["in_chans"] = in_chans
    return Checkpoint(state, cfg, report)


def adapt_checkpoint(ckpt: Checkpoint, target: Mapping[str, Any], asked: set[str]) -> Checkpoint:
    """Adapt ``ckpt`` to the same-dimensional ``target`` config: only the geometry keys in ``asked`` may change.

    Raises:
        ValueError: naming each differing key that the user did not ask for, or that cannot be adapted.
    """
    cfg = ckpt.config
    problems = []
    for key in ARCH_KEYS:
        if key in target and _norm(target[key]) != _norm(cfg.get(key)):
            problems.append(f"{key}: checkpoint {cfg.get(key)!r}, asked {target[key]!r}")
    if tuple(target.get("patch_size", cfg["patch_size"])) != tuple(cfg["patch_size"]):
        problems.append(f"patch_size: checkpoint {tuple(cfg['patch_size'])}, asked {tuple(target['patch_size'])} "
                        "(patch kernels are not resized)")
    for key in ("img_size", "in_chans", "num_classes"):
        if key in target and _norm(target[key]) != _norm(cfg[key]) and key not in asked:
            problems.append(f"{key}: checkpoint {_norm(cfg[key])!r}, model {_norm(target[key])!r} (pass "
                            f"{key}={_norm(target[key])!r} to adapt the checkpoint or {key}={_norm(cfg[key])!r} to keep it)")
    if problems:
        raise ValueError(f"checkpoint {ckpt.report.source or ''} does not fit the model: " + "; ".join(problems)
                         + _shape_diff(ckpt, target))
    if "img_size" in target:
        ckpt = resample_checkpoint_pos(ckpt, tuple(target["img_size"]))
    if "in_chans" in target:
        ckpt = set_in_chans(ckpt, int(target["in_chans"]))
    if "num_classes" in target:
        ckpt = set_classifier(ckpt, int(target["num_classes"]))
    return ckpt


def _norm(value: Any) -> Any:
    """Compare sizes given as int or sequence alike (lists from JSON, tuples from code)."""
    if isinstance(value, list | tuple):
        return tuple(value)
    return value


def _shape_diff(ckpt: Checkpoint, target: Mapping[str, Any]) -> str:
    """The first tensors whose shapes differ between ``ckpt`` and a model built from ``target`` (on meta)."""
    try:
        with torch.device("meta"):
            own = VisionTransformer(**target).state_dict()
    except (TypeError, ValueError):
        return ""
    state = ckpt.state_dict
    diffs = [f"{k}: checkpoint {list(state[k].shape)} vs model {list(v.shape)}" for k, v in own.items()
             if k in state and state[k].shape != v.shape]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    parts = diffs[:6] + ([f"missing {missing[:4]}"] if missing else []) + \
        ([f"unexpected {unexpected[:4]}"] if unexpected else [])
    return (". Tensors: " + "; ".join(parts)) if parts else ""
