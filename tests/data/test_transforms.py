"""Volume presets: field of view (resize / foreground / crop / whole) and typed augmentation, both backends."""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from vit3d.data.transforms import Augmentation, build_monai_stages, build_torchio_stages, fit_shape
from vit3d.data.volume import VolumeDataset, load_volume

AFFINE = np.array([[-1.0, 0, 0, 40.0], [0, 1.2, 0, -30.0], [0, 0, 2.0, 10.0], [0, 0, 0, 1]])


@pytest.fixture(scope="module")
def big_scan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A (x, y, z) = (60, 50, 30) 'CT' with a body (0 HU) on air (-1000 HU), larger than the model input."""
    arr = np.full((60, 50, 30), -1000.0, dtype=np.float32)
    arr[10:50, 5:45, 3:27] = 0.0
    arr[40:46, 30:36, 20:24] = 200.0  # a bright spot near a corner of the body
    path = tmp_path_factory.mktemp("big") / "scan.nii.gz"
    nib.save(nib.Nifti1Image(arr, AFFINE), path)
    return path


def _world_of_body(path: Path) -> np.ndarray:
    img = nib.load(path)
    vox = np.argwhere(np.asarray(img.dataobj) > -500)
    return (np.c_[vox, np.ones(len(vox))] @ img.affine.T)[:, :3]


def _inside(sample_image, world: np.ndarray) -> np.ndarray:  # noqa: ANN001 - a MetaTensor
    to_vox = np.linalg.inv(sample_image.affine.numpy())
    idx = (np.c_[world, np.ones(len(world))] @ to_vox.T)[:, :3]
    shape = np.array(sample_image.shape[1:])
    return ((idx > -0.5) & (idx < shape - 0.5)).all(1)


@pytest.mark.parametrize("fov", ["resize", "foreground"])
def test_the_whole_body_is_seen(big_scan: Path, fov: str) -> None:
    s = load_volume(big_scan, preset="ct", img_size=(16, 32, 32), fov=fov)
    assert tuple(s["image"].shape) == (1, 16, 32, 32)
    assert _inside(s["image"], _world_of_body(big_scan)).all()
    crop = load_volume(big_scan, preset="ct", img_size=(16, 32, 32), fov="crop")
    assert _inside(crop["image"], _world_of_body(big_scan)).mean() < 0.6
    if fov == "foreground":  # the body fills the input: more body voxels than with the plain resize
        plain = load_volume(big_scan, preset="ct", img_size=(16, 32, 32), fov="resize")
        assert (s["image"] > 0.3).sum() > (plain["image"] > 0.3).sum()


def test_resize_affine_matches_monai_resize(big_scan: Path) -> None:
    """Oracle: MONAI's own Resize to the same shape gives the same affine and (without anti-aliasing) values."""
    from monai.transforms import LoadImage, Orientation, Resize

    from vit3d.data.transforms import _classes

    img = Orientation("RAS")(LoadImage(image_only=True, ensure_channel_first=True)(str(big_scan)))
    size = (32, 32, 16)  # (x, y, z)
    new, factor = fit_shape(img.shape[1:], size)
    assert factor == 60 / 32 and new == (32, 27, 16)
    ours = _classes()["FitToSized"](["image"], size)({"image": img})["image"]
    theirs = Resize(new, mode="trilinear", anti_aliasing=False)(img)
    np.testing.assert_allclose(ours.affine.numpy(), theirs.affine.numpy(), atol=1e-6)
    # a constant region stays constant through either filter: the body's core agrees exactly
    core = (slice(None), slice(8, 18), slice(5, 14), slice(3, 9))  # inside the body, away from the spot
    np.testing.assert_allclose(ours[core].numpy(), theirs[core].numpy(), atol=1e-3)


def test_resize_inverts_onto_the_file(big_scan: Path) -> None:
    ds = VolumeDataset([], preset="ct", img_size=(16, 32, 32))
    s = ds.load_one(big_scan)
    back = ds.invert(s["image"][0], s)
    ref = nib.load(big_scan)
    assert tuple(back.shape[1:]) == ref.shape
    np.testing.assert_allclose(back.affine.numpy(), ref.affine, atol=1e-5)
    body = np.asarray(ref.dataobj) > -500
    assert (back[0].numpy()[body] > 0.2).mean() > 0.95  # the body comes back where the file has it


def test_whole_keeps_the_scan_and_pads_only_short_axes(big_scan: Path) -> None:
    s = load_volume(big_scan, preset="ct", img_size=(32, 32, 32), fov="whole")
    assert tuple(s["image"].shape) == (1, 32, 50, 60)  # z padded 30 -> 32, y and x untouched


def test_crop_warns_once_per_file(big_scan: Path, caplog: pytest.LogCaptureFixture) -> None:
    ds = VolumeDataset([{"image": str(big_scan), "label": "a"}] * 2, preset="ct", img_size=(16, 16, 16),
                       fov="crop")
    with caplog.at_level(logging.WARNING, logger="vit3d.data"):
        ds[0], ds[1]
    warnings = [r.getMessage() for r in caplog.records if "drops" in r.getMessage()]
    assert len(warnings) == 1 and str(big_scan) in warnings[0] and "fov='resize'" in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vit3d.data"):
        VolumeDataset([{"image": str(big_scan), "label": "a"}], preset="ct", img_size=(16, 16, 16))[0]
    assert not [r for r in caplog.records if "drops" in r.getMessage()]


