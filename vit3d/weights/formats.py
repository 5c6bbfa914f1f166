"""2D ViT checkpoint layouts -> the canonical timm layout of :class:`vit3d.VisionTransformer`.

Each converter is a pure function ``(tensors, config) -> (state, hints)`` that renames, fuses and transposes
tensors, records every change in a :class:`LoadReport`, and returns architecture ``hints`` the shapes cannot
tell (head count, LayerNorm eps, image size). Keys a converter does not know pass through unchanged, so the
strict load afterwards names them. Layout facts: ``/work/shared/reference/checkpoints.md`` (the table there
is what the tests check against each library's own forward pass).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from vit3d.errors import CheckpointError

from .config import check_stored_config
from .report import LoadReport, shape

__all__ = ["FORMATS", "FORMAT_NAMES", "VIT3D_FORMAT", "Converted", "convert", "detect_format", "hf_act_layer"]

Tensors = dict[str, torch.Tensor]
Hints = dict[str, Any]


# ---------------------------------------------------------------------- helpers
def _move(src: Tensors, dst: Tensors, old: str, new: str, report: LoadReport) -> None:
    if old in src:
        dst[new] = src.pop(old)
        report.rename(old, new)


def _fuse_qkv(src: Tensors, dst: Tensors, names: tuple[str, str, str], new: str, report: LoadReport) -> None:
    """Concatenate separate q, k, v projections (rows q;k;v, heads contiguous) into one fused ``qkv``."""
    if all(n in src for n in names):
        dst[new] = torch.cat([src.pop(n) for n in names], dim=0)
        report.renamed += [(n, new) for n in names]


def _blocks(keys: list[str], pattern: str) -> list[int]:
    return sorted({int(m.group(1)) for k in keys if (m := re.match(pattern, k))})


def _strip_prefix(tensors: Tensors, prefix: str, report: LoadReport, keep: tuple[str, ...] = ()) -> Tensors:
    out = {}
    for k, v in tensors.items():
        new = k[len(prefix):] if k.startswith(prefix) and not k.startswith(keep or ("\0",)) else k
        out[new] = v
    if any(k.startswith(prefix) for k in tensors):
        report.notes.append(f"stripped the prefix {prefix!r}")
    return out


def _drop(src: Tensors, key: str, why: str, report: LoadReport) -> None:
    if key in src:
        report.dropped.append((key, shape(src.pop(key)), why))


# ---------------------------------------------------------------------- timm and vit3d
def _from_timm(t: Tensors, config: dict[str, Any], report: LoadReport) -> tuple[Tensors, Hints]:
    hints: Hints = {}
    args = config.get("model_args") or config.get("pretrained_cfg", {}).get("model_args") or {}
    for key in ("num_heads", "global_pool", "class_token", "qkv_bias", "no_embed_class", "fc_norm"):
        if key in args:
            hints[key] = args[key]
    if "global_pool" in config and config["global_pool"] in ("token", "avg"):
        hints.setdefault("global_pool", config["global_pool"])
    arch = str(config.get("architecture", ""))
    for size, heads in (("tiny", 3), ("small", 6), ("base", 12), ("large", 16), ("huge", 16)):
        if f"_{size}_" in arch:
            hints.setdefault("num_heads", heads)
    if arch:
        report.notes.append(f"timm config.json: architecture {arch!r}")
    return dict(t), hints


def _from_vit3d(t: Tensors, metadata: dict[str, str], report: LoadReport) -> tuple[Tensors, dict[str, Any]]:
    """A vit3d file: tensors already canonical; the constructor config stored in its metadata, bounds-checked
    before anything is built from it."""
    config = check_stored_config(_metadata_json(metadata, "vit3d.config", report.source), report.source)
    provenance = _metadata_json(metadata, "vit3d.provenance", report.source, required=False)
    if provenance:
        report.notes.append(f"vit3d file; provenance: {provenance}")
    stored = _metadata_json(metadata, "vit3d.report", report.source, required=False)
    if stored:
        counts = ", ".join(f"{len(stored.get(k, []))} {k}"
                           for k in ("renamed", "resampled", "reinitialised", "dropped"))
        report.notes.append(f"when written: {counts} (from {stored.get('source')}, format {stored.get('format')})")
        report.notes += [f"when written: {n}" for n in stored.get("notes", [])]
    return dict(t), config


def _metadata_json(metadata: dict[str, str], key: str, source: str, required: bool = True) -> dict[str, Any]:
    if key not in metadata and not required:
        return {}
    try:
        value = json.loads(metadata[key])
    except (KeyError, json.JSONDecodeError) as err:
        raise CheckpointError(f"safetensors metadata {key!r} is missing or not valid JSON", file=source,
                              fix="write the file again with vit3d.weights.save_model") from err
    if not isinstance(value, dict):
        raise CheckpointError(f"safetensors metadata {key!r} is not a JSON object", file=source)
    return value


# ---------------------------------------------------------------------- torchvision
def _from_torchvision(t: Tensors, config: dict[str, Any], report: LoadReport) -> tuple[Tensors, Hints]:
    src, out = dict(t), {}
    for old, new in (("class_token", "cls_token"), ("conv_proj.weight", "patch_embed.proj.weight"),
                     ("conv_proj.bias", "patch_embed.proj.bias"), ("encoder.pos_embedding", "pos_embed"),
                     ("encoder.ln.weight", "norm.weight"), ("encoder.ln.bias", "norm.bias"),
                     ("heads.head.weight", "head.weight"), ("heads.head.bias", "head.bias")):
        _move(src, out, old, new, report)
    for i in _blocks(list(src), r"encoder\.layers\.encoder_layer_(\d+)\."):
        p, q = f"encoder.layers.encoder_layer_{i}.", f"blocks.{i}."
        pairs = [("ln_1", "norm1"), ("self_attention.in_proj", "attn.qkv"), ("self_attention.out_proj", "attn.proj"),
                 ("ln_2", "norm2"), ("mlp.0", "mlp.fc1"), ("mlp.3", "mlp.fc2"), ("mlp.linear_1", "mlp.fc1"),
                 ("mlp.linear_2", "mlp.fc2")]
        for old, new in pairs:
            for suffix in (".weight", ".bias", "_weight", "_bias"):
                if p + old + suffix in src:
                    _move(src, out, p + old + suffix, q + new + "." + suffix[1:], report)
    out.update(src)  # leftovers (heads.pre_logits, conv stems) fail the strict load by name
    return out, {"norm_eps": 1e-6, "no_embed_class": False}


# ---------------------------------------------------------------------- HF transformers
_HF_LEGACY = (("attention.output.dense", "attn.proj"), ("intermediate.dense", "mlp.fc1"),
              ("output.dense", "mlp.fc2"), ("layernorm_before", "norm1"), ("layernorm_after", "norm2"))
_HF_V5 = (("attention.o_proj", "attn.proj"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2"),
          ("layernorm_before", "norm1"), ("layernorm_after", "norm2"))


# HF ``hidden_act`` -> vit3d ``act_layer``: exact GELU, or one of the spellings of its tanh approximation.
_HF_ACTS = {"gelu": "gelu", "gelu_fast": "gelu_tanh", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
            "gelu_python_tanh": "gelu_tanh", "gelu_accurate": None}
# Model prefix of each HF family (``ViTForImageClassification`` nests ``vit.``, ``VivitFor...`` ``vivit.`` ...).
_HF_PREFIXES = {"vit.": "vit", "vivit.": "vivit", "videomae.": "videomae"}


def hf_act_layer(hidden_act: str, source: str = "") -> str:
    """vit3d ``act_layer`` for a HF config's ``hidden_act``, or a CheckpointError naming the ones vit3d has."""
    act = _HF_ACTS.get(str(hidden_act))
    if act is None:
        known = sorted(k for k, v in _HF_ACTS.items() if v)
        raise CheckpointError(f"HF config hidden_act={hidden_act!r} has no vit3d equivalent", file=source or None,
                              fix=f"vit3d's MLPs take {known} (exact GELU or its tanh approximation)")
    return act


