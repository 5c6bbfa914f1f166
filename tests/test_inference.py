"""Sliding-window classification: windows as MONAI lays them out, aggregates checked against a hand computation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import vit3d
from vit3d.inference import aggregate_logits, predict_inputs, sliding_window_logits, window_slices

ROI = (8, 16, 16)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return vit3d.create_model("vit_tiny_patch16_3d", img_size=ROI, patch_size=(4, 8, 8), in_chans=1, num_classes=3,
                              embed_dim=24, depth=1, num_heads=2).eval()


def _hand_windows(size: int, roi: int, step: int) -> list[int]:
    """Window starts every ``step`` voxels, the last one flush with the far edge (independent of MONAI)."""
    starts = list(range(0, size - roi + 1, step))
    if starts[-1] != size - roi:
        starts.append(size - roi)
    return starts


def test_windows_cover_the_scan_like_monai() -> None:
    from monai.inferers import sliding_window_inference

    size = (20, 40, 30)
    wins = window_slices(size, ROI, overlap=0.5)
    starts = [_hand_windows(s, r, r // 2) for s, r in zip(size, ROI, strict=True)]
    assert sorted(tuple(s.start for s in w) for w in wins) == sorted(
        (a, b, c) for a in starts[0] for b in starts[1] for c in starts[2])
    cover = torch.zeros(size)
    for w in wins:
        cover[w] += 1
    # Oracle: MONAI's own sliding_window_inference with a predictor returning ones, constant blending, counts the
    # same windows per voxel; its division by the count gives 1 where ours gives the count itself.
    counted = []
    sliding_window_inference(torch.zeros(1, 1, *size), ROI, 1, lambda t: (counted.append(1), torch.ones_like(t))[1],
                             overlap=0.5)
    assert len(counted) == len(wins) and cover.min() >= 1


@pytest.mark.parametrize("aggregate", ["mean", "max", "attention"])
def test_logits_equal_the_hand_computed_aggregate(model: torch.nn.Module, aggregate: str) -> None:
    scan = torch.randn(2, 1, 14, 40, 24)  # larger than the window along every axis, two scans in the batch
    out = sliding_window_logits(model, scan, overlap=0.5, aggregate=aggregate, batch_size=3)
    rows = []
    for d in _hand_windows(14, 8, 4):
        for h in _hand_windows(40, 16, 8):
            for w in _hand_windows(24, 16, 8):
                with torch.no_grad():
                    rows.append(model(scan[:, :, d:d + 8, h:h + 16, w:w + 16]))
    per_window = torch.stack(rows, dim=1)  # (B, windows, classes)
    # window starts (0, 4, 6) x (0, 8, 16, 24) x (0, 8)
    assert out.window_logits.shape == per_window.shape == (2, 3 * 4 * 2, 3)
    order = [tuple(s.start for s in w) for w in out.windows]
    hand_order = [(d, h, w) for d in _hand_windows(14, 8, 4) for h in _hand_windows(40, 16, 8)
                  for w in _hand_windows(24, 16, 8)]
    per_window = per_window[:, [hand_order.index(o) for o in order]]
    torch.testing.assert_close(out.window_logits, per_window, atol=1e-5, rtol=1e-5)
    if aggregate == "mean":
        expected = per_window.mean(1)
    elif aggregate == "max":
        expected = per_window.max(1).values
    else:
        top = per_window.max(2).values
        weights = torch.exp(top - top.max(1, keepdim=True).values)
        weights = weights / weights.sum(1, keepdim=True)
        expected = (weights[..., None] * per_window).sum(1)
    torch.testing.assert_close(out.logits, expected, atol=1e-5, rtol=1e-5)


def test_small_scans_are_padded_and_one_window_is_the_plain_forward(model: torch.nn.Module) -> None:
    exact = torch.randn(1, 8, 16, 16)
    out = sliding_window_logits(model, exact)
    with torch.no_grad():
        torch.testing.assert_close(out.logits, model(exact[None]), atol=1e-6, rtol=1e-6)
    small = torch.randn(1, 1, 6, 16, 20)
    out = sliding_window_logits(model, small, overlap=0.0)
    assert out.pad == ((1, 1), (0, 0), (0, 0)) and len(out.windows) == 2
    padded = torch.nn.functional.pad(small, (0, 0, 0, 0, 1, 1))
    with torch.no_grad():
        torch.testing.assert_close(out.window_logits[:, 0], model(padded[..., :16]), atol=1e-5, rtol=1e-5)


def test_attention_moves_from_mean_to_max() -> None:
    z = torch.randn(2, 7, 4)
    hot, _ = aggregate_logits(z, "attention", temperature=1e-4)
    top = z.max(2).values.argmax(1)
    torch.testing.assert_close(hot, z[torch.arange(2), top])
    cold, w = aggregate_logits(z, "attention", temperature=1e6)
    torch.testing.assert_close(cold, z.mean(1), atol=1e-4, rtol=1e-4)
    assert w is not None and torch.allclose(w.sum(1), torch.ones(2))


def test_bad_arguments(model: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match="aggregate"):
        sliding_window_logits(model, torch.randn(1, 8, 16, 16), aggregate="median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"overlap .* in \[0, 1\)"):
        window_slices((8, 16, 16), ROI, overlap=1.0)
    with pytest.raises(ValueError, match="smaller than the window"):
        window_slices((4, 16, 16), ROI)
    with pytest.raises(ValueError, match="roi_size"):
        sliding_window_logits(model, torch.randn(1, 8, 16, 16), roi_size=(8, 16))


def test_predict_a_folder_of_series_gives_one_row_per_series(model: torch.nn.Module, tmp_path: Path) -> None:
    """Real DICOM series written from nibabel's test volume, found by discover_inputs, read by the volume preset."""
    import nibabel as nib
    from nibabel.testing import data_path

    from tests.data.helpers import write_dicom_series
    from vit3d.data.inputs import discover_inputs
    from vit3d.data.volume import VolumeDataset

    vol = np.asarray(nib.load(Path(data_path) / "anatomical.nii").dataobj)  # (33, 41, 25) x, y, z
    slices = np.ascontiguousarray(vol.transpose(2, 1, 0)).astype(np.int16)  # (z, rows=y, cols=x)
    for i in range(3):
        write_dicom_series(tmp_path / "site" / f"patient{i}" / "series", slices + 100 * i, spacing=(2.0, 2.0, 2.0))
    (tmp_path / "site" / "broken").mkdir()
    (tmp_path / "site" / "broken" / "x.nii.gz").write_bytes(b"not a nifti")
    inputs = discover_inputs(tmp_path / "site")
    assert len(inputs) == 4
    dataset = VolumeDataset([], preset="mri", spacing=2.0, fov="whole", img_size=ROI)
    preds = predict_inputs(model, inputs, dataset.load_one, classes=["a", "b", "c"], overlap=0.25)
    assert [p.path for p in preds] == list(inputs)
    good = [p for p in preds if not p.error]
    assert len(good) == 3 and all(p.label in "abc" and p.windows > 1 for p in good)
    assert all(abs(sum(p.probabilities.values()) - 1) < 1e-5 for p in good)
    bad = preds[0]  # broken/ sorts first
    assert bad.path.endswith("x.nii.gz") and "not a NIFTI file: it is a text file" in bad.error
    assert bad.row(["a", "b", "c"])["prob_a"] == ""


def test_classifier_module_is_the_sliding_aggregate_and_trains_through_windows(model: torch.nn.Module) -> None:
    from vit3d.inference import SlidingWindowClassifier

    wrapped = SlidingWindowClassifier(model, overlap=0.5, aggregate="max")
    scan = torch.randn(2, 1, 12, 20, 16)
    with torch.no_grad():
        torch.testing.assert_close(wrapped(scan), sliding_window_logits(model, scan, overlap=0.5,
                                                                         aggregate="max").logits)
        exact = torch.randn(1, 1, *ROI)
        torch.testing.assert_close(wrapped(exact), model(exact))
    assert list(wrapped.state_dict()) == [f"model.{k}" for k in model.state_dict()]
    wrapped(scan).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters() if p.requires_grad)
    model.zero_grad(set_to_none=True)
    with pytest.raises(ValueError, match="overlap"):
        SlidingWindowClassifier(model, overlap=1.5)

