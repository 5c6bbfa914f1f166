"""Loading checkpoints into models strictly, and the vit3d safetensors file (weights + config + provenance)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vit3d.errors import ConfigError
from vit3d.layers.helpers import to_ntuple
from vit3d.models import VisionTransformer, build_model, model_entrypoint

from .adapt import adapt, adapt_checkpoint
from .config import HINT_KEYS, UnknownGridError, check_fits, infer_config, vit_config
from .formats import FORMAT_NAMES, convert, detect_format
from .inflate import inflate
from .io import read_checkpoint
from .report import Checkpoint, LoadReport

__all__ = ["adapt_file", "create_pretrained", "inflate_file", "load_2d", "load_model", "load_state_strict",
           "save_checkpoint", "save_model"]

# Properties of how a checkpoint was trained that a named preset takes from it unless overridden.
_INHERITED = ("qkv_bias", "class_token", "no_embed_class", "global_pool", "fc_norm", "norm_eps", "init_values",
              "act_layer")


def load_2d(source: str | Path, format: str = "auto", **hints: Any) -> Checkpoint:  # noqa: A002 - the established keyword name
    """Read a ViT checkpoint into the canonical layout and infer its architecture.

    Args:
        source: a timm / torchvision / MONAI state dict (``.pth``, ``.bin``, ``.safetensors``), a HF directory
            (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``; ViT, ViViT or VideoMAE), a Google
            ``.npz``, a vit3d safetensors file, or a Hugging Face Hub name (``hf-hub:org/name[@revision]``, or
            ``org/name`` when no such local path exists; see :mod:`vit3d.weights.hub`).
        format: ``'auto'`` (detected from key names) or one of :data:`vit3d.weights.FORMAT_NAMES`.
        **hints: values shapes cannot tell: ``num_heads`` (heads of 64 are assumed otherwise), ``img_size`` for a
            non-square grid, ``norm_eps``, ``act_layer``, ``pos_embed`` when there is no table, and the pooling
            keys.

    Returns:
        ``Checkpoint(state_dict, config, report)``. Despite the name, 3D checkpoints (VideoMAE, ViViT, MONAI,
        vit3d) load too.
    """
    return _read(source, format, hints, stored_hints="error")


def _read(source: str | Path, fmt: str, hints: dict[str, Any], stored_hints: str) -> Checkpoint:
    """:func:`load_2d`; ``stored_hints='ignore'`` drops hints for a vit3d file (its config is stored) instead of
    failing, for callers that pass the same keywords to every format."""
    unknown = sorted(set(hints) - set(HINT_KEYS))
    if unknown:
        raise ConfigError(f"load_2d got unknown hint(s) {unknown}; valid hints: {list(HINT_KEYS)}")
    raw = read_checkpoint(source)
    fmt = detect_format(list(raw.tensors), raw.metadata, raw.source) if fmt == "auto" else fmt
    if fmt not in FORMAT_NAMES:
        raise ConfigError(f"format={fmt!r} is not one of {['auto', *FORMAT_NAMES]}")
    report = LoadReport(source=raw.source, format=fmt, notes=list(raw.notes))
    state, found, stored = convert(raw.tensors, fmt, config=raw.config, metadata=raw.metadata, report=report)
    if stored is not None:
        if hints and stored_hints == "error":
            raise ConfigError(f"{raw.source} is a vit3d file whose config is stored in it; drop the hints "
                             f"{sorted(hints)}")
        check_fits(state, stored, raw.source)  # a stored config is only trusted once it describes the tensors
        config = stored
    else:
        config = infer_config(state, {**found, **{k: v for k, v in hints.items() if v is not None}}, report)
    return Checkpoint(state, config, report)


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str = "") -> None:
    """``model.load_state_dict(state, strict=True)`` with an error naming every missing, unexpected or mis-shaped
    key and both shapes."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [f"{k}: checkpoint {list(state[k].shape)} vs model {list(own[k].shape)}"
                  for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing from the checkpoint: {missing}")
        if unexpected:
            parts.append(f"not in the model: {[f'{k} {list(state[k].shape)}' for k in unexpected]}")
        if mismatched:
            parts.append(f"shape mismatch: {mismatched}")
        raise ConfigError(f"checkpoint {source} does not load strictly into {type(model).__name__}: "
                         + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def _as_checkpoint(pretrained: str | Path | Checkpoint, hints: dict[str, Any],
                   img_size: Any = None) -> Checkpoint:
    if isinstance(pretrained, Checkpoint):
        return pretrained
    try:
        return _read(pretrained, "auto", hints, stored_hints="ignore")
    except UnknownGridError:  # a non-square grid: the requested size is the best evidence of the file's
        if img_size is None:
            raise
        return _read(pretrained, "auto", {**hints, "img_size": img_size}, stored_hints="ignore")


def create_pretrained(name: str | None, pretrained: str | Path | Checkpoint, **overrides: Any) -> nn.Module:
    """Build a model with weights from ``pretrained`` (what ``vit3d.create_model(name, pretrained=...)`` calls):
    a :class:`Checkpoint`, a path, or a Hub name (``hf-hub:org/name[@revision]``; see :mod:`vit3d.weights.hub`).

    With ``name=None`` the architecture comes from the checkpoint and ``overrides`` may change its geometry:
    ``img_size`` (position grid resampled or rebuilt), ``patch_size`` (tubelet depth resampled, see
    :func:`vit3d.weights.adapt`), ``in_chans`` (kernel adapted), ``num_classes`` (head kept, re-initialised or
    dropped), or other keywords that hold no weights (``drop_path_rate``, ``dynamic_img_size``).
    With a ``name``, the preset fixes the architecture; a 3D preset with a 2D checkpoint inflates it (central
    frame, tiled positions; call :func:`vit3d.weights.inflate` for the other choices). Any other difference is
    an error. The report is attached as ``model.load_report``.
    """
    hints = {k: overrides[k] for k in ("num_heads", "norm_eps") if k in overrides}
    ckpt = _as_checkpoint(pretrained, hints, overrides.get("img_size"))
    src = ckpt.config
    if name is None:
        target = {**src, **overrides}
    else:
        inherited = {k: src[k] for k in _INHERITED if k in src and k not in overrides}
        with torch.device("meta"):
            preset = model_entrypoint(name)(**inherited, **overrides)
        preset_cfg = vit_config(preset)
        target = {**preset_cfg, **{k: v for k, v in overrides.items() if k not in preset_cfg}}
        guessed = [k for k in ckpt.report.assumed if k not in overrides and preset_cfg.get(k) != src.get(k)]
        if guessed:  # the file did not store these; the preset is better evidence than a convention
            report = ckpt.report.copy()
            report.notes += [f"{k}={preset_cfg[k]} taken from {name} (the file does not store it)" for k in guessed]
            src = {**src, **{k: preset_cfg[k] for k in guessed}}
            ckpt = Checkpoint(ckpt.state_dict, src, report)
    dims = target.get("spatial_dims") or src["spatial_dims"]
    asked_size = overrides.get("img_size")
    if name is None and dims == 2 and asked_size is not None and not isinstance(asked_size, int) \
            and len(asked_size) == 3:
        raise ConfigError(f"a 2D checkpoint cannot build a 3D model by itself (img_size {tuple(asked_size)} asked "
                          "with no model name)", file=str(getattr(pretrained, "source", pretrained)),
                          fix="inflate it first (`vit3d inflate FILE --out model_3d.safetensors`, then "
                              "pretrained: model_3d.safetensors) or name a 3D preset (model: vit_base_patch16_3d)")
    for key in ("img_size", "patch_size"):
        if key in target:
            target[key] = to_ntuple(target[key], dims, key)
    asked = set(overrides)
    if dims == 3 and src["spatial_dims"] == 2:
        ckpt = inflate(ckpt, img_size=target["img_size"], patch_size=target["patch_size"],
                       in_chans=target["in_chans"] if "in_chans" in asked else None,
                       num_classes=target["num_classes"] if "num_classes" in asked else None,
                       pos="separate" if target.get("pos_embed") == "learn_separable" else "tile")
        target["pos_embed"] = ckpt.config["pos_embed"]
        ckpt = adapt_checkpoint(ckpt, target, asked)
    elif dims != src["spatial_dims"]:
        raise ConfigError(f"a {src['spatial_dims']}D checkpoint cannot build a {dims}D model; only 2D -> 3D "
                         "inflation is supported")
    else:
        ckpt = adapt_checkpoint(ckpt, target, asked)
    # adapt_checkpoint has made every weight-bearing key agree; the target adds the rest (eps, dynamic size...).
    config = {**ckpt.config, **target}
    model = build_model(VisionTransformer, {}, config, name=name)
    load_state_strict(model, ckpt.state_dict, ckpt.report.source)
    if "norm_eps" in overrides and overrides["norm_eps"] != src.get("norm_eps"):
        ckpt.report.notes.append(f"norm_eps {src.get('norm_eps')} -> {overrides['norm_eps']} as asked")
    model.load_report = ckpt.report  # type: ignore[assignment]
    return model


def load_model(path: str | Path, **overrides: Any) -> nn.Module:
    """Rebuild the model stored in a vit3d safetensors file (``vit3d inflate`` / :func:`save_model` output).

    Any checkpoint :func:`load_2d` reads works too; ``overrides`` follow :func:`create_pretrained` with no name.
    """
    return create_pretrained(None, path, **overrides)


def save_checkpoint(ckpt: Checkpoint, path: str | Path, provenance: dict[str, Any] | None = None) -> Path:
    """Write ``ckpt`` as safetensors whose metadata holds the constructor config (JSON under ``vit3d.config``),
    the provenance and the load report, so :func:`load_model` rebuilds the model from the file alone."""
    from safetensors.torch import save_file

    from vit3d import __version__

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ConfigError(f"output {str(path)!r} must end in .safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "format": "pt",
        "vit3d.version": __version__,
        "vit3d.config": json.dumps(_jsonable(ckpt.config)),
        "vit3d.provenance": json.dumps(_jsonable(provenance or {})),
        "vit3d.report": json.dumps(_jsonable(ckpt.report.to_dict())),
    }
    save_file({k: v.contiguous() for k, v in ckpt.state_dict.items()}, str(path), metadata=metadata)
    return path


def save_model(model: nn.Module, path: str | Path, provenance: dict[str, Any] | None = None) -> Path:
    """Save a :class:`VisionTransformer` as a self-describing vit3d safetensors file."""
    ckpt = Checkpoint(dict(model.state_dict()), vit_config(model), getattr(model, "load_report", LoadReport()))
    return save_checkpoint(ckpt, path, provenance)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value



def inflate_file(source: str | Path, out: str | Path, *, frames: int = 16, tubelet: int = 2,
                 img_size: tuple[int, int] | None = None, in_chans: int | None = None,
                 num_classes: int | None = None, method: str = "central", pos: str = "tile",
                 format: str = "auto", **hints: Any) -> Checkpoint:  # noqa: A002 - matches load_2d
    """Read a 2D checkpoint, inflate it to ``frames`` (tubelets of ``tubelet``) and write a vit3d safetensors
    file whose metadata lets :func:`load_model` rebuild it (what ``vit3d inflate`` runs).

    Args:
        source: any checkpoint :func:`load_2d` reads (a path or a Hub name).
        out: output ``.safetensors`` path.
        frames: size of the new axis (clip frames or volume slices).
        tubelet: patch size along the new axis; must divide ``frames``.
        img_size: in-plane ``(H, W)``; the checkpoint's when ``None``.
        in_chans, num_classes, method, pos: as in :func:`vit3d.weights.inflate`.
        format: as in :func:`load_2d`.
        **hints: as in :func:`load_2d` (``num_heads`` for formats that do not store it).

    Returns:
        The inflated :class:`Checkpoint` (its report covers reading and inflating).
    """
    def step(ckpt: Checkpoint) -> Checkpoint:
        plane = tuple(img_size) if img_size is not None else tuple(ckpt.config["img_size"])
        if ckpt.config["spatial_dims"] != 2 or len(plane) != 2:
            raise ConfigError(f"{source} holds a {ckpt.config['spatial_dims']}D model; inflate reads 2D checkpoints "
                             "(`vit3d adapt` changes the geometry of a 3D one)")
        return inflate(ckpt, img_size=(frames, *plane), patch_size=(tubelet, *ckpt.config["patch_size"]),
                       in_chans=in_chans, num_classes=num_classes, method=method, pos=pos)  # type: ignore[arg-type]

    return _rewrite(source, out, format, hints, step, {"method": method, "pos": pos, "frames": frames,
                                                       "tubelet": tubelet})


def adapt_file(source: str | Path, out: str | Path, *, frames: int | None = None, tubelet: int | None = None,
               img_size: tuple[int, int] | None = None, in_chans: int | None = None,
               num_classes: int | None = None, format: str = "auto",  # noqa: A002 - matches load_2d
               **hints: Any) -> Checkpoint:
    """Read a 3D checkpoint (vit3d file, HF VideoMAE / ViViT, MONAI 3D ViT; path or Hub name), change its clip or
    volume geometry with :func:`vit3d.weights.adapt` and write a vit3d safetensors file (what ``vit3d adapt``
    runs). ``None`` keeps the checkpoint's value.

    Args:
        source: any 3D checkpoint :func:`load_2d` reads.
        out: output ``.safetensors`` path.
        frames: size of the first axis (frames or slices).
        tubelet: patch size along the first axis; the kernel is resampled, mean-preserving.
        img_size: in-plane ``(H, W)``.
        in_chans: input channels.
        num_classes: classifier outputs (0 drops the head, another count starts a fresh one).
        format, **hints: as in :func:`load_2d`.

    Returns:
        The adapted :class:`Checkpoint` (its report covers reading and adapting).
    """
    def step(ckpt: Checkpoint) -> Checkpoint:
        cfg = ckpt.config
        if cfg["spatial_dims"] != 3:
            raise ConfigError(f"{source} holds a {cfg['spatial_dims']}D model; adapt changes 3D checkpoints "
                             "(`vit3d inflate` turns a 2D one into 3D)")
        old = tuple(cfg["img_size"])
        size = (frames or old[0], *(tuple(img_size) if img_size is not None else old[1:]))
        patch = (tubelet or cfg["patch_size"][0], *tuple(cfg["patch_size"])[1:])
        return adapt(ckpt, img_size=size, patch_size=patch, in_chans=in_chans, num_classes=num_classes)

    return _rewrite(source, out, format, hints, step, {"frames": frames, "tubelet": tubelet,
                                                       "img_size": img_size, "in_chans": in_chans,
                                                       "num_classes": num_classes, "command": "adapt"})


def _rewrite(source: str | Path, out: str | Path, fmt: str, hints: dict[str, Any],
             step: Callable[[Checkpoint], Checkpoint], asked: dict[str, Any]) -> Checkpoint:
    """Read ``source``, apply ``step``, write a vit3d file with provenance: what inflate and adapt share."""
    if Path(out).suffix != ".safetensors":
        raise ConfigError(f"output {str(out)!r} must end in .safetensors")
    ckpt = load_2d(source, fmt, **hints)
    result = step(ckpt)
    check_fits(result.state_dict, result.config, str(out))
    provenance = {"source": str(source), "source_format": ckpt.report.format,
                  **{k: v for k, v in asked.items() if v is not None}}
    save_checkpoint(result, out, provenance)
    return result