def _hf_family(t: Tensors, config: dict[str, Any]) -> tuple[str, str]:
    """``(model_type, prefix)``: from ``config.json`` when there is one, else from the key names."""
    for prefix, family in _HF_PREFIXES.items():
        if any(k.startswith(prefix + "embeddings.") for k in t):
            return config.get("model_type", family), prefix
    kind = config.get("model_type")
    if kind is None:  # bare encoder: VideoMAE is the one without positions, q/v-only biases or a 5-D kernel
        qv_only = any(k.endswith(("attention.q_bias", "attention.query.bias")) for k in t) and not any(
            k.endswith("attention.attention.key.bias") for k in t)
        kernel = next((v for k, v in t.items() if k.endswith("patch_embeddings.projection.weight")), None)
        video = kernel is not None and kernel.ndim == 5
        kind = "videomae" if qv_only or (video and "embeddings.position_embeddings" not in t) else \
            "vivit" if video else "vit"
    return str(kind), ""


def _from_hf(t: Tensors, config: dict[str, Any], report: LoadReport) -> tuple[Tensors, Hints]:
    """HF transformers ViT, ViViT and VideoMAE (base models, classifiers, and VideoMAE's pretraining encoder)."""
    kind, prefix = _hf_family(t, config)
    if kind not in ("vit", "vivit", "videomae"):
        raise CheckpointError(f"HF model_type {kind!r} is not a plain ViT", file=report.source or None,
                              fix="vit3d reads vit, vivit and videomae checkpoints; TimeSformer's divided "
                                  "space-time attention is a different block (README: TimeSformer)")
    src = _strip_prefix(t, prefix, report) if prefix else dict(t)
    out: Tensors = {}
    for old, new in (("embeddings.cls_token", "cls_token"), ("embeddings.position_embeddings", "pos_embed"),
                     ("embeddings.patch_embeddings.projection.weight", "patch_embed.proj.weight"),
                     ("embeddings.patch_embeddings.projection.bias", "patch_embed.proj.bias"),
                     ("layernorm.weight", "norm.weight"), ("layernorm.bias", "norm.bias"),
                     ("fc_norm.weight", "fc_norm.weight"), ("fc_norm.bias", "fc_norm.bias"),
                     ("classifier.weight", "head.weight"), ("classifier.bias", "head.bias")):
        _move(src, out, old, new, report)
    _drop(src, "embeddings.mask_token", "mask token, used only for masked image modelling", report)
    for part in ("weight", "bias"):
        _drop(src, f"pooler.dense.{part}", "HF pooler (dense + tanh); not part of last_hidden_state", report)
    if kind == "videomae":
        _videomae_extras(src, out, report)
    for prefix_, layout, qkv in (("encoder.layer.", _HF_LEGACY, ("attention.attention.query",
                                                                  "attention.attention.key",
                                                                  "attention.attention.value")),
                                 ("layers.", _HF_V5, ("attention.q_proj", "attention.k_proj", "attention.v_proj"))):
        for i in _blocks(list(src), re.escape(prefix_) + r"(\d+)\."):
            p, q = f"{prefix_}{i}.", f"blocks.{i}."
            if kind == "videomae":
                _videomae_qv_bias(src, p, qkv, report)
            for part in ("weight", "bias"):
                _fuse_qkv(src, out, tuple(f"{p}{n}.{part}" for n in qkv), f"{q}attn.qkv.{part}", report)
                for old, new in layout:
                    _move(src, out, f"{p}{old}.{part}", f"{q}{new}.{part}", report)
    out.update(src)
    hints: Hints = {"norm_eps": 1e-12, "no_embed_class": False}
    if kind == "videomae":
        hints.update(pos_embed="sincos_seq", class_token=False, global_pool="avg")
        report.notes.append("VideoMAE: fixed sin-cos positions over the token index, rebuilt by the model "
                            "(pos_embed='sincos_seq'); mean pooling of the patch tokens")
    if config:
        hints["act_layer"] = hf_act_layer(config.get("hidden_act", "gelu"), report.source)
        if hints["act_layer"] != "gelu":
            report.notes.append(f"MLP activation {config['hidden_act']!r}: the tanh approximation of GELU "
                                "(act_layer='gelu_tanh')")
        hints.update(num_heads=config.get("num_attention_heads"), norm_eps=config.get("layer_norm_eps", 1e-12))
        size = config.get("image_size")
        if size is not None:
            plane = (size, size) if isinstance(size, int) else tuple(size)
            hints["img_size"] = (int(config.get("num_frames", 16)), *plane) if kind != "vit" else plane
        hints = {k: v for k, v in hints.items() if v is not None}
    return out, hints


