"""VolumeDataset: the sample contract, preprocessing against NumPy/nibabel oracles, backends, caching, inversion."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from nibabel.testing import data_path

from vit3d.data import VolumeDataset, collate, load_volume
from vit3d.data.seeding import SampleKey

from .helpers import write_nifti


def _rows(table: Path) -> list[dict]:
    with table.open(newline="") as f:
        return list(csv.DictReader(f))


def _expected_ct(path: str | Path, window: tuple[float, float] = (-160.0, 240.0)) -> np.ndarray:
    """Oracle: nibabel canonical (RAS) orientation, HU window to [0, 1], axes (x, y, z) -> (z, y, x)."""
    img = nib.as_closest_canonical(nib.load(path))
    hu = img.get_fdata()
    return np.clip((hu - window[0]) / (window[1] - window[0]), 0, 1).transpose(2, 1, 0)[None]


def test_sample_contract_and_ct_oracle(volume_csv: Path) -> None:
    ds = VolumeDataset(volume_csv, split="train", img_size=(16, 32, 32))
    rows = [r for r in _rows(volume_csv) if r["split"] == "train"]
    assert len(ds) == len(rows) and ds.classes == ["ring", "sphere", "tube"]
    assert (ds.num_classes, ds.in_chans, ds.img_size) == (3, 1, (16, 32, 32))
    for i in (0, 1):
        s = ds[i]
        assert set(s) == {"image", "label", "id", "view"}
        assert s["image"].dtype == torch.float32 and tuple(s["image"].shape) == (1, 16, 32, 32)
        assert s["label"].dtype == torch.int64 and s["label"].ndim == 0
        assert int(s["label"]) == ds.classes.index(rows[i]["label"]) and s["view"] == 0
        assert s["id"] == str(volume_csv.parent / rows[i]["image"])
        np.testing.assert_allclose(s["image"].numpy(), _expected_ct(s["id"]), atol=1e-6)


def test_crop_pad_and_resample(volume_csv: Path) -> None:
    path = volume_csv.parent / _rows(volume_csv)[0]["image"]
    full = _expected_ct(path)  # (1, 16, 32, 32)
    s = load_volume(path, img_size=(20, 28, 32), fov="crop")  # pad D by 2 + 2, crop H by 2 + 2
    expected = np.zeros((1, 20, 28, 32), dtype=np.float32)
    expected[:, 2:18] = full[:, :, 2:30]
    np.testing.assert_allclose(s["image"].numpy(), expected, atol=1e-6)
    r = load_volume(path, spacing=(2.0, 2.0, 2.0))  # 2 mm isotropic: in-plane halves
    assert tuple(r["image"].shape) == (1, 16, 16, 16)
    np.testing.assert_allclose(np.linalg.norm(r["image"].affine.numpy()[:3, :3], axis=0), (2.0, 2.0, 2.0), atol=1e-5)
    # mean intensity is preserved by resampling up to interpolation error
    assert abs(float(r["image"].mean()) - float(full.mean())) < 0.02


def test_invert_maps_back_to_the_file(volume_csv: Path) -> None:
    path = volume_csv.parent / _rows(volume_csv)[1]["image"]
    ds = VolumeDataset([], img_size=(12, 40, 24), fov="crop")
    s = ds.load_one(path)
    back = ds.invert(s["image"][0], s)
    img = nib.load(path)
    assert tuple(back.shape) == (1, *img.shape)
    np.testing.assert_allclose(back.affine.numpy(), img.affine, atol=1e-5)
    hu = img.get_fdata()
    scaled = np.clip((hu + 160) / 400, 0, 1)
    # the crop along D (16 -> 12) and W (32 -> 24) loses voxels; they come back as 0, the rest exactly
    kept = back[0].numpy() != 0
    assert kept.sum() >= 0.5 * (scaled != 0).sum()  # (12 * 24) / (16 * 32) = 0.56 of the field is kept
    np.testing.assert_allclose(back[0].numpy()[kept], scaled[kept], atol=1e-6)
    with pytest.raises(ValueError, match="does not match the sample's"):
        ds.invert(torch.zeros(3, 3, 3), s)


def test_torchio_backend_matches_monai(volume_csv: Path) -> None:
    kw = dict(split="val", img_size=(14, 36, 30), fov="crop")
    a, b = VolumeDataset(volume_csv, **kw), VolumeDataset(volume_csv, backend="torchio", **kw)
    for i in range(len(a)):
        x, y = a[i]["image"], b[i]["image"]
        assert x.shape == y.shape == (1, 14, 36, 30)
        np.testing.assert_allclose(x.numpy(), y.numpy(), atol=1e-6)
    # resampling: both reach the target spacing and keep the intensities (their output grids differ by a
    # voxel at the border: MONAI rounds the output size, TorchIO floors it)
    for backend in ("monai", "torchio"):
        r = VolumeDataset(volume_csv, split="val", spacing=(2.0, 1.5, 1.5), backend=backend)[0]["image"]
        assert abs(r.shape[2] - 32 / 1.5) <= 1 and r.shape[1] == 16
        assert abs(float(r.mean()) - float(a[0]["image"].mean())) < 0.02


@pytest.mark.parametrize("backend", ["monai", "torchio"])
def test_mri_zscore_over_foreground(tmp_path: Path, backend: str) -> None:
    rng = np.random.default_rng(0)
    arr = np.zeros((20, 20, 10), dtype=np.float32)
    arr[4:16, 4:16, 2:8] = rng.normal(300.0, 40.0, size=(12, 12, 6))
    path = write_nifti(tmp_path / "t1.nii.gz", arr)
    s = load_volume(path, preset="mri", backend=backend)
    img, fg = s["image"][0].numpy(), arr.transpose(2, 1, 0) > 0
    np.testing.assert_allclose([img[fg].mean(), img[fg].std()], [0.0, 1.0], atol=1e-3)
    assert np.all(img[~fg] == 0)


@pytest.mark.parametrize("backend", ["monai", "torchio"])
@pytest.mark.parametrize("preset", ["ct", "mri"])
def test_training_augmentation_is_random_and_seeded(volume_csv: Path, backend: str, preset: str) -> None:
    ds = VolumeDataset(volume_csv, split="train", img_size=(16, 32, 32), train=True, preset=preset, backend=backend)
    outs = [ds[0]["image"] for _ in range(4)]
    assert all(o.shape == (1, 16, 32, 32) and torch.isfinite(o).all() for o in outs)
    assert any(not torch.equal(outs[0], o) for o in outs[1:]), "augmentation must change the sample"
    torch.manual_seed(123)
    again = VolumeDataset(volume_csv, split="train", img_size=(16, 32, 32), train=True, preset=preset,
                          backend=backend)
    first = [again[0]["image"] for _ in range(2)]
    torch.manual_seed(123)
    again2 = VolumeDataset(volume_csv, split="train", img_size=(16, 32, 32), train=True, preset=preset,
                           backend=backend)
    assert all(torch.equal(p, q) for p, q in zip(first, [again2[0]["image"] for _ in range(2)], strict=True))


@pytest.mark.parametrize("backend", ["monai", "torchio"])
def test_sample_keys_seed_the_augmentation(volume_csv: Path, backend: str) -> None:
    """SampleKey(index, seed): the same seed gives the same augmented sample in any dataset copy and order."""
    a = VolumeDataset(volume_csv, split="train", img_size=(16, 32, 32), train=True, backend=backend)
    b = VolumeDataset(volume_csv, split="train", img_size=(16, 32, 32), train=True, backend=backend)
    first = a[SampleKey(1, 11)]["image"]
    for _ in range(3):
        b[1]  # the dataset's own stream moves on; a seeded draw does not depend on it
    assert torch.equal(first, b[SampleKey(1, 11)]["image"]) and torch.equal(first, a[SampleKey(1, 11)]["image"])
    assert any(not torch.equal(first, a[SampleKey(1, s)]["image"]) for s in (12, 13, 14))


def test_extra_image_columns_become_channels(volume_csv: Path) -> None:
    rows = [r for r in _rows(volume_csv)][:3]
    data = [{"t1": str(volume_csv.parent / r["image"]), "t2": str(volume_csv.parent / r["mask"]),
             "label": r["label"]} for r in rows]
    ds = VolumeDataset(data, image_keys=("t1", "t2"), preset=None, img_size=(16, 32, 32))
    s = ds[0]
    assert ds.in_chans == 2 and tuple(s["image"].shape) == (2, 16, 32, 32)
    mask = nib.as_closest_canonical(nib.load(data[0]["t2"])).get_fdata().transpose(2, 1, 0)
    np.testing.assert_array_equal(s["image"][1].numpy(), mask)
    hu = nib.as_closest_canonical(nib.load(data[0]["t1"])).get_fdata().transpose(2, 1, 0)
    np.testing.assert_array_equal(s["image"][0].numpy(), hu)


def test_mask_key_follows_the_geometry(volume_csv: Path) -> None:
    ds = VolumeDataset(volume_csv, mask_key="mask", img_size=(16, 32, 32), train=True)
    s = ds[0]
    assert tuple(s["mask"].shape) == (1, 16, 32, 32)
    assert set(np.unique(s["mask"].numpy())) <= {0.0, 1.0}
    # the lesion is bright in the image wherever the (nearest-resampled) mask says so
    lesion, rest = s["image"][s["mask"] > 0], s["image"][(s["mask"] == 0) & (s["image"] > 0.3)]
    assert lesion.mean() > rest.mean() + 0.1


@pytest.mark.parametrize("cache", ["memory", "disk"])
def test_cache_gives_the_same_samples(volume_csv: Path, tmp_path: Path, cache: str) -> None:
    ref = VolumeDataset(volume_csv, split="val", img_size=(16, 32, 32))
    ds = VolumeDataset(volume_csv, split="val", img_size=(16, 32, 32), cache=cache, cache_dir=tmp_path)
    if cache == "memory":  # filled at construction, before any DataLoader worker forks
        assert len(ds._dataset._cache) == len(ds)
    for i in range(len(ds)):
        assert torch.equal(torch.as_tensor(ds[i]["image"]), torch.as_tensor(ref[i]["image"]))
    if cache == "disk":
        files = sorted(tmp_path.glob("*.pt"))
        assert len(files) == len(ds)
        again = VolumeDataset(volume_csv, split="val", img_size=(16, 32, 32), cache="disk", cache_dir=tmp_path)
        assert torch.equal(torch.as_tensor(again[0]["image"]), torch.as_tensor(ref[0]["image"]))
        assert len(list(tmp_path.glob("*.pt"))) == len(ds), "a second dataset reuses the cache"
        other = VolumeDataset(volume_csv, split="val", img_size=(16, 24, 24), cache="disk", cache_dir=tmp_path)
        assert tuple(other[0]["image"].shape) == (1, 16, 24, 24), "other settings must not hit the old cache"


def test_disk_cache_notices_a_changed_file(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "v.nii.gz", np.full((8, 8, 4), 40.0, dtype=np.float32))
    kw = dict(preset="ct", cache="disk", cache_dir=tmp_path / "cache")
    assert float(VolumeDataset([{"image": str(path), "label": "a"}], **kw)[0]["image"].mean()) == pytest.approx(0.5)
    write_nifti(path, np.full((8, 8, 4), 240.0, dtype=np.float32))
    os.utime(path, (1e9, 1e9))  # a different mtime even on coarse file systems
    assert float(VolumeDataset([{"image": str(path), "label": "a"}], **kw)[0]["image"].mean()) == pytest.approx(1.0)


def test_user_transform_replaces_the_preset(volume_csv: Path) -> None:
    seen = {}

    def transform(d: dict) -> dict:
        seen["shape"] = tuple(d["image"].shape)
        d["image"] = d["image"][:, :8] * 0 + 1
        return d

    ds = VolumeDataset(volume_csv, transform=transform)
    s = ds[0]
    assert seen["shape"] == (1, 16, 32, 32) and tuple(s["image"].shape) == (1, 8, 32, 32)
    assert torch.all(s["image"] == 1)


def test_dataloader_with_workers_and_collate(volume_csv: Path) -> None:
    ds = VolumeDataset(volume_csv, img_size=(16, 32, 32), train=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate)
    batches = list(loader)
    assert sum(len(b["id"]) for b in batches) == len(ds)
    b = batches[0]
    assert type(b["image"]) is torch.Tensor and tuple(b["image"].shape) == (4, 1, 16, 32, 32)
    assert b["label"].dtype == torch.int64 and b["view"].tolist() == [0, 0, 0, 0]


def test_nibabel_shipped_file_through_the_dataset() -> None:
    path = os.path.join(data_path, "anatomical.nii")
    s = load_volume(path, preset=None)
    expected = nib.as_closest_canonical(nib.load(path)).get_fdata().transpose(2, 1, 0)
    np.testing.assert_allclose(s["image"][0].numpy(), expected, atol=1e-4)


def test_bad_arguments(volume_csv: Path) -> None:
    with pytest.raises(ValueError, match="backend='monia' is not one of .*did you mean 'monai'"):
        VolumeDataset(volume_csv, backend="monia")
    with pytest.raises(ValueError, match="cache='ram' is not one of"):
        VolumeDataset(volume_csv, cache="ram")
    with pytest.raises(ValueError, match="img_size"):
        VolumeDataset(volume_csv, img_size=(16, 32))
    with pytest.raises(ValueError, match="no 'split' column"):
        VolumeDataset([{"image": "a.nii.gz", "label": "x"}], split="train")
    with pytest.raises(ValueError, match="column 'flair' is missing"):
        VolumeDataset(volume_csv, image_keys=("image", "flair"))
    with pytest.raises(FileNotFoundError, match=r"dataset table not found \(missing.csv\)"):
        VolumeDataset("missing.csv")
    with pytest.raises(ValueError, match=r"window \(240.0, -160.0\)"):
        VolumeDataset(volume_csv, window=(240.0, -160.0))


def test_mixed_formats_in_one_table(tmp_path: Path) -> None:
    """A DICOM series folder, NRRD and MHA files and NIfTI in one CSV give the same sample for the same volume."""
    from .helpers import write_dicom_series, write_sitk

    vol = (np.random.default_rng(0).normal(40, 30, size=(6, 10, 12))).astype(np.int16)  # (z, y, x) in HU
    write_dicom_series(tmp_path / "dcm", vol, spacing=(2.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    write_sitk(tmp_path / "v.nrrd", vol, spacing_xyz=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0))
    write_sitk(tmp_path / "v.mha", vol, spacing_xyz=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0))
    nib.save(nib.Nifti1Image(vol.transpose(2, 1, 0), np.diag([-1.0, -1.0, 2.0, 1.0])), tmp_path / "v.nii.gz")
    table = tmp_path / "t.csv"
    table.write_text("image,label\ndcm,a\nv.nrrd,a\nv.mha,b\nv.nii.gz,b\n")
    ds = VolumeDataset(table, img_size=(6, 10, 12))
    samples = [ds[i]["image"] for i in range(4)]
    expected = np.clip((vol.astype(np.float32) + 160) / 400, 0, 1)[None, :, ::-1, ::-1]  # LPS -> RAS flips y, x
    for s in samples:
        np.testing.assert_allclose(s.numpy(), expected, atol=1e-6)
    report = ds.validate()
    assert not report and str(report) == f"all 4 rows of {table} are usable"
