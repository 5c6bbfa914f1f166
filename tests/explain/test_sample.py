"""explain_sample: maps written on the input file's grid, whole scans by sliding windows, overlays that are images."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import vit3d
from vit3d.explain import explain, explain_sample, explain_sliding, resample_to_reference

SIZE = (16, 24, 40)  # model-space (D, H, W): pads D, crops H, pads W of the 16 x 32 x 32 synthetic volumes


def _prepare(spacing: tuple[float, float, float]):  # noqa: ANN202 - the data engineer's MONAI eval stage
    from vit3d.data.transforms import build_monai_stages

    prepare, _ = build_monai_stages("ct", image_keys=["image"], mask_key="mask", img_size=SIZE, spacing=spacing,
                                    train=False, window=(-200.0, 300.0), on_2d="error", on_4d="error", fov="crop")
    return prepare


@pytest.mark.parametrize("spacing", [(2.0, 1.0, 1.0), (3.0, 1.5, 1.5)])
def test_eval_geometry_round_trips_to_the_file_grid(volume_rows: list[dict[str, str]],
                                                    spacing: tuple[float, float, float]) -> None:
    """The lesion mask, preprocessed like an image and mapped back, lands on the file's own lesion voxels."""
    row = volume_rows[0]
    sample = _prepare(spacing)({"image": row["image"], "mask": row["mask"]})
    ref = nib.load(row["mask"])
    orig = np.asarray(ref.dataobj) > 0
    if spacing == (2.0, 1.0, 1.0):  # the file's own spacing: orientation, crop and pad only, so exact
        back = resample_to_reference(sample["mask"][0].float(), sample["mask"].affine, ref.affine, ref.shape,
                                     interpolation="nearest") > 0.5
        assert (back == orig).all()
    # any spacing: the lesion's centre in world coordinates is where the file has it (within one model voxel)
    model_mask = sample["mask"][0].numpy() > 0.5
    centre_model = sample["mask"].affine.numpy() @ np.append(np.argwhere(model_mask).mean(0), 1.0)
    centre_file = ref.affine @ np.append(np.argwhere(orig).mean(0), 1.0)
    assert np.abs(centre_model - centre_file).max() <= max(spacing) / 2 + 1e-6


def test_explain_sample_writes_nifti_on_the_input_grid(volume_rows: list[dict[str, str]], tmp_path: Path) -> None:
    row = volume_rows[0]
    sample = _prepare((2.0, 1.0, 1.0))({"image": row["image"], "mask": row["mask"]})
    model = vit3d.create_model("vit_tiny_patch16_3d", img_size=SIZE, patch_size=(4, 8, 8), in_chans=1,
                               num_classes=2, embed_dim=48, depth=2, num_heads=3)
    result = explain_sample(model, sample["image"], kind="volume", classes=["sphere", "tube"], out_dir=tmp_path,
                                stem="vol", method="rollout", input_path=row["image"], mask=sample["mask"][0])
    assert result.label in ("sphere", "tube") and abs(sum(result.probabilities) - 1) < 1e-5
    nifti, png = result.files
    written, ref = nib.load(nifti), nib.load(row["image"])
    assert written.shape == ref.shape
    np.testing.assert_allclose(written.affine, ref.affine, atol=1e-5)
    # Same spacing: every file voxel is exactly one model voxel (orientation, crop, pad); the values must agree.
    to_model = np.linalg.inv(sample["image"].affine.numpy()) @ ref.affine
    vox = np.stack(np.meshgrid(*[np.arange(s) for s in ref.shape], indexing="ij"), -1).reshape(-1, 3)
    idx = vox @ to_model[:3, :3].T + to_model[:3, 3]
    np.testing.assert_allclose(idx, idx.round(), atol=1e-6)
    idx = idx.round().astype(int)
    inside = ((idx >= 0) & (idx < np.array(SIZE))).all(1)
    assert inside.mean() > 0.5
    file_map = np.asarray(written.dataobj).reshape(-1)
    np.testing.assert_allclose(file_map[inside], result.map[tuple(idx[inside].T)], atol=1e-6)
    assert np.abs(file_map[~inside]).max() < 1e-4  # outside the model's field of view (float round-off only)
    from PIL import Image

    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 300


def test_explain_sample_clip_writes_an_animation(tmp_path: Path) -> None:
    from PIL import Image

    model = vit3d.create_model("simple_vit_tiny_patch16_3d", img_size=(8, 32, 32), patch_size=(2, 8, 8),
                               num_classes=4, embed_dim=48, depth=2, num_heads=3)
    clip = torch.randn(3, 8, 32, 32)
    result = explain_sample(model, clip, kind="clip", classes=["up", "down", "left", "right"], out_dir=tmp_path,
                                stem="clip", method="last")
    gif, png = result.files
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.n_frames == 8 and im.size == (256, 256)
    with Image.open(png) as im:
        assert im.format == "PNG"
    assert result.map.shape == (8, 32, 32)


def test_bad_arguments(tmp_path: Path) -> None:
    model = vit3d.create_model("vit_tiny_patch16_3d", img_size=(8, 32, 32), patch_size=(2, 8, 8), num_classes=2,
                               embed_dim=48, depth=1, num_heads=3)
    with pytest.raises(ValueError, match="kind"):
        explain_sample(model, torch.randn(3, 8, 32, 32), kind="image", classes=["a", "b"], out_dir=tmp_path,
                       stem="x")
    with pytest.raises(ValueError, match=r"\(C, \*spatial\)"):
        explain_sample(model, torch.randn(8, 32, 32), kind="clip", classes=["a", "b"], out_dir=tmp_path, stem="x")