def _videomae_qv_bias(src: Tensors, block: str, qkv: tuple[str, str, str], report: LoadReport) -> None:
    """VideoMAE keeps biases on q and v only (files: ``q_bias`` / ``v_bias``; transformers 5 in memory:
    ``query.bias`` / ``value.bias``); the fused qkv bias gets zeros for k, which is what VideoMAE computes."""
    names = [f"{block}{n}.bias" for n in qkv]
    for old, new in ((f"{block}attention.attention.q_bias", names[0]), (f"{block}attention.attention.v_bias",
                                                                        names[2])):
        if old in src:
            src[new] = src.pop(old)
            report.rename(old, new)
    if names[0] in src and names[2] in src and names[1] not in src:
        src[names[1]] = torch.zeros_like(src[names[0]])
        if not any("q/v-only" in n for n in report.notes):
                report.notes.append("q/v-only biases (VideoMAE): zeros for k in every fused qkv bias")


def _videomae_extras(src: Tensors, out: Tensors, report: LoadReport) -> None:
    """Drop VideoMAE's pretraining decoder; give a mean-pooling encoder without a head its (identity) fc_norm."""
    for key in [k for k in src if k.startswith(("decoder.", "encoder_to_decoder.")) or k == "mask_token"]:
        _drop(src, key, "VideoMAE pretraining decoder / mask token; not part of the encoder", report)
    if "norm.weight" not in out and "fc_norm.weight" not in out:
        dim = int(src["embeddings.patch_embeddings.projection.weight"].shape[0]) if \
            "embeddings.patch_embeddings.projection.weight" in src else int(out["patch_embed.proj.weight"].shape[0])
        out["fc_norm.weight"], out["fc_norm.bias"] = torch.ones(dim), torch.zeros(dim)
        why = ("VideoMAEModel with mean pooling has no norm after pooling (the classifier adds one); "
               "identity LayerNorm (ones, zeros), as a fresh one starts")
        report.reinitialised += [("fc_norm.weight", (dim,), why), ("fc_norm.bias", (dim,), why)]


