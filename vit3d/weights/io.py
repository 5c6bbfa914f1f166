"""Reading checkpoint files without executing code: safetensors, ``torch.load(weights_only=True)`` and
``numpy.load(allow_pickle=False)``; a pickle that asks for anything beyond tensors is refused. Hub names
(``hf-hub:org/name``) are fetched into the huggingface_hub cache first (:mod:`vit3d.weights.hub`).

Every failure a file can cause is a :class:`~vit3d.errors.CheckpointError` (or :class:`MissingInputError`)
naming the file.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vit3d.errors import CheckpointError, MissingInputError

from .hub import download, parse_hub_name

__all__ = ["RawCheckpoint", "read_checkpoint", "shard_names"]

_WRAPPERS = ("state_dict", "model", "module", "model_state", "model_state_dict", "params", "ema")
_PREFIXES = ("module.", "_orig_mod.", "model.", "net.", "backbone.")
_TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".tar")
_HF_MODEL_TYPES = ("vit", "vivit", "videomae")


class RawCheckpoint:
    """Tensors read from a file or HF directory, with any metadata and ``config.json`` found beside them.

    Attributes:
        tensors: flat ``name -> tensor`` mapping (npz arrays become tensors; names keep the file's spelling).
        metadata: safetensors header metadata (strings), empty for other files.
        config: parsed ``config.json`` from the HF directory or beside the file, or ``{}``.
        source: the path read, for messages.
        notes: what reading did (downloaded, unwrapped containers, stripped prefixes).
    """

    def __init__(self, tensors: dict[str, torch.Tensor], metadata: dict[str, str], config: dict[str, Any],
                 source: str, notes: list[str]) -> None:
        self.tensors, self.metadata, self.config, self.source, self.notes = tensors, metadata, config, source, notes


def read_checkpoint(source: str | Path) -> RawCheckpoint:
    """Read ``source`` (a file, a HF directory holding ``config.json`` and weights, or a Hub name) safely.

    Raises:
        MissingInputError: when the path, or the weights inside a directory, do not exist.
        CheckpointError: when a pickle holds anything but tensors and plain containers (refused as unsafe), the
            file is truncated, corrupt or not a checkpoint, or a Hub download fails.
    """
    notes: list[str] = []
    hub = parse_hub_name(source)
    if hub is not None:
        folder, notes = download(hub)
        path = folder
    else:
        path = Path(source).expanduser()
    if not path.exists():
        raise MissingInputError("checkpoint does not exist", file=str(path),
                                fix="check the path, or name a Hub repository as hf-hub:org/name")
    config: dict[str, Any] = {}
    if path.is_dir():
        config = _read_json(path / "config.json")
        path = _weights_in_dir(path)
    elif (path.parent / "config.json").is_file():
        sidecar = _read_json(path.parent / "config.json")
        if sidecar.get("model_type") in _HF_MODEL_TYPES or "architecture" in sidecar:  # HF or timm hub config
            config = sidecar
    metadata: dict[str, str] = {}
    if path.name.endswith(".safetensors.index.json"):
        tensors = _read_sharded(path)
    elif path.suffix == ".safetensors":
        tensors, metadata = _read_safetensors(path)
    elif path.suffix == ".npz":
        tensors = _read_npz(path)
    elif path.suffix in _TORCH_SUFFIXES:
        tensors = _unwrap(_read_torch(path), notes, path)
    else:
        raise CheckpointError(f"unknown checkpoint suffix {path.suffix!r}", file=str(path),
                              fix=f"checkpoints are read from .safetensors, .npz, {', '.join(_TORCH_SUFFIXES)} "
                                  "files or a HF directory with config.json")
    if not tensors:
        raise CheckpointError("the file holds no tensors", file=str(path))
    source_name = f"{hub} ({path})" if hub is not None else str(path)
    return RawCheckpoint(tensors, metadata, config, source_name, notes)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        out = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"not valid JSON ({err})", file=str(path), fix="fix or remove it") from err
    return out if isinstance(out, dict) else {}


def _weights_in_dir(path: Path) -> Path:
    for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"):
        if (path / name).is_file():
            return path / name
    found = sorted(p.name for p in path.iterdir())[:10]
    raise MissingInputError(f"the folder has no model.safetensors, model.safetensors.index.json or "
                            f"pytorch_model.bin (found: {found})", file=str(path),
                            fix="point at the weights file instead")


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except SafetensorError as err:
        raise CheckpointError(f"not a readable safetensors file, truncated or corrupt ({err})", file=str(path),
                              fix="download or write it again") from err


def shard_names(index: Path) -> list[str]:
    """Shard file names of a sharded safetensors ``index`` (``weight_map`` values), each checked to stay inside
    the index's folder: an absolute name or one climbing out with ``..`` is refused."""
    try:
        data = json.loads(index.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"not a valid safetensors index ({err})", file=str(index)) from err
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError("safetensors index has no 'weight_map' of tensor name -> shard file", file=str(index))
    names = sorted(set(weight_map.values()))
    root = index.parent.resolve()
    for name in names:
        target = (root / name).resolve()
        if Path(name).is_absolute() or ".." in Path(name).parts or not target.is_relative_to(root):
            raise CheckpointError(f"safetensors index names shard {name!r} outside its folder", file=str(index),
                                  fix="shards must be plain file names beside the index; refusing to follow it")
    return names


def _read_sharded(index: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for shard in shard_names(index):
        if not (index.parent / shard).is_file():
            raise MissingInputError(f"shard {shard!r} listed by the index is missing", file=str(index))
        tensors.update(_read_safetensors(index.parent / shard)[0])
    return tensors


def _read_npz(path: Path) -> dict[str, torch.Tensor]:
    if not zipfile.is_zipfile(path):
        raise CheckpointError("not a readable .npz (zip) archive: truncated or corrupt", file=str(path),
                              fix="download or write it again")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: torch.from_numpy(np.ascontiguousarray(npz[k])) for k in npz.files}
    except ValueError as err:  # numpy refuses object arrays when allow_pickle=False
        raise CheckpointError(f"refused as unsafe: it holds pickled Python objects ({err})", file=str(path),
                              fix="npz checkpoints must hold plain numeric arrays") from err
    except (zipfile.BadZipFile, EOFError, OSError) as err:  # a member cut short or damaged
        raise CheckpointError(f"truncated or corrupt .npz ({type(err).__name__}: {err})", file=str(path),
                              fix="download or write it again") from err


_UNSAFE_FIX = ("vit3d never runs code from a checkpoint; load it in an environment you trust and save its "
               "state dict as safetensors (safetensors.torch.save_file(model.state_dict(), 'model.safetensors'))")


def _read_torch(path: Path) -> Any:
    is_zip = zipfile.is_zipfile(path)
    try:
        # mmap needs torch's zip format; legacy pickles load without it.
        return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as err:
        # torch's weights-only unpickler says which global it refused; its advice to pass weights_only=False is
        # exactly what must not be done with a file of unknown origin, so only the refused global is kept.
        refused = next((line.split("Unsupported", 1)[1].split(". ")[0].strip() for line in str(err).splitlines()
                        if "Unsupported global" in line or "Unsupported operand" in line), None)
        # torch raises the same UnpicklingError class for a refused global and for a damaged stream; its text is
        # the only thing that tells them apart (no typed error exists in torch.serialization).
        if refused is None and "Weights only load failed" not in str(err):
            raise CheckpointError(f"truncated or corrupt checkpoint ({type(err).__name__})", file=str(path),
                                  fix="download or write it again") from err
        raise CheckpointError("refused as unsafe: the pickle asks for more than tensors and plain containers"
                              + (f" (unsupported {refused})" if refused else ""), file=str(path),
                              fix=_UNSAFE_FIX) from err
    except (EOFError, RuntimeError, zipfile.BadZipFile) as err:  # cut short, or a damaged zip archive
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise CheckpointError(f"truncated or corrupt checkpoint ({first})", file=str(path),
                              fix="download or write it again") from err


def _is_state(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _unwrap(obj: Any, notes: list[str], path: Path) -> dict[str, torch.Tensor]:
    """Find the state dict inside a training checkpoint and strip a wrapper prefix shared by every key."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"expected a state dict (name -> tensor), got {type(obj).__name__}", file=str(path))
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
                raise CheckpointError(f"found no tensors at the top level or under {list(_WRAPPERS)}; top-level "
                                      f"keys: {sorted(map(str, obj))[:10]}", file=str(path))
            obj = tensors
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in obj):
            notes.append(f"stripped the prefix {prefix!r} shared by every key")
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    return dict(obj)
