"""Reading never executes code from a file; containers and prefixes of training checkpoints are unwrapped; every
broken or hostile file is a one-line CheckpointError naming the file (no traceback-worthy crash, no out-of-memory
from numbers in metadata, no path outside an index's folder)."""

from __future__ import annotations

import json
import pickle
import resource
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import vit3d
from vit3d.errors import CheckpointError, MissingInputError
from vit3d.weights import load_2d, load_model, save_model
from vit3d.weights.io import read_checkpoint


class _Payload:
    """Unpickling this creates ``marker``: proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("suffix", [".pth", ".bin", ".ckpt"])
@pytest.mark.parametrize("container", ["torch_zip", "raw_pickle"])
def test_pickle_payload_is_refused(tmp_path, suffix, container):
    marker = tmp_path / "pwned"
    obj = {"patch_embed.proj.weight": torch.zeros(4, 3, 2, 2), "evil": _Payload(marker)}
    path = tmp_path / f"evil{suffix}"
    if container == "torch_zip":
        torch.save(obj, path)
    else:
        path.write_bytes(pickle.dumps(obj))
    assert not marker.exists()
    for load in (load_2d, lambda p: vit3d.create_model(None, pretrained=p)):
        with pytest.raises(CheckpointError) as err:
            load(path)
        msg = str(err.value)
        assert "refused as unsafe" in msg and str(path) in msg
        assert "io.open" in msg or container == "raw_pickle"  # the refused global, when torch names one
        assert "weights_only" not in msg and "\n" not in msg
    assert not marker.exists()


def test_npz_with_pickled_object_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    arr = np.empty(1, dtype=object)
    arr[0] = _Payload(marker)
    np.savez(tmp_path / "evil.npz", **{"embedding/kernel": np.zeros((2, 2, 3, 4)), "evil": arr})
    with pytest.raises(CheckpointError, match="refused as unsafe.*pickled Python objects"):
        load_2d(tmp_path / "evil.npz")
    assert not marker.exists()


def test_truncated_npz_says_truncated(tmp_path):
    np.savez(tmp_path / "ok.npz", **{"embedding/kernel": np.zeros((8, 8, 3, 64))})
    data = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as err:
        load_2d(tmp_path / "cut.npz")
    msg = str(err.value)
    assert "truncated or corrupt" in msg and "cut.npz" in msg and "pickled" not in msg


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_safetensors_names_the_file(tmp_path, damage):
    model = vit3d.VisionTransformer(16, 8, num_classes=2, embed_dim=64, depth=1, num_heads=1)
    save_file(model.state_dict(), tmp_path / "w.safetensors")
    data = (tmp_path / "w.safetensors").read_bytes()
    bad = data[: len(data) // 2] if damage == "truncated" else b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}" * 3
    (tmp_path / "w.safetensors").write_bytes(bad)
    with pytest.raises(CheckpointError, match=r"not a readable safetensors file.*w\.safetensors"):
        load_2d(tmp_path / "w.safetensors")


@pytest.mark.parametrize("suffix", [".pth", ".ckpt"])
def test_corrupt_torch_checkpoint_is_a_checkpoint_error(tmp_path, suffix):
    model = vit3d.VisionTransformer(16, 8, num_classes=2, embed_dim=64, depth=1, num_heads=1)
    torch.save({"state_dict": model.state_dict()}, tmp_path / f"ok{suffix}")
    data = (tmp_path / f"ok{suffix}").read_bytes()
    (tmp_path / f"cut{suffix}").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match=rf"truncated or corrupt.*cut\{suffix}"):
        load_2d(tmp_path / f"cut{suffix}")


def test_training_checkpoint_is_unwrapped(tmp_path):
    model = vit3d.VisionTransformer(16, 8, num_classes=2, embed_dim=64, depth=1, num_heads=1)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"epoch": 3, "state_dict": state, "optimizer": {"lr": 0.1}}, tmp_path / "train.ckpt")
    raw = read_checkpoint(tmp_path / "train.ckpt")
    assert set(raw.tensors) == set(model.state_dict())
    assert any("state_dict" in n for n in raw.notes) and any("module." in n for n in raw.notes)


def test_missing_and_unsupported_paths(tmp_path):
    with pytest.raises(MissingInputError, match="does not exist"):
        load_2d(tmp_path / "nope.pth")
    (tmp_path / "weights.h5").write_bytes(b"\0")
    with pytest.raises(CheckpointError, match=r"\.safetensors"):
        load_2d(tmp_path / "weights.h5")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_2d(tmp_path / "empty_dir")


def test_payload_is_live_control(tmp_path):
    """Control for the refusal tests: an ordinary unpickler does run the payload."""
    marker = tmp_path / "pwned"
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"evil": _Payload(marker)}))
    pickle.loads((tmp_path / "evil.pkl").read_bytes())  # noqa: S301 - the point of the control
    assert marker.exists()


# ---------------------------------------------------------------------- metadata out of range
def _vit3d_file(tmp_path: Path, **edit) -> Path:
    model = vit3d.VisionTransformer(16, 8, num_classes=2, embed_dim=32, depth=2, num_heads=2)
    path = save_model(model, tmp_path / "m.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())
    config = {**json.loads(meta["vit3d.config"]), **edit}
    meta["vit3d.config"] = json.dumps(config)
    save_file(tensors, path, metadata=meta)
    return path


@pytest.mark.parametrize("edit,message", [
    ({"depth": 1_000_000}, r"depth: 1000000; expected an integer in \[1, 256\]"),
    ({"img_size": [100000, 100000]}, r"img_size: \[100000, 100000\]"),
    ({"img_size": [8192, 8192], "patch_size": [1, 1]}, r"67,108,864 tokens, over the limit"),
    ({"embed_dim": 10 ** 9}, r"embed_dim: 1000000000"),
    ({"num_heads": "12"}, r"num_heads: '12'"),
    ({"mlp_ratio": 1e9}, r"mlp_ratio"),
    ({"evil": 1}, r"unknown keys \['evil'\]"),
    ({"depth": 3}, r"does not describe its tensors.*missing \['blocks.2"),
    ({"embed_dim": 64, "num_heads": 2}, r"does not describe its tensors.*cls_token: file \[1, 1, 32\]"),
])
def test_metadata_numbers_are_bounded_before_building(tmp_path, edit, message):
    path = _vit3d_file(tmp_path, **edit)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for load in (load_model, load_2d, lambda p: vit3d.create_model(None, pretrained=p)):
        with pytest.raises(CheckpointError, match=message) as err:
            load(path)
        assert str(path) in str(err.value)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 200, f"peak RSS grew {grown_mb:.0f} MB while refusing the file"


def test_inflate_never_copies_a_bad_config(tmp_path):
    from pipelines.cli import main

    path = _vit3d_file(tmp_path, depth=1_000_000)
    out = tmp_path / "out.safetensors"
    assert main(["inflate", str(path), "--out", str(out)]) == 2
    assert not out.exists()


# ---------------------------------------------------------------------- sharded index
@pytest.mark.parametrize("shard", ["../../outside.safetensors", "/etc/passwd", "sub/../../x.safetensors"])
def test_shard_names_may_not_leave_the_folder(tmp_path, shard):
    outside = tmp_path / "outside.safetensors"
    save_file({"x": torch.zeros(1)}, outside)
    folder = tmp_path / "a" / "b"
    folder.mkdir(parents=True)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": shard}}))
    with pytest.raises(CheckpointError, match="outside its folder") as err:
        load_2d(folder)
    assert "model.safetensors.index.json" in str(err.value)


def test_sharded_checkpoint_loads(tmp_path):
    model = vit3d.VisionTransformer(16, 8, num_classes=2, embed_dim=64, depth=2, num_heads=1).eval()
    state = model.state_dict()
    keys = sorted(state)
    half = len(keys) // 2
    save_file({k: state[k] for k in keys[:half]}, tmp_path / "model-00001-of-00002.safetensors")
    save_file({k: state[k] for k in keys[half:]}, tmp_path / "model-00002-of-00002.safetensors")
    weight_map = {k: f"model-0000{1 if i < half else 2}-of-00002.safetensors" for i, k in enumerate(keys)}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    loaded = vit3d.create_model(None, pretrained=tmp_path, num_heads=1).eval()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_bad_config_json_names_the_file(tmp_path):
    model = vit3d.VisionTransformer(16, 8, num_classes=2, embed_dim=64, depth=1, num_heads=1)
    save_file(model.state_dict(), tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text('{"model_type": "vit", ')
    with pytest.raises(CheckpointError, match=r"not valid JSON .*config\.json"):
        load_2d(tmp_path)