# ---------------------------------------------------------------------- MONAI
def _from_monai(t: Tensors, config: dict[str, Any], report: LoadReport) -> tuple[Tensors, Hints]:
    src, out = dict(t), {}
    for old, new in (("patch_embedding.position_embeddings", "pos_embed"),
                     ("patch_embedding.patch_embeddings.weight", "patch_embed.proj.weight"),
                     ("patch_embedding.patch_embeddings.bias", "patch_embed.proj.bias"),
                     ("classification_head.0.weight", "head.weight"), ("classification_head.0.bias", "head.bias"),
                     ("classification_head.weight", "head.weight"), ("classification_head.bias", "head.bias")):
        _move(src, out, old, new, report)
    if "patch_embedding.patch_embeddings.1.weight" in src:
        raise ValueError("MONAI proj_type='perceptron' checkpoints are not supported; build the MONAI ViT with "
                         "proj_type='conv' (the default)")
    if "classification_head.0.weight" in t:
        report.notes.append("MONAI's classification head ends in Tanh; vit3d returns the logits before it "
                            "(apply torch.tanh to match MONAI's output)")
    for i in _blocks(list(src), r"blocks\.(\d+)\."):
        p = f"blocks.{i}."
        for part in ("weight", "bias"):
            _fuse_qkv(src, out, tuple(f"{p}attn.to_{n}.{part}" for n in "qkv"), f"{p}attn.qkv.{part}", report)
            for old, new in (("attn.out_proj", "attn.proj"), ("mlp.linear1", "mlp.fc1"), ("mlp.linear2", "mlp.fc2")):
                _move(src, out, f"{p}{old}.{part}", f"{p}{new}.{part}", report)
            if not any(k.startswith(f"{p}cross_attn.") for k in src):
                _drop(src, f"{p}norm_cross_attn.{part}", "MONAI builds it even without cross-attention; unused",
                      report)
    out.update(src)
    return out, {"norm_eps": 1e-5, "no_embed_class": True}  # MONAI adds no position to its class token


# ---------------------------------------------------------------------- Google vit_jax / big_vision npz
def _jax_prefix(keys: list[str]) -> str:
    for k in keys:
        if k.endswith("embedding/kernel") and not k.endswith("pos_embedding/kernel"):
            return k[: -len("embedding/kernel")]
    return ""


