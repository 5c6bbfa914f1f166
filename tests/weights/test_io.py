"""Reading never executes code from a file; containers and prefixes of training checkpoints are unwrapped."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import vit3d
from vit3d.weights import load_2d
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
    with pytest.raises(ValueError, match="refusing to load"):
        load_2d(path)
    with pytest.raises(ValueError, match="refusing to load"):
        vit3d.create_model(None, pretrained=path)
    assert not marker.exists()


def test_npz_with_pickled_object_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    arr = np.empty(1, dtype=object)
    arr[0] = _Payload(marker)
    np.savez(tmp_path / "evil.npz", **{"embedding/kernel": np.zeros((2, 2, 3, 4)), "evil": arr})
    with pytest.raises(ValueError, match="refusing to load"):
        load_2d(tmp_path / "evil.npz")
    assert not marker.exists()


def test_training_checkpoint_is_unwrapped(tmp_path):
    model = vit3d.VisionTransformer(16, 8, num_classes=2, embed_dim=64, depth=1, num_heads=1)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"epoch": 3, "state_dict": state, "optimizer": {"lr": 0.1}}, tmp_path / "train.ckpt")
    raw = read_checkpoint(tmp_path / "train.ckpt")
    assert set(raw.tensors) == set(model.state_dict())
    assert any("state_dict" in n for n in raw.notes) and any("module." in n for n in raw.notes)


def test_missing_and_unsupported_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_2d(tmp_path / "nope.pth")
    (tmp_path / "weights.h5").write_bytes(b"\0")
    with pytest.raises(ValueError, match=r"\.safetensors"):
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
