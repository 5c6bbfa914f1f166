"""Pure functions that adapt a canonical checkpoint to another geometry of the same architecture: input
channels (timm's ``adapt_input_conv``), position grid (learned tables resampled along every axis, fixed sin-cos
tables rebuilt), patch size along the first axis (tubelet kernels resampled, mean-preserving), classifier (kept,
re-initialised or dropped). :func:`adapt` does all of them for any 3D checkpoint (what ``vit3d adapt`` runs);
:func:`vit3d.weights.inflate` uses the same steps after turning a 2D checkpoint into a 3D one."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from vit3d.layers import resample_pos_embed
from vit3d.layers.helpers import check_divisible, to_ntuple
from vit3d.models import VisionTransformer

from .report import Checkpoint, shape

__all__ = ["adapt", "adapt_checkpoint", "adapt_input_conv", "resample_checkpoint_pos", "resample_kernel_axis",
           "set_classifier", "set_in_chans", "set_patch_depth"]

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


_INTERP_NAME = {1: "linear", 2: "bicubic", 3: "trilinear"}


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
    if new_grid != old_grid and cfg["pos_embed"] in ("sincos", "sincos_seq"):
        report.notes.append(f"fixed sin-cos positions ({cfg['pos_embed']}) rebuilt by the model for grid "
                            f"{new_grid} (was {old_grid}); nothing to resample")
    if new_grid != old_grid and cfg["pos_embed"] in ("learn", "learn_separable"):
        prefix = 0 if cfg["no_embed_class"] or not cfg["class_token"] else 1
        old, new = (old_grid, new_grid) if cfg["pos_embed"] == "learn" else (old_grid[1:], new_grid[1:])
        before = state["pos_embed"]
        state["pos_embed"] = resample_pos_embed(before, new, old, num_prefix_tokens=prefix)
        if state["pos_embed"] is not before:
            report.resampled.append(("pos_embed", shape(before), shape(state["pos_embed"]),
                                     f"grid {old} -> {new}, {_INTERP_NAME.get(len(old), 'interpolated')} along "
                                     "every axis" + ("; class-token slot untouched" if prefix else "")))
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


def resample_kernel_axis(weight: torch.Tensor, size: int, axis: int = 0) -> torch.Tensor:
    """Resample a patch kernel ``(D, C, *k)`` to ``size`` taps along spatial ``axis``, preserving its sum.

    The taps are treated as a density over the patch's extent: each old tap spreads its weight over the new taps
    in proportion to their overlap (area resampling). The sum along ``axis`` is kept exactly, so an input that is
    constant along that axis (a boring clip, for the time axis) gives the same tokens; 2 -> 1 sums the taps,
    1 -> t spreads the tap evenly (I3D's mean inflation).
    """
    if size < 1:
        raise ValueError(f"kernel size must be >= 1, got {size}")
    dim = 2 + axis
    old = weight.shape[dim]
    if old == size:
        return weight
    edges_old = torch.linspace(0, 1, old + 1, dtype=torch.float64)
    edges_new = torch.linspace(0, 1, size + 1, dtype=torch.float64)
    lo = torch.maximum(edges_new[:-1, None], edges_old[None, :-1])
    hi = torch.minimum(edges_new[1:, None], edges_old[None, 1:])
    share = (hi - lo).clamp(min=0) * old  # (size, old): the fraction of old tap i falling in new tap j
    moved = weight.movedim(dim, -1).double() @ share.T
    return moved.movedim(-1, dim).to(weight.dtype).contiguous()


def set_patch_depth(ckpt: Checkpoint, depth: int) -> Checkpoint:
    """Change the patch (tubelet) size along the first axis to ``depth``: the kernel is resampled with
    :func:`resample_kernel_axis` (mean-preserving). The other axes keep the checkpoint's patch size."""
    cfg = ckpt.config
    patch = tuple(cfg["patch_size"])
    if depth == patch[0]:
        return ckpt
    state, cfg, report = dict(ckpt.state_dict), dict(cfg), ckpt.report.copy()
    before = state["patch_embed.proj.weight"]
    state["patch_embed.proj.weight"] = resample_kernel_axis(before, depth, axis=0)
    report.resampled.append(("patch_embed.proj.weight", shape(before), shape(state["patch_embed.proj.weight"]),
                             f"tubelet {patch[0]} -> {depth} along the first axis, area resampling (sum kept: a "
                             "clip constant in time gives the same tokens)"))
    cfg["patch_size"] = (depth, *patch[1:])
    return Checkpoint(state, cfg, report)


def adapt(ckpt: Checkpoint, *, img_size: Sequence[int] | None = None, patch_size: Sequence[int] | None = None,
          in_chans: int | None = None, num_classes: int | None = None) -> Checkpoint:
    """Change the input geometry of a checkpoint of any dimensionality; every change goes into the report.

    Args:
        ckpt: a canonical :class:`Checkpoint` (from :func:`vit3d.weights.load_2d`, :func:`convert_videomae`, ...).
        img_size: new input size, one entry per spatial axis (``(T, H, W)`` for clips): learned position tables
            are resampled along every axis (the class-token slot untouched), fixed sin-cos tables rebuilt.
        patch_size: new patch size; only the first axis (the tubelet's depth, for 3D) may change, with its
            kernel resampled by :func:`resample_kernel_axis`.
        in_chans: input channels (:func:`adapt_input_conv`).
        num_classes: classifier outputs: same keeps the head, 0 drops it, another count starts a fresh one.

    Returns:
        The adapted ``Checkpoint``; ``VisionTransformer(**config)`` loads its state strictly.

    Raises:
        ValueError: a size of the wrong length, an in-plane patch change, or sizes the patch does not divide.
    """
    cfg = ckpt.config
    n = int(cfg["spatial_dims"])
    report = ckpt.report.copy()
    ckpt = Checkpoint(dict(ckpt.state_dict), dict(cfg), report)
    if patch_size is not None:
        patch = to_ntuple(patch_size, n, "patch_size")
        if patch[1:] != tuple(cfg["patch_size"])[1:]:
            raise ValueError(f"patch_size {patch} changes the checkpoint's patch {tuple(cfg['patch_size'])} along "
                             "an axis other than the first; only the tubelet depth (axis 0) can be resampled. "
                             f"Use patch_size=({patch[0]}, {', '.join(map(str, tuple(cfg['patch_size'])[1:]))})")
        ckpt = set_patch_depth(ckpt, patch[0])
    size = to_ntuple(img_size, n, "img_size") if img_size is not None else tuple(ckpt.config["img_size"])
    check_divisible(size, ckpt.config["patch_size"])
    old_grid = _grid(cfg)
    ckpt = resample_checkpoint_pos(_with_grid(ckpt, old_grid), size)
    if in_chans is not None:
        ckpt = set_in_chans(ckpt, in_chans)
    if num_classes is not None:
        ckpt = set_classifier(ckpt, num_classes)
    return ckpt


def _with_grid(ckpt: Checkpoint, grid: tuple[int, ...]) -> Checkpoint:
    """``ckpt`` whose config says ``img_size = grid * patch``, so a tubelet change keeps the old token grid until
    the positions are resampled to the requested size."""
    img = tuple(g * p for g, p in zip(grid, ckpt.config["patch_size"], strict=True))
    return Checkpoint(ckpt.state_dict, {**ckpt.config, "img_size": img}, ckpt.report)


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
    patch_asked = tuple(target.get("patch_size", cfg["patch_size"]))
    if patch_asked != tuple(cfg["patch_size"]) and ("patch_size" not in asked or patch_asked[1:] !=
                                                      tuple(cfg["patch_size"])[1:]):
        problems.append(f"patch_size: checkpoint {tuple(cfg['patch_size'])}, asked {patch_asked} (only the first "
                        "axis, the tubelet depth, is resampled, and only when patch_size is passed)")
    for key in ("img_size", "in_chans", "num_classes"):
        if key in target and _norm(target[key]) != _norm(cfg[key]) and key not in asked:
            problems.append(f"{key}: checkpoint {_norm(cfg[key])!r}, model {_norm(target[key])!r} (pass "
                            f"{key}={_norm(target[key])!r} to adapt the checkpoint or {key}={_norm(cfg[key])!r} to keep it)")
    if problems:
        raise ValueError(f"checkpoint {ckpt.report.source or ''} does not fit the model: " + "; ".join(problems)
                         + _shape_diff(ckpt, target))
    return adapt(ckpt, img_size=target.get("img_size"),
                 patch_size=target.get("patch_size") if "patch_size" in asked else None,
                 in_chans=target.get("in_chans"), num_classes=target.get("num_classes"))


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