def _from_jax(t: Tensors, config: dict[str, Any], report: LoadReport) -> tuple[Tensors, Hints]:
    prefix = _jax_prefix(list(t))
    if prefix:
        report.notes.append(f"npz weights under the prefix {prefix!r}")
    src = {k[len(prefix):]: v for k, v in t.items() if k.startswith(prefix)}
    for k in t:
        if not k.startswith(prefix):
            report.dropped.append((k, shape(t[k]), f"outside the model prefix {prefix!r} (optimiser state etc.)"))
    src = _unstack_blocks(src, report)
    out: Tensors = {}

    def take(old: str, new: str, fn: Callable[[torch.Tensor], torch.Tensor] = lambda x: x) -> None:
        if old in src:
            out[new] = fn(src.pop(old)).contiguous()
            report.rename(old, new)

    take("embedding/kernel", "patch_embed.proj.weight", lambda k: k.permute(3, 2, *range(k.ndim - 2)))
    take("embedding/bias", "patch_embed.proj.bias")
    take("cls", "cls_token")
    take("Transformer/posembed_input/pos_embedding", "pos_embed")
    take("pos_embedding", "pos_embed")
    take("Transformer/encoder_norm/scale", "norm.weight")
    take("Transformer/encoder_norm/bias", "norm.bias")
    take("head/kernel", "head.weight", lambda k: k.T)
    take("head/bias", "head.bias")
    # vit_jax tables carry a class-token slot; big_vision's (top-level pos_embedding) never do.
    hints: Hints = {"norm_eps": 1e-6, "no_embed_class": "pos_embedding" in report_renamed(report)}
    for i in _blocks(list(src), r"Transformer/encoderblock_(\d+)/"):
        p, q = f"Transformer/encoderblock_{i}/", f"blocks.{i}."
        subs = sorted({k[len(p):].split("/")[0] for k in src if k.startswith(p)}, key=_flax_index)
        norms = [s for s in subs if s.startswith("LayerNorm_")]
        attn = next((s for s in subs if s.startswith("MultiHeadDotProductAttention_")), None)
        mlp = next((s for s in subs if s.startswith("MlpBlock_")), None)
        if len(norms) != 2 or attn is None or mlp is None:
            continue  # left in src: the strict load names them
        for norm, new in zip(norms, ("norm1", "norm2"), strict=True):
            take(f"{p}{norm}/scale", f"{q}{new}.weight")
            take(f"{p}{norm}/bias", f"{q}{new}.bias")
        a = f"{p}{attn}/"
        if all(f"{a}{n}/kernel" in src for n in ("query", "key", "value")):
            hints["num_heads"] = int(src[f"{a}query/kernel"].shape[1])
            out[f"{q}attn.qkv.weight"] = torch.cat([src.pop(f"{a}{n}/kernel").flatten(1).T for n in
                                                     ("query", "key", "value")]).contiguous()
            report.renamed += [(f"{a}{n}/kernel", f"{q}attn.qkv.weight") for n in ("query", "key", "value")]
            if all(f"{a}{n}/bias" in src for n in ("query", "key", "value")):
                out[f"{q}attn.qkv.bias"] = torch.cat([src.pop(f"{a}{n}/bias").flatten() for n in
                                                       ("query", "key", "value")])
                report.renamed += [(f"{a}{n}/bias", f"{q}attn.qkv.bias") for n in ("query", "key", "value")]
        take(f"{a}out/kernel", f"{q}attn.proj.weight", lambda k: k.flatten(0, 1).T)
        take(f"{a}out/bias", f"{q}attn.proj.bias")
        take(f"{p}{mlp}/Dense_0/kernel", f"{q}mlp.fc1.weight", lambda k: k.T)
        take(f"{p}{mlp}/Dense_0/bias", f"{q}mlp.fc1.bias")
        take(f"{p}{mlp}/Dense_1/kernel", f"{q}mlp.fc2.weight", lambda k: k.T)
        take(f"{p}{mlp}/Dense_1/bias", f"{q}mlp.fc2.bias")
    hints["act_layer"] = "gelu_tanh"
    report.notes.append("MLP activation: Flax's nn.gelu, the tanh approximation of GELU (act_layer='gelu_tanh'); "
                        "timm's ports of these weights run exact GELU instead")
    out.update(src)
    return out, hints


def report_renamed(report: LoadReport) -> set[str]:
    return {old for old, _ in report.renamed}


def _flax_index(name: str) -> int:
    m = re.search(r"_(\d+)$", name)
    return int(m.group(1)) if m else -1