@pytest.mark.parametrize("fov", ["resize", "foreground", "whole"])
def test_torchio_matches_monai(big_scan: Path, fov: str) -> None:
    kw = dict(preset="ct", img_size=(16, 32, 32), fov=fov)
    a = load_volume(big_scan, **kw)["image"]
    b = load_volume(big_scan, backend="torchio", **kw)["image"]
    assert a.shape == b.shape
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-4)


def test_nibabel_anatomical_volume_is_seen_whole(tmp_path: Path) -> None:
    """A real MR volume (nibabel's test data) larger than the input is shrunk, not cut."""
    from nibabel.testing import data_path

    path = Path(data_path) / "anatomical.nii"  # (33, 41, 25) at 2 mm
    s = load_volume(path, preset="mri", img_size=(16, 16, 16))
    assert tuple(s["image"].shape) == (1, 16, 16, 16)
    ref = nib.load(path)
    corners = np.array([[i, j, k, 1.0] for i in (0, 32) for j in (0, 40) for k in (0, 24)]) @ ref.affine.T
    assert _inside(s["image"], corners[:, :3]).all()


@pytest.mark.parametrize("backend", ["monai", "torchio"])
def test_augmentation_flips_only_the_axes_asked_for(big_scan: Path, backend: str) -> None:
    build = build_monai_stages if backend == "monai" else build_torchio_stages
    only_flip = Augmentation(flip_prob=1.0, affine_prob=0.0, noise_prob=0.0, intensity_prob=0.0)
    kw = dict(image_keys=["image"], mask_key=None, img_size=(16, 32, 32), spacing=None, train=True,
              window=(-160.0, 240.0), on_2d="error", on_4d="error")
    prepare, augment = build("ct", augmentation=only_flip, **kw)
    x = prepare({"image": str(big_scan)})
    y = augment({"image": torch.as_tensor(x["image"]).clone()})["image"]
    np.testing.assert_allclose(torch.as_tensor(y).numpy(), torch.as_tensor(x["image"]).flip(3).numpy())  # W = L-R
    assert Augmentation().flip_axes == (2,) and Augmentation(flip=("si", "lr")).flip_axes == (0, 2)
    _, nothing = build("ct", augmentation=Augmentation(flip=(), affine_prob=0, noise_prob=0, intensity_prob=0), **kw)
    z = nothing({"image": torch.as_tensor(x["image"]).clone()})["image"]
    np.testing.assert_array_equal(torch.as_tensor(z).numpy(), torch.as_tensor(x["image"]).numpy())


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="anatomical axes"):
        Augmentation(flip=("x",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="flip_prob=1.5 is not a probability"):
        Augmentation(flip_prob=1.5)
    with pytest.raises(ValueError, match="gamma"):
        Augmentation(gamma=(1.5, 0.7))
    ds = VolumeDataset([], augmentation={"flip": ["lr", "ap"], "rotate_degrees": 5})  # as a YAML block gives it
    assert ds.augmentation == Augmentation(flip=("lr", "ap"), rotate_degrees=5)
    with pytest.raises(ValueError, match="did you mean.*rotate_degrees"):
        VolumeDataset([], augmentation={"rotate_degree": 5})
    with pytest.raises(ValueError, match="fov"):
        VolumeDataset([], fov="fit")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_dropped_foreground"):
        VolumeDataset([], max_dropped_foreground=2.0)


def test_random_affine_keeps_its_grid_when_the_sample_size_is_fixed() -> None:
    """With img_size (any fov but "whole") MONAI caches the identity grid; the augmented samples are unchanged."""
    from monai import transforms as mt

    aug = Augmentation(affine_prob=1.0, rotate_degrees=10.0, scale=0.1, translate=2.0)
    kw = dict(image_keys=["image"], mask_key=None, spacing=None, train=True, window=(-160.0, 240.0), on_2d="error",
              on_4d="error", augmentation=aug)
    _, augment = build_monai_stages("ct", img_size=(8, 12, 16), **kw)
    affine = next(t for t in augment.transforms if isinstance(t, mt.RandAffined))
    assert affine.rand_affine.cache_grid and affine.rand_affine._cached_grid is not None
    reference = mt.RandAffined(["image"], prob=1.0, rotate_range=(np.radians(10.0),) * 3, scale_range=(0.1,) * 3,
                               translate_range=(2.0,) * 3,
                               mode="bilinear", padding_mode="zeros")
    x = torch.rand(1, 8, 12, 16)
    affine.set_random_state(5)
    reference.set_random_state(5)
    torch.testing.assert_close(affine({"image": x})["image"].as_tensor(), reference({"image": x})["image"].as_tensor())
    _, whole = build_monai_stages("ct", img_size=(8, 12, 16), fov="whole", **kw)
    assert not next(t for t in whole.transforms if isinstance(t, mt.RandAffined)).rand_affine.cache_grid
