"""Data modules: the typed dataset factory, per-split keywords, and one report of bad rows across all splits."""

from __future__ import annotations

import csv
from functools import partial
from pathlib import Path

import pytest

from pipelines.datamodules import VideoDataModule, VolumeDataModule, dataset_keywords
from vit3d.data import VideoClipDataset, VolumeDataset
from vit3d.errors import ConfigError, InputError


@pytest.fixture(scope="module")
def volumes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vit3d.data.synthetic import make_volume_dataset

    root = tmp_path_factory.mktemp("volumes")
    return make_volume_dataset(root, num_samples=12, shape=(8, 16, 16), num_classes=2, seed=0,
                               val_fraction=0.25, test_fraction=0.25)


def _with_bad_rows(table: Path, out: Path) -> Path:
    """The table plus a missing file in the training split and an empty file in the test split."""
    with table.open(newline="") as f:
        rows = list(csv.DictReader(f))
    empty = out / "empty.nii.gz"
    empty.write_bytes(b"")
    rows += [{**rows[0], "image": str(out / "gone.nii.gz"), "split": "train"},
             {**rows[0], "image": str(empty), "split": "test"}]
    for row in rows:
        row["image"] = str((table.parent / row["image"]).resolve())
    path = out / "bad.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_dataset_keywords_are_the_library_defaults_updated_by_the_factory() -> None:
    kw = dataset_keywords(partial(VolumeDataset, img_size=(8, 16, 16), preset="mri"), VolumeDataset)
    assert kw["img_size"] == (8, 16, 16) and kw["preset"] == "mri" and kw["on_error"] == "raise"
    assert dataset_keywords(VolumeDataset, VolumeDataset)["backend"] == "monai"


def test_volume_module_links_sizes_from_the_dataset(volumes: Path) -> None:
    dm = VolumeDataModule(str(volumes), dataset=partial(VolumeDataset, img_size=8, image_keys=["image"]))
    assert dm.img_size == [8, 8, 8] and dm.in_chans == 1 and dm.classes == ["sphere", "tube"]
    assert dm.hparams["dataset"] == {"class_path": "vit3d.data.volume.VolumeDataset",
                                     "init_args": {"img_size": 8, "image_keys": ["image"]}}
    with pytest.raises(ConfigError, match="img_size"):
        VolumeDataModule(str(volumes))
    with pytest.raises(ConfigError, match="batch_size"):
        VolumeDataModule(str(volumes), dataset=partial(VolumeDataset, img_size=8), batch_size=0)


def test_training_split_gets_train_true_and_eval_splits_the_same_preprocessing(volumes: Path) -> None:
    dm = VolumeDataModule(str(volumes), dataset=partial(VolumeDataset, img_size=(8, 16, 16)))
    dm.setup("fit")
    assert dm.datasets["train"].train and not dm.datasets["val"].train
    with volumes.open(newline="") as f:
        splits = [r["split"] for r in csv.DictReader(f)]
    assert len(dm.datasets["train"]) == splits.count("train") and len(dm.datasets["val"]) == splits.count("val")
    off = VolumeDataModule(str(volumes), dataset=partial(VolumeDataset, img_size=(8, 16, 16)), augment=False)
    off.setup("fit")
    assert not off.datasets["train"].train


def test_video_multi_view_only_at_test_and_predict(tmp_path: Path) -> None:
    from vit3d.data.synthetic import make_clip_dataset

    table = make_clip_dataset(tmp_path / "clips", num_samples=8, frames=8, size=(32, 32), num_classes=2, seed=0,
                              val_fraction=0.25, test_fraction=0.25)
    dm = VideoDataModule(str(table), dataset=partial(VideoClipDataset, frames=4, img_size=32, num_clips=2,
                                                     num_crops=3, decoder="pyav"))
    assert dm.img_size == [4, 32, 32] and dm.in_chans == 3
    dm.setup("fit")
    dm.setup("test")
    assert dm.datasets["train"].num_clips == dm.datasets["val"].num_clips == 1
    assert dm.datasets["val"].num_crops == 1
    assert dm.datasets["test"].num_clips == 2 and dm.datasets["test"].num_crops == 3


