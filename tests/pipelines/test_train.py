"""`vit3d fit | validate | test | predict` driven in-process with argv lists on tiny synthetic volumes."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from pipelines.cli import main as vit3d
from pipelines.inference import load_for_inference
from tests.pipelines.helpers import read_rows, write_yaml

REPO = Path(__file__).resolve().parents[2]
PROBES = Path(__file__).parent / "probes"
TINY_MODEL = {"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": [4, 8, 8]}


def tiny_config(csv_path: Path, root: Path, **trainer: object) -> dict:
    return {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "precision": "32-true", "enable_progress_bar": False,
                    "enable_model_summary": False, "log_every_n_steps": 1, "max_steps": 4,
                    "default_root_dir": str(root), **trainer},
        "model": {"net": {"class_path": "pipelines.networks.vit_tiny_patch16_3d", "init_args": TINY_MODEL}},
        "data": {"class_path": "pipelines.datamodules.VolumeDataModule",
                 "init_args": {"data": str(csv_path), "dataset": {"img_size": [16, 32, 32]}, "batch_size": 4,
                               "num_workers": 0}},
    }


def test_fit_validate_test_predict(volumes: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write_yaml(tmp_path / "tiny.yaml", tiny_config(volumes, tmp_path / "run", val_check_interval=2))
    assert vit3d(["fit", "-c", str(cfg)]) == 0
    best, last = tmp_path / "run/checkpoints/best.ckpt", tmp_path / "run/checkpoints/last.ckpt"
    assert best.is_file() and last.is_file()
    ckpt = torch.load(last, weights_only=True)  # loads without executing code from the file
    assert ckpt["global_step"] in (2, 4)  # saved at the last validation
    net = ckpt["hyper_parameters"]["net"]
    assert net["class_path"] == "pipelines.networks.vit_tiny_patch16_3d"
    assert net["init_args"]["num_classes"] == 2 and net["init_args"]["in_chans"] == 1
    assert ckpt["hyper_parameters"]["class_names"] == ["sphere", "tube"]
    assert list(net["init_args"]["img_size"]) == [16, 32, 32]
    logs = sorted((tmp_path / "run/logs").glob("version_*"))
    metrics = read_rows(logs[-1] / "metrics.csv")
    assert {"train/loss", "val/acc", "val/bal_acc", "val/f1", "val/auroc"} <= set(metrics[0])
    assert list(logs[-1].glob("events.out.tfevents.*")), "TensorBoard events missing"

    assert vit3d(["validate", "-c", str(cfg), "--ckpt_path", str(best)]) == 0
    assert vit3d(["test", "-c", str(cfg), "--ckpt_path", str(best)]) == 0
    out = capsys.readouterr().out
    assert "test/acc" in out and "val/acc" in out

    # predict: one row per test volume, label = arg-max class, probabilities sum to 1 and match the bundle
    preds = tmp_path / "preds.csv"
    assert vit3d(["predict", "-c", str(cfg), "--ckpt_path", str(best), "--predictions.output", str(preds)]) == 0
    rows = read_rows(preds)
    assert list(rows[0]) == ["path", "label", "prob_sphere", "prob_tube", "error"]
    test_files = {str((volumes.parent / r["image"]).resolve()) for r in read_rows(volumes) if r["split"] == "test"}
    assert {str(Path(r["path"]).resolve()) for r in rows} == test_files
    bundle = load_for_inference(best)
    assert bundle.kind == "volume" and bundle.class_names == ["sphere", "tube"]
    for row in rows:
        p = [float(row["prob_sphere"]), float(row["prob_tube"])]
        assert sum(p) == pytest.approx(1.0, abs=1e-5)
        assert row["label"] == ["sphere", "tube"][p.index(max(p))]
        ref = bundle.predict_file(row["path"])  # load_one path: the same eval preprocessing
        assert ref["sphere"] == pytest.approx(p[0], abs=1e-5)

    # predict from the checkpoint alone: data settings and classes come from it
    preds2 = tmp_path / "preds2.csv"
    one = rows[0]["path"]
    assert vit3d(["predict", "--ckpt_path", str(best), "--data.predict_data", one, "--predictions.output", str(preds2),
                  "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path / "p"),
                  "--trainer.precision", "32-true"]) == 0
    again = read_rows(preds2)
    assert len(again) == 1 and float(again[0]["prob_sphere"]) == pytest.approx(float(rows[0]["prob_sphere"]))

    # with no root given, a checkpoint in <root>/checkpoints/ puts the CSV and the logs beside its run, not in the
    # working directory, and the restored checkpoint callback keeps its directory (no "dirpath has changed")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    runs_before = len(list((tmp_path / "run/logs").glob("version_*")))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert vit3d(["predict", "--ckpt_path", str(best), "--data.predict_data", one,
                      "--trainer.enable_progress_bar", "false", "--trainer.precision", "32-true"]) == 0
    assert not [w for w in caught if "dirpath has changed" in str(w.message)]
    assert len(read_rows(tmp_path / "run/predictions.csv")) == 1
    assert len(list((tmp_path / "run/logs").glob("version_*"))) == runs_before + 1
    assert not list(elsewhere.iterdir())


def test_resume_mid_epoch_matches_uninterrupted(volumes: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(PROBES))
    # 8 training volumes, batch 2: 4 steps per epoch, 3 epochs; mixup on to check its draws resume too.
    base = tiny_config(volumes, tmp_path / "a", max_steps=-1, max_epochs=3)
    base["data"]["init_args"].update(batch_size=2, augment=False)
    base["model"].update(mixup_alpha=0.4, cutmix_alpha=1.0)
    every_step = ["--last_checkpoint.every_n_train_steps", "1"]
    a = write_yaml(tmp_path / "a.yaml", base)
    assert vit3d(["fit", "-c", str(a), *every_step]) == 0

    killed = dict(base, trainer={**base["trainer"], "default_root_dir": str(tmp_path / "b"), "callbacks": [
        {"class_path": "vit3d_test_probes.CrashAtStep", "init_args": {"step": 7}}]})
    b = write_yaml(tmp_path / "b.yaml", killed)
    with pytest.raises(RuntimeError, match="simulated kill"):
        vit3d(["fit", "-c", str(b), *every_step])
    last_b = tmp_path / "b/checkpoints/last.ckpt"
    state = torch.load(last_b, weights_only=True)
    assert state["global_step"] == 6 and state["epoch"] == 1  # mid-epoch: 2 of the 4 steps of epoch 1 done

    resumed = dict(base, trainer={**base["trainer"], "default_root_dir": str(tmp_path / "b")})
    c = write_yaml(tmp_path / "c.yaml", resumed)
    assert vit3d(["fit", "-c", str(c), *every_step, "--ckpt_path", "last"]) == 0

    end_a = torch.load(tmp_path / "a/checkpoints/last.ckpt", weights_only=True)
    end_b = torch.load(last_b, weights_only=True)
    assert end_a["global_step"] == end_b["global_step"] == 12
    for key, value in end_a["state_dict"].items():  # bit for bit
        assert torch.equal(value, end_b["state_dict"][key]), key
    def last_val(root: Path) -> dict[str, str]:
        rows = read_rows(sorted((root / "logs").glob("version_*"))[-1] / "metrics.csv")
        return {k: v for r in rows for k, v in r.items() if k.startswith("val/") and v}  # the last logged values

    val_a, val_b = last_val(tmp_path / "a"), last_val(tmp_path / "b")
    assert set(val_a) >= {"val/acc", "val/loss", "val/auroc"} and val_a == val_b


def test_bad_config_values_stop_before_training(volumes: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    cfg = write_yaml(tmp_path / "tiny.yaml", tiny_config(volumes, tmp_path / "run"))
    cases = [
        (["--model.net", "pipelines.networks.vit_tiny_patch16_3"], "vit_tiny_patch16_3"),
        (["--model.net.init_args.emb_dim", "32"], "did you mean 'embed_dim'"),
        (["--data.init_args.dataset.init_args.spacingg", "1.5"], "did you mean 'spacing'"),
        (["--model.lr", "0.1"], "lr"),
        (["--data.init_args.dataset.init_args.img_size", "[16, 32, 30]"], "not divisible by patch_size"),
        (["--data.init_args.dataset.init_args.preset", "cta"], "preset"),
        (["--data.init_args.data", str(tmp_path / "missing.csv")], "missing.csv"),
    ]
    for extra, message in cases:
        rc = vit3d(["fit", "-c", str(cfg), *extra])
        err = capsys.readouterr().err
        assert rc == 2, (extra, err)
        assert message in err, (extra, err)
        lines = [line for line in err.splitlines() if line.startswith("vit3d fit: error: ")]
        assert len(lines) == 1 and "Traceback" not in err, (extra, err)
    assert not (tmp_path / "run/checkpoints").exists()


def test_misspelt_nested_key_in_yaml_is_rejected_before_training(volumes: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    config = tiny_config(volumes, tmp_path / "run")
    config["data"]["init_args"]["dataset"]["img_szie"] = [16, 32, 32]
    cfg = write_yaml(tmp_path / "typo.yaml", config)
    assert vit3d(["fit", "-c", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "img_szie" in err and "did you mean 'img_size'" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


# vit3d pretrain's configs (an MAEModule, not fit's) are parsed by tests/pipelines/test_pretrain.py.
CONFIGS = sorted(p.relative_to(REPO) for p in (REPO / "configs").rglob("*.yaml") if not p.name.startswith("pretrain_"))


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_print_config_parses_every_yaml(config: Path, capsys: pytest.CaptureFixture,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    text = yaml.safe_load(config.read_text()) or {}
    stack = [] if "data" in text else ["-c", "configs/demo_volumes.yaml"]  # partial files stack on a full one
    assert vit3d(["fit", "-c", "configs/base.yaml", *stack, "-c", str(config), "--print_config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["class_path"].startswith("pipelines.datamodules.")
    assert printed["model"]["net"]["class_path"].startswith("pipelines.networks.")


def test_print_config_lists_every_model_and_dataset_key(capsys: pytest.CaptureFixture,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import inspect

    from pipelines.networks import preset_class
    from vit3d.data import VolumeDataset
    from vit3d.models import VisionTransformer

    monkeypatch.chdir(REPO)
    assert vit3d(["fit", "-c", "configs/ct.yaml", "--print_config=skip_null"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    net = printed["model"]["net"]["init_args"]
    dataset = printed["data"]["init_args"]["dataset"]["init_args"]
    # Every keyword of the family and of the dataset is shown, except those the data module links or supplies.
    expected_net = {k for k, p in inspect.signature(VisionTransformer).parameters.items() if p.default is not None}
    assert expected_net - {"num_classes", "in_chans", "img_size"} <= set(net)
    assert net["embed_dim"] == 384 and net["depth"] == 12  # the preset's values, not the family's
    assert net["patch_size"] == [16, 16, 16] and net["drop_path_rate"] == 0.1  # ct.yaml's overrides
    expected_data = {k for k, p in inspect.signature(VolumeDataset).parameters.items()
                     if p.default is not None and p.default is not inspect.Parameter.empty}
    assert expected_data - {"split", "classes", "train"} <= set(dataset)
    assert dataset["img_size"] == [96, 96, 96] and dataset["on_error"] == "raise"
    # ... with its type in --help
    from pipelines.train import main

    assert main(["fit", "-c", "configs/ct.yaml", "--model.net.help", "pipelines.networks.vit_small_patch16_3d"]) == 0
    help_text = capsys.readouterr().out
    assert "--model.net.embed_dim EMBED_DIM" in help_text and "type: int, default: 384" in help_text
    assert "Unvalidated" not in help_text  # every key has a real type
    assert preset_class("vit_small_patch16_3d").__mro__[1] is VisionTransformer


def test_help_lists_the_lightning_subcommands(capsys: pytest.CaptureFixture) -> None:
    assert vit3d(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("fit", "validate", "test", "predict"):
        assert name in out
    with pytest.raises(SystemExit) as exit_:
        from pipelines.train import main

        sys.exit(main(["fit", "--help"]))
    assert exit_.value.code == 0


def test_clips_fit_and_multiview_test(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from vit3d.data.synthetic import make_clip_dataset

    table = make_clip_dataset(tmp_path / "clips", num_samples=8, frames=8, size=(32, 32), num_classes=2, seed=0,
                              val_fraction=0.25, test_fraction=0.25)
    config = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "precision": "32-true", "enable_progress_bar": False,
                    "enable_model_summary": False, "max_steps": 2, "log_every_n_steps": 1,
                    "default_root_dir": str(tmp_path / "run")},
        "model": {"net": {"class_path": "pipelines.networks.vit_tiny_patch16_3d",
                          "init_args": {**TINY_MODEL, "patch_size": [2, 8, 8]}},
                  "cutmix_alpha": 1.0, "cutmix_axes": [1, 2]},
        "data": {"class_path": "pipelines.datamodules.VideoDataModule",
                 "init_args": {"data": str(table), "batch_size": 2, "num_workers": 0,
                               "dataset": {"frames": 4, "stride": 2, "img_size": [32, 32], "flip": False,
                                           "decoder": "pyav", "num_clips": 2}}},
    }
    cfg = write_yaml(tmp_path / "clips.yaml", config)
    assert vit3d(["fit", "-c", str(cfg)]) == 0
    ckpt = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=True)
    net = ckpt["hyper_parameters"]["net"]["init_args"]
    assert list(net["img_size"]) == [4, 32, 32] and net["in_chans"] == 3
    capsys.readouterr()
    assert vit3d(["test", "-c", str(cfg), "--ckpt_path", str(tmp_path / "run/checkpoints/last.ckpt")]) == 0
    out = capsys.readouterr().out
    assert "test/acc" in out and "test/clip_acc" in out  # two clips per video, averaged per video
    preds = tmp_path / "clips.csv"
    assert vit3d(["predict", "-c", str(cfg), "--ckpt_path", str(tmp_path / "run/checkpoints/last.ckpt"),
                  "--predictions.output", str(preds)]) == 0
    rows = read_rows(preds)
    n_test = sum(r["split"] == "test" for r in read_rows(table))
    assert len(rows) == n_test and len({r["path"] for r in rows}) == n_test  # one row per video, not per view


def test_a_registry_preset_is_one_line_of_yaml(tmp_path: Path, capsys: pytest.CaptureFixture,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    one_line = write_yaml(tmp_path / "net.yaml", {"model": {"net": "pipelines.networks.vit_base_patch16_3d"}})
    assert vit3d(["fit", "-c", "configs/ct.yaml", "-c", str(one_line), "--print_config"]) == 0
    net = yaml.safe_load(capsys.readouterr().out)["model"]["net"]
    assert net["class_path"] == "pipelines.networks.vit_base_patch16_3d"
    assert net["init_args"]["embed_dim"] == 768 and net["init_args"]["depth"] == 12  # the new preset's values
    assert net["init_args"]["patch_size"] == [16, 16, 16]  # ct.yaml's override of a key both presets take stays
