"""``vit3d explain``: maps written on the input file's grid, overlays that are real images, in-process main()."""

from __future__ import annotations

import csv
from functools import partial
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import vit3d
from pipelines.commands import explain as cmd
from vit3d.explain import resample_to_reference

SIZE = (16, 24, 40)  # model-space (D, H, W): pads D, crops H, pads W of the 16 x 32 x 32 synthetic volumes


@pytest.fixture(scope="module")
def volume_rows(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, str]]:
    from vit3d.data.synthetic import make_volume_dataset

    root = tmp_path_factory.mktemp("vols")
    table = make_volume_dataset(root, num_samples=2, shape=(16, 32, 32))
    with open(table) as f:
        return [{k: str(root / v) if k in ("image", "mask") else v for k, v in row.items()}
                for row in csv.DictReader(f)]


def _prepare(spacing: tuple[float, float, float]):  # noqa: ANN202 - the data engineer's MONAI eval stage
    from vit3d.data.transforms import build_monai_stages

    prepare, _ = build_monai_stages("ct", image_keys=["image"], mask_key="mask", img_size=SIZE, spacing=spacing,
                                    train=False, window=(-200.0, 300.0), on_2d="error", on_4d="error")
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
    result = cmd.explain_sample(model, sample["image"], kind="volume", classes=["sphere", "tube"], out_dir=tmp_path,
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
    result = cmd.explain_sample(model, clip, kind="clip", classes=["up", "down", "left", "right"], out_dir=tmp_path,
                                stem="clip", method="last")
    gif, png = result.files
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.n_frames == 8 and im.size == (256, 256)
    with Image.open(png) as im:
        assert im.format == "PNG"
    assert result.map.shape == (8, 32, 32)


def test_bad_arguments(tmp_path: Path) -> None:
    from vit3d.errors import ConfigError, MissingInputError

    with pytest.raises(MissingInputError, match="--ckpt"):
        cmd.main(["--ckpt", str(tmp_path / "none.ckpt"), "--input", "x.nii.gz", "--out", str(tmp_path)])
    with pytest.raises(ConfigError, match="invalid choice: 'gradcam'"):
        cmd.main(["--ckpt", "a", "--input", "b", "--out", "c", "--method", "gradcam"])
    model = vit3d.create_model("vit_tiny_patch16_3d", img_size=(8, 32, 32), patch_size=(2, 8, 8), num_classes=2,
                               embed_dim=48, depth=1, num_heads=3)
    with pytest.raises(ValueError, match="kind"):
        cmd.explain_sample(model, torch.randn(3, 8, 32, 32), kind="image", classes=["a", "b"], out_dir=tmp_path,
                           stem="x")
    with pytest.raises(ValueError, match=r"\(C, \*spatial\)"):
        cmd.explain_sample(model, torch.randn(8, 32, 32), kind="clip", classes=["a", "b"], out_dir=tmp_path,
                           stem="x")


def _checkpoint(table: Path, path: Path) -> Path:
    """A checkpoint laid out as `vit3d fit` writes it (state dict plus both modules' saved hyperparameters)."""
    from pipelines.datamodules import VolumeDataModule
    from pipelines.module import ClassificationModule
    from pipelines.networks import preset_class
    from vit3d.data import VolumeDataset

    dm = VolumeDataModule(str(table), dataset=partial(VolumeDataset, img_size=(16, 32, 32), spacing=[2.0, 1.0, 1.0]),
                          augment=False, validate_files=False)
    net = preset_class("vit_tiny_patch16_3d")(patch_size=[4, 8, 8], embed_dim=48, depth=2, num_heads=3,
                                              num_classes=2, in_chans=1, img_size=[16, 32, 32])
    module = ClassificationModule(net, class_names=["sphere", "tube"], lr_scheduler=None)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "datamodule_hyper_parameters": dict(dm.hparams)}, path)
    return path


def test_main_end_to_end(volume_rows: list[dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    table = Path(volume_rows[0]["image"]).parent.parent / "dataset.csv"
    ckpt = _checkpoint(table, tmp_path / "tiny.ckpt")
    image = volume_rows[1]["image"]
    assert cmd.main(["--ckpt", str(ckpt), "--input", image, "--out", str(tmp_path / "out"), "--method", "last"]) == 0
    printed = capsys.readouterr().out
    assert "predicted: sphere" in printed or "predicted: tube" in printed
    nifti = tmp_path / "out" / f"{Path(image).name[:-7]}_attn_last.nii.gz"
    assert f"wrote {nifti}" in printed
    written, ref = nib.load(nifti), nib.load(image)
    assert written.shape == ref.shape
    np.testing.assert_allclose(written.affine, ref.affine, atol=1e-5)
    assert (tmp_path / "out" / f"{Path(image).name[:-7]}_montage_last.png").is_file()


def test_main_end_to_end_clip(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A clip checkpoint: the command decodes the mp4 with the eval preprocessing and writes a GIF overlay."""
    from PIL import Image

    from pipelines.datamodules import VideoDataModule
    from pipelines.module import ClassificationModule
    from pipelines.networks import preset_class
    from vit3d.data import VideoClipDataset
    from vit3d.data.synthetic import make_clip_dataset

    table = make_clip_dataset(tmp_path / "clips", num_samples=4, frames=8, size=(32, 32))
    with open(table) as f:
        video = str(table.parent / next(csv.DictReader(f))["path"])
    dm = VideoDataModule(str(table), dataset=partial(VideoClipDataset, frames=8, stride=1, img_size=(32, 32)),
                         augment=False, validate_files=False)
    net = preset_class("vit_tiny_patch16_3d")(patch_size=[2, 8, 8], embed_dim=48, depth=2, num_heads=3,
                                              num_classes=4, in_chans=3, img_size=[8, 32, 32])
    module = ClassificationModule(net, class_names=["down", "left", "right", "up"], lr_scheduler=None)
    ckpt = tmp_path / "clip.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "datamodule_hyper_parameters": dict(dm.hparams)}, ckpt)
    assert cmd.main(["--ckpt", str(ckpt), "--input", video, "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    gif = tmp_path / "out" / f"{Path(video).stem}_attn_rollout.gif"
    assert "predicted: " in printed and f"wrote {gif}" in printed
    with Image.open(gif) as im:
        assert im.n_frames == 8 and im.size == (256, 256)
