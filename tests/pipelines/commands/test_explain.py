"""``vit3d explain`` in process: checkpoints as `fit` writes them, inputs found like predict's, one-line errors."""

from __future__ import annotations

import csv
from functools import partial
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from pipelines.commands import explain as cmd
from vit3d.errors import ConfigError


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="checkpoint does not exist"):
        cmd.main(["--ckpt", str(tmp_path / "none.ckpt"), "--input", "x.nii.gz", "--out", str(tmp_path)])
    with pytest.raises(ConfigError, match="gradcam"):
        cmd.main(["--ckpt", "a", "--input", "b", "--out", "c", "--method", "gradcam"])


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


def test_a_folder_of_dicom_series_is_explained_whole(volume_rows: list[dict[str, str]], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    """Two DICOM series (no file suffixes) larger than the model input: one map per series, on its own grid."""
    from tests.data.helpers import write_dicom_series
    from vit3d.data.io import read_volume

    table = Path(volume_rows[0]["image"]).parent.parent / "dataset.csv"
    ckpt = _checkpoint(table, tmp_path / "tiny.ckpt")
    rng = np.random.default_rng(0)
    for name in ("p1", "p2"):
        vol = rng.normal(0, 50, size=(24, 40, 48)).astype(np.int16)  # (slices, rows, cols): larger than (16, 32, 32)
        series = write_dicom_series(tmp_path / "site" / name / "ct", vol, spacing=(2.0, 1.0, 1.0))
        for f in series.iterdir():
            f.rename(f.with_suffix(""))
    (tmp_path / "site" / "notes.txt").write_text("not an image")
    assert cmd.main(["--ckpt", str(ckpt), "--input", str(tmp_path / "site"), "--out", str(tmp_path / "out"),
                     "--view", "coronal"]) == 0
    printed = capsys.readouterr().out
    for name in ("p1", "p2"):
        series = tmp_path / "site" / name / "ct"
        assert f"{series}: predicted: " in printed and "windows)" in printed
        written = nib.load(tmp_path / "out" / f"{name}_ct_attn_rollout.nii.gz")  # both named ct: prefixed
        ref = read_volume(series)
        assert written.shape == tuple(ref.shape[1:])
        np.testing.assert_allclose(written.affine, ref.affine.numpy(), atol=1e-4)
        assert (np.asarray(written.dataobj) > 0).all()  # the whole scan is explained, not a crop of it


def test_2d_input_is_one_line_error_naming_the_option(volume_rows: list[dict[str, str]], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    from pipelines.cli import main as vit3d_main

    table = Path(volume_rows[0]["image"]).parent.parent / "dataset.csv"
    ckpt = _checkpoint(table, tmp_path / "tiny.ckpt")
    flat = tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((40, 36)).astype(np.float32), np.eye(4)), flat)
    code = vit3d_main(["explain", "--ckpt", str(ckpt), "--input", str(flat), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("vit3d explain: error: 2D image") and "--on-2d slice" in err[0]
    assert cmd.main(["--ckpt", str(ckpt), "--input", str(flat), "--out", str(tmp_path / "o"), "--on-2d",
                     "slice"]) == 0
    assert (tmp_path / "o" / "slice_montage_rollout.png").is_file()