ROI = (8, 16, 16)


@pytest.fixture(scope="module")
def small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return vit3d.create_model("vit_tiny_patch16_3d", img_size=ROI, patch_size=(4, 8, 8), in_chans=1, num_classes=2,
                              embed_dim=24, depth=2, num_heads=2).eval()


def test_one_window_is_the_plain_explanation(small_model: torch.nn.Module) -> None:
    x = torch.randn(1, 1, *ROI)
    ours, plain = explain_sliding(small_model, x), explain(small_model, x)
    torch.testing.assert_close(ours.map, plain.map, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ours.logits, plain.logits, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("aggregate", ["mean", "attention"])
def test_stitching_is_the_weighted_average_of_the_window_maps(small_model: torch.nn.Module, aggregate: str) -> None:
    """Two windows along W (0:16 and 8:24), constant blend: a hand computation of the overlap average."""
    x = torch.randn(1, 1, 8, 16, 24)
    out = explain_sliding(small_model, x, overlap=0.5, aggregate=aggregate, blend="constant")
    left, right = explain(small_model, x[..., :16]), explain(small_model, x[..., 8:])
    z = torch.stack([left.logits, right.logits], 1)  # (1, 2, classes)
    w = torch.ones(1, 2) if aggregate == "mean" else 2 * z.max(2).values.softmax(1)
    expected = torch.zeros(1, 8, 16, 24)
    count = torch.zeros(1, 8, 16, 24)
    expected[..., :16] += w[:, 0] * left.map
    expected[..., 8:] += w[:, 1] * right.map
    count[..., :16] += 1
    count[..., 8:] += 1
    torch.testing.assert_close(out.map, expected / count, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.logits, (w[..., None] / 2 * z).sum(1), atol=1e-5, rtol=1e-5)


def _foreground(vol: np.ndarray) -> np.ndarray:
    lo, hi = float(vol.min()), float(np.quantile(vol, 0.99))
    return vol > lo + 0.1 * (hi - lo)


def test_whole_real_volume_overlay_is_on_the_file_grid_and_covers_the_foreground(small_model: torch.nn.Module,
                                                                                 tmp_path: Path) -> None:
    """nibabel's anatomical.nii (33 x 41 x 25 at 2 mm, x flipped) is larger than the 8 x 16 x 16 model input."""
    from nibabel.testing import data_path

    from vit3d.data.volume import VolumeDataset

    path = Path(data_path) / "anatomical.nii"
    sample = VolumeDataset([], preset="mri", img_size=ROI, spacing=2.0, fov="whole").load_one(path)
    assert tuple(sample["image"].shape[1:]) == (25, 41, 33)  # the whole scan, (D, H, W)
    result = explain_sample(small_model, sample["image"], kind="volume", classes=["a", "b"], out_dir=tmp_path,
                            stem="anat", input_path=path, view="coronal")
    assert result.windows > 1
    written, ref = nib.load(result.files[0]), nib.load(path)
    assert written.shape == ref.shape
    np.testing.assert_allclose(written.affine, ref.affine, atol=1e-5)
    values = np.asarray(written.dataobj)
    fg = _foreground(np.asarray(ref.dataobj, dtype=np.float32))
    assert fg.mean() > 0.5 and (values[fg] > 0).all()
    assert values.max() == pytest.approx(1.0)


def test_dicom_series_from_a_real_volume(small_model: torch.nn.Module, tmp_path: Path) -> None:
    from nibabel.testing import data_path

    from tests.data.helpers import write_dicom_series
    from vit3d.data.io import read_volume
    from vit3d.data.volume import VolumeDataset

    vol = np.asarray(nib.load(Path(data_path) / "anatomical.nii").dataobj)
    series = write_dicom_series(tmp_path / "series", np.ascontiguousarray(vol.transpose(2, 1, 0)).astype(np.int16),
                                spacing=(2.0, 2.0, 2.0))
    sample = VolumeDataset([], preset="mri", img_size=ROI, spacing=2.0, fov="whole").load_one(series)
    result = explain_sample(small_model, sample["image"], kind="volume", classes=["a", "b"], out_dir=tmp_path,
                            stem="series", input_path=series)
    ref = read_volume(series)
    assert result.original_map is not None and result.original_map.shape == tuple(ref.shape[1:])
    np.testing.assert_allclose(nib.load(result.files[0]).affine, ref.affine.numpy(), atol=1e-4)
    fg = _foreground(ref[0].numpy())
    assert (result.original_map[fg] > 0).all()


def test_clip_animation_keeps_the_clip_pace(tmp_path: Path) -> None:
    from PIL import Image

    model = vit3d.create_model("simple_vit_tiny_patch16_3d", img_size=(4, 16, 16), patch_size=(2, 8, 8),
                               num_classes=2, embed_dim=24, depth=1, num_heads=2)
    times = [1.0, 1.1, 1.3, 1.4]  # variable frame rate: gaps 100, 200, 100 ms
    result = explain_sample(model, torch.rand(3, 4, 16, 16), kind="clip", classes=["a", "b"], out_dir=tmp_path,
                            stem="клип", frame_times=times)
    with Image.open(result.files[0]) as im:
        durations = []
        for i in range(im.n_frames):
            im.seek(i)
            durations.append(im.info["duration"])
    assert durations == [100, 200, 100, 100]
    assert result.files[1].name == "клип_montage_rollout.png"
