"""Reading checkpoint files without executing code: safetensors, ``torch.load(weights_only=True)`` and
``numpy.load(allow_pickle=False)``; a pickle that asks for anything beyond tensors is refused."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["RawCheckpoint", "read_checkpoint"]

_WRAPPERS = ("state_dict", "model", "module", "model_state", "model_state_dict", "params", "ema")
_PREFIXES = ("module.", "_orig_mod.", "model.", "net.", "backbone.")
_TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".tar")


class RawCheckpoint:
    """Tensors read from a file or HF directory, with any metadata and ``config.json`` found beside them.

    Attributes:
        tensors: flat ``name -> tensor`` mapping (npz arrays become tensors; names keep the file's spelling).
        metadata: safetensors header metadata (strings), empty for other files.
        config: parsed ``config.json`` from the HF directory or beside the file, or ``{}``.
        source: the path read, for messages.
        notes: what reading did (unwrapped containers, stripped prefixes).
    """

    def __init__(self, tensors: dict[str, torch.Tensor], metadata: dict[str, str], config: dict[str, Any],
                 source: str, notes: list[str]) -> None:
        self.tensors, self.metadata, self.config, self.source, self.notes = tensors, metadata, config, source, notes


def read_checkpoint(source: str | Path) -> RawCheckpoint:
    """Read ``source`` (a file, or a HF directory holding ``config.json`` and weights) safely.

    Raises:
        FileNotFoundError: when the path, or the weights inside a directory, do not exist.
        ValueError: when a pickle holds anything but tensors and plain containers, or the file is not a checkpoint.
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    config: dict[str, Any] = {}
    if path.is_dir():
        config = _read_json(path / "config.json")
        path = _weights_in_dir(path)
    elif (path.parent / "config.json").is_file():
        sidecar = _read_json(path.parent / "config.json")
        if sidecar.get("model_type") in ("vit", "vivit", "videomae") or "architecture" in sidecar:  # HF or timm hub
            config = sidecar
    metadata: dict[str, str] = {}
    notes: list[str] = []
    if path.name.endswith(".safetensors.index.json"):
        tensors = _read_sharded(path)
    elif path.suffix == ".safetensors":
        tensors, metadata = _read_safetensors(path)
    elif path.suffix == ".npz":
        tensors = _read_npz(path)
    elif path.suffix in _TORCH_SUFFIXES:
        tensors = _unwrap(_read_torch(path), notes)
    else:
        raise ValueError(f"{str(path)!r} has suffix {path.suffix!r}; checkpoints are read from .safetensors, "
                         f".npz, {', '.join(_TORCH_SUFFIXES)} files or a HF directory with config.json")
    if not tensors:
        raise ValueError(f"{str(path)!r} holds no tensors")
    return RawCheckpoint(tensors, metadata, config, str(path), notes)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        out = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{str(path)!r} is not valid JSON ({err}); fix or remove it") from err
    return out if isinstance(out, dict) else {}


def _weights_in_dir(path: Path) -> Path:
    for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"):
        if (path / name).is_file():
            return path / name
    found = sorted(p.name for p in path.iterdir())[:10]
    raise FileNotFoundError(f"directory {str(path)!r} has no model.safetensors, model.safetensors.index.json or "
                            f"pytorch_model.bin (found: {found}); point at the weights file instead")


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


def _read_sharded(index: Path) -> dict[str, torch.Tensor]:
    shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
    tensors: dict[str, torch.Tensor] = {}
    for shard in shards:
        tensors.update(_read_safetensors(index.parent / shard)[0])
    return tensors


def _read_npz(path: Path) -> dict[str, torch.Tensor]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: torch.from_numpy(np.ascontiguousarray(npz[k])) for k in npz.files}
    except ValueError as err:
        raise ValueError(f"refusing to load {str(path)!r}: it holds pickled Python objects ({err}); npz "
                         "checkpoints must hold plain numeric arrays") from err


def _read_torch(path: Path) -> Any:
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:  # mmap needs the zip format; legacy pickles load without it
            if "mmap" not in str(err) and "zip" not in str(err):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"refusing to load {str(path)!r}: it asks the unpickler for more than tensors and plain "
                         f"containers ({first}). vit3d never runs code from a checkpoint; re-save its state dict "
                         "as safetensors in an environment you trust") from err


def _is_state(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _unwrap(obj: Any, notes: list[str]) -> dict[str, torch.Tensor]:
    """Find the state dict inside a training checkpoint and strip a wrapper prefix shared by every key."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a state dict (name -> tensor), got {type(obj).__name__}")
    if not _is_state(obj):
        for key in _WRAPPERS:
            if _is_state(obj.get(key)):
                notes.append(f"took the state dict under {key!r} (other entries: "
                             f"{sorted(k for k in obj if k != key)[:6]})")
                obj = obj[key]
                break
        else:
            tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            if not tensors:
                raise ValueError(f"found no tensors at the top level or under {list(_WRAPPERS)}; top-level keys: "
                                 f"{sorted(map(str, obj))[:10]}")
            obj = tensors
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in obj):
            notes.append(f"stripped the prefix {prefix!r} shared by every key")
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    return dict(obj)