@pytest.mark.parametrize(("stage", "fails"), [("fit", False), ("validate", False), ("test", True)])
def test_clips_without_a_test_split_fit_and_validate(tmp_path: Path, stage: str, fails: bool) -> None:
    """The file check before a run builds every split the data has; a split the stage does not need and the data
    lacks (a clip CSV without test rows) is passed over, and a stage that needs it gets the dataset's own error."""
    import lightning.pytorch as pl
    from lightning.pytorch.trainer.states import TrainerFn

    from vit3d.data.synthetic import make_clip_dataset

    table = make_clip_dataset(tmp_path / "clips", num_samples=6, frames=8, size=(32, 32), num_classes=2, seed=0,
                              val_fraction=0.34, test_fraction=0.0)
    dm = VideoDataModule(str(table), dataset=partial(VideoClipDataset, frames=4, img_size=32, decoder="pyav"))
    dm.trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False)
    dm.trainer.state.fn = TrainerFn(stage)
    if fails:
        with pytest.raises(ConfigError, match="has no test split"):
            dm.prepare_data()
    else:
        dm.prepare_data()
        assert dm.skipped == {}


def test_bad_rows_of_every_split_in_one_report(volumes: Path, tmp_path: Path) -> None:
    bad = _with_bad_rows(volumes, tmp_path)
    dm = VolumeDataModule(str(bad), dataset=partial(VolumeDataset, img_size=(8, 16, 16)))
    with pytest.raises(InputError) as err:
        dm.validate_splits()
    text = str(err.value)
    assert "2 unusable row(s) across 2 split(s)" in text
    assert "train split" in text and "gone.nii.gz" in text and "test split" in text and "empty.nii.gz" in text
    skip = VolumeDataModule(str(bad), dataset=partial(VolumeDataset, img_size=(8, 16, 16), on_error="skip"))
    with pytest.warns(UserWarning, match="skipping 2 unusable row"):
        skip.validate_splits()
    assert skip.skipped == {"train": 1, "test": 1}


def test_fit_reports_all_splits_before_the_first_step(volumes: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    import yaml

    from pipelines.cli import main as vit3d

    bad = _with_bad_rows(volumes, tmp_path)
    config = {
        "trainer": {"accelerator": "cpu", "max_steps": 2, "enable_progress_bar": False, "logger": False,
                    "default_root_dir": str(tmp_path / "run"), "precision": "32-true"},
        "model": {"net": {"class_path": "pipelines.networks.vit_tiny_patch16_3d",
                          "init_args": {"embed_dim": 32, "depth": 1, "num_heads": 2, "patch_size": [4, 8, 8]}}},
        "data": {"class_path": "pipelines.datamodules.VolumeDataModule",
                 "init_args": {"data": str(bad), "dataset": {"img_size": [8, 16, 16]}, "num_workers": 0,
                               "batch_size": 2}},
    }
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(config))
    assert vit3d(["fit", "-c", str(cfg)]) == 2
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("vit3d fit: error: "))
    assert "train split" in line and "test split" in line and "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoints").exists()  # stopped before the first step

    with pytest.warns(UserWarning, match="skipping 2 unusable row"):
        assert vit3d(["fit", "-c", str(cfg), "--data.init_args.dataset.init_args.on_error", "skip"]) == 0
    assert "  skipped: 1 in train, 1 in test (unusable rows" in capsys.readouterr().out  # the end-of-fit summary


def test_pin_memory_auto_pins_for_cuda_trainers_only(volumes: Path) -> None:
    import lightning.pytorch as pl
    from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator
    from lightning.pytorch.cli import instantiate_module

    from pipelines.datamodules import _ClassificationDataModule, pin_memory_for

    assert pin_memory_for("auto", CUDAAccelerator()) is True
    assert pin_memory_for("auto", CPUAccelerator()) is False
    assert pin_memory_for("auto", None) is False  # no trainer attached
    assert pin_memory_for(True, CPUAccelerator()) is True and pin_memory_for(False, CUDAAccelerator()) is False
    dataset = {"class_path": "vit3d.data.VolumeDataset", "init_args": {"img_size": [8, 16, 16]}}
    for setting, expected in (("auto", False), (True, True), (False, False)):
        # as a YAML config gives it (true/false/auto), through the CLI's parser
        dm = instantiate_module(_ClassificationDataModule, {
            "_class_path": "pipelines.datamodules.VolumeDataModule", "data": str(volumes), "dataset": dataset,
            "pin_memory": setting, "num_workers": 0, "validate_files": False})
        assert dm.pin_memory == setting
        dm.trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                                enable_progress_bar=False)
        dm.setup("fit")
        assert dm.train_dataloader().pin_memory is expected and dm.val_dataloader().pin_memory is expected
    assert VolumeDataModule(str(volumes), dataset=partial(VolumeDataset, img_size=8)).pin_memory == "auto"
    with pytest.raises(ConfigError, match="pin_memory='yes'"):
        VolumeDataModule(str(volumes), dataset=partial(VolumeDataset, img_size=8), pin_memory="yes")
