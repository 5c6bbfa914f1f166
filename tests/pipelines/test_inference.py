"""Inference from a checkpoint alone: the saved run config rebuilds network and preprocessing; every input given to
``vit3d predict`` gets one CSV row; unreadable or unsafe checkpoints are refused with one clear error."""

from __future__ import annotations

import csv
import shutil
from functools import partial
from pathlib import Path

import lightning
import pytest
import torch

from pipelines.cli import main as vit3d
from pipelines.inference import load_for_inference, read_checkpoint, run_config
from vit3d.errors import CheckpointError, MissingInputError


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A checkpoint laid out as ``vit3d fit`` writes it, and the dataset CSV (no training: weights are random)."""
    from pipelines.datamodules import VolumeDataModule
    from pipelines.module import ClassificationModule
    from pipelines.networks import preset_class
    from vit3d.data import VolumeDataset
    from vit3d.data.synthetic import make_volume_dataset

    root = tmp_path_factory.mktemp("infer")
    table = make_volume_dataset(root / "data", num_samples=6, shape=(8, 16, 16), num_classes=2, seed=0,
                                val_fraction=0.0, test_fraction=0.5)
    dm = VolumeDataModule(str(table), dataset=partial(VolumeDataset, img_size=(8, 16, 16), normalize=(0.5, 0.5)),
                          validate_files=False)
    net = preset_class("vit_tiny_patch16_3d")(patch_size=[4, 8, 8], embed_dim=32, depth=1, num_heads=2,
                                              num_classes=dm.num_classes, in_chans=dm.in_chans, img_size=dm.img_size)
    module = ClassificationModule(net, class_names=dm.classes, lr_scheduler=None)
    ckpt = root / "model.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "datamodule_hyper_parameters": dict(dm.hparams), "pytorch-lightning_version": lightning.__version__},
               ckpt)
    return ckpt, table


def test_run_config_holds_network_and_preprocessing(trained: tuple[Path, Path]) -> None:
    ckpt, _ = trained
    config = run_config(ckpt)
    assert config["model"]["net"]["class_path"] == "pipelines.networks.vit_tiny_patch16_3d"
    assert "num_classes" not in config["model"]["net"]["init_args"]  # linked from the data module again
    assert config["data"]["class_path"] == "pipelines.datamodules.VolumeDataModule"
    data = config["data"]["init_args"]
    assert "data" not in data and data["classes"] == ["sphere", "tube"]
    assert data["dataset"]["init_args"]["normalize"] == (0.5, 0.5)


def test_bundle_matches_the_module_it_was_saved_from(trained: tuple[Path, Path]) -> None:
    ckpt, table = trained
    bundle = load_for_inference(ckpt)
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    for key, value in bundle.module.state_dict().items():
        assert torch.equal(value, state[key]), key
    with table.open(newline="") as f:
        image = str(table.parent / next(csv.DictReader(f))["image"])
    sample = bundle.preprocess(image)
    assert tuple(sample["image"].shape) == (1, 8, 16, 16)
    assert float(sample["image"].min()) < 0  # normalize (0.5, 0.5) from the checkpoint: air is -1
    probs = bundle.predict_file(image)
    assert set(probs) == {"sphere", "tube"} and sum(probs.values()) == pytest.approx(1.0, abs=1e-5)


def test_predict_writes_one_row_per_input_even_for_bad_files(trained: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, table = trained
    folder = tmp_path / "scans"
    folder.mkdir()
    with table.open(newline="") as f:
        good = [table.parent / r["image"] for r in csv.DictReader(f)][:3]
    for path in good:
        shutil.copy(path, folder / path.name)
    (folder / "empty.nii.gz").write_bytes(b"")
    (folder / "truncated.nii.gz").write_bytes(good[0].read_bytes()[:200])
    out = tmp_path / "preds.csv"
    rc = vit3d(["predict", "--ckpt_path", str(ckpt), "--data.init_args.predict_data", str(folder),
                "--predictions.output", str(out), "--trainer.enable_progress_bar", "false",
                "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path / "run"),
                "--trainer.precision", "32-true", "--data.init_args.num_workers", "0"])
    assert rc == 0
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(Path(r["path"]).name for r in rows) == sorted(p.name for p in folder.iterdir())
    by_name = {Path(r["path"]).name: r for r in rows}
    for path in good:
        row = by_name[path.name]
        assert row["error"] == "" and row["label"] in ("sphere", "tube")
        assert float(row["prob_sphere"]) + float(row["prob_tube"]) == pytest.approx(1.0, abs=1e-5)
    for name in ("empty.nii.gz", "truncated.nii.gz"):
        assert by_name[name]["error"] and by_name[name]["label"] == "" and by_name[name]["prob_tube"] == ""


def test_bad_checkpoints_are_refused_with_the_file_named(tmp_path: Path) -> None:
    with pytest.raises(MissingInputError, match="checkpoint not found"):
        read_checkpoint(tmp_path / "none.ckpt")
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"\x80\x02not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt.ckpt"):
        read_checkpoint(corrupt)
    unsafe = tmp_path / "unsafe.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}, "datamodule_hyper_parameters": {},
                "obj": Path("x")}, unsafe)
    with pytest.raises(CheckpointError, match="refused") as err:
        read_checkpoint(unsafe)
    assert "weights_only=False" not in str(err.value)
    bare = tmp_path / "bare.ckpt"
    torch.save({"state_dict": {}}, bare)
    with pytest.raises(CheckpointError, match="not a `vit3d fit` checkpoint"):
        read_checkpoint(bare)