def _unstack_blocks(src: Tensors, report: LoadReport) -> Tensors:
    """big_vision's scanned encoder stores every block under ``encoderblock/`` with a leading layer axis."""
    stacked = [k for k in src if k.startswith("Transformer/encoderblock/")]
    if not stacked:
        return src
    out = {k: v for k, v in src.items() if k not in stacked}
    for k in stacked:
        rest = k[len("Transformer/encoderblock/"):]
        for i, v in enumerate(src[k].unbind(0)):
            out[f"Transformer/encoderblock_{i}/{rest}"] = v
    report.notes.append(f"unstacked {len(stacked)} scanned big_vision block tensors along their layer axis")
    return out


# ---------------------------------------------------------------------- registry and detection
# Layouts recognised by their key names: name -> keys whose presence identifies it.
FORMATS: dict[str, tuple[str, ...]] = {
    "timm": ("patch_embed.proj.weight", "blocks.0.attn.qkv.weight"),
    "torchvision": ("conv_proj.weight", "encoder.pos_embedding"),
    "hf": ("embeddings.patch_embeddings.projection.weight",),
    "jax": ("embedding/kernel",),
    "monai": ("patch_embedding.position_embeddings",),
}
# vit3d's own safetensors files, recognised by the ``vit3d.config`` entry of their metadata, not by keys.
VIT3D_FORMAT = "vit3d"
FORMAT_NAMES = (*FORMATS, VIT3D_FORMAT)

_CONVERTERS = {"timm": _from_timm, "torchvision": _from_torchvision, "hf": _from_hf, "jax": _from_jax,
               "monai": _from_monai}


class Converted(NamedTuple):
    """A canonical state dict with either architecture ``hints`` for :func:`infer_config` (other layouts) or the
    full constructor ``config`` a vit3d file stores (then ``hints`` is empty)."""

    state: Tensors
    hints: Hints
    config: dict[str, Any] | None = None


def detect_format(keys: list[str], metadata: dict[str, str] | None = None, source: str = "") -> str:
    """Name of the layout ``keys`` follow, or a ValueError listing what was found and the formats known."""
    if metadata and "vit3d.config" in metadata:
        return VIT3D_FORMAT
    found = [name for name, marks in FORMATS.items()
             if all(any(k == m or k.endswith("." + m) or k.endswith("/" + m) for k in keys) for m in marks)]
    if len(found) == 1:
        return found[0]
    known = "; ".join(f"{n} ({', '.join(m)})" for n, m in FORMATS.items())
    sample = sorted(keys)[:8]
    what = f"it matches several ({found})" if found else "no known layout matched"
    raise CheckpointError(f"cannot tell the checkpoint format: {what}. Found {len(keys)} tensors, e.g. {sample}. "
                          f"Known formats (identifying keys): {known}; and {VIT3D_FORMAT} (safetensors metadata "
                          "'vit3d.config')", file=source or None,
                          fix="pass format=... (CLI: --format) if the file is one of them")


def convert(tensors: Tensors, fmt: str, *, config: dict[str, Any] | None = None,
            metadata: dict[str, str] | None = None, report: LoadReport) -> Converted:
    """Canonical state dict and architecture hints (or the stored config) from ``tensors`` in layout ``fmt``."""
    if fmt == VIT3D_FORMAT:
        if not metadata or "vit3d.config" not in metadata:
            raise ValueError(f"{report.source or 'the file'} has no 'vit3d.config' metadata; it was not written "
                             "by vit3d (pick its real format or format='auto')")
        state, stored = _from_vit3d(tensors, metadata, report)
        return Converted(state, {}, stored)
    if fmt not in _CONVERTERS:
        raise ValueError(f"format={fmt!r} is not one of {['auto', *FORMAT_NAMES]}")
    keys = list(tensors)
    absent = [m for m in FORMATS[fmt] if not any(k == m or k.endswith(("." + m, "/" + m)) for k in keys)]
    if absent:
        raise ValueError(f"format={fmt!r} expects tensors named like {list(FORMATS[fmt])}, but {absent} are absent "
                         f"from {report.source or 'the state dict'} (found e.g. {sorted(keys)[:8]}); use "
                         f"format='auto' or the file's real format")
    return Converted(*_CONVERTERS[fmt](tensors, config or {}, report))
