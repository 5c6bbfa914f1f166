"""`vit3d pretrain` driven in-process with argv lists on tiny synthetic volumes and clips, then `fit` from it."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file

from pipelines.cli import main as vit3d
from pipelines.pretrain import PretrainVolumeDataModule
from tests.pipelines.helpers import read_rows, write_yaml
from vit3d.data import VolumeDataset
from vit3d.errors import ConfigError

PROBES = Path(__file__).parent / "probes"
TINY_MODEL = {"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": [4, 8, 8]}
TINY_DECODER = {"decoder_embed_dim": 16, "decoder_depth": 1, "decoder_num_heads": 2}


def volume_config(csv_path: Path, root: Path, **trainer: object) -> dict:
    return {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "precision": "32-true", "enable_progress_bar": False,
                    "enable_model_summary": False, "log_every_n_steps": 1, "max_steps": 4,
                    "default_root_dir": str(root), **trainer},
        "model": {"net": {"class_path": "pipelines.networks.vit_tiny_patch16_3d", "init_args": TINY_MODEL},
                  **TINY_DECODER},
        "data": {"class_path": "pipelines.pretrain.PretrainVolumeDataModule",
                 "init_args": {"data": str(csv_path), "dataset": {"img_size": [16, 32, 32]}, "batch_size": 4,
                               "augment": False, "num_workers": 0}},
    }


def fit_config(csv_path: Path, root: Path) -> dict:
    """`vit3d fit`'s config of the same encoder (what tests/pipelines/test_train.py trains)."""
    return {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "precision": "32-true", "enable_progress_bar": False,
                    "enable_model_summary": False, "max_steps": 1, "default_root_dir": str(root)},
        "model": {"net": {"class_path": "pipelines.networks.vit_tiny_patch16_3d", "init_args": TINY_MODEL}},
        "data": {"class_path": "pipelines.datamodules.VolumeDataModule",
                 "init_args": {"data": str(csv_path), "dataset": {"img_size": [16, 32, 32]}, "batch_size": 4,
                               "num_workers": 0}},
    }


def test_pretrain_writes_an_encoder_that_fit_loads_strictly(volumes: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(PROBES))
    cfg = write_yaml(tmp_path / "pre.yaml", volume_config(volumes, tmp_path / "run"))
    assert vit3d(["pretrain", "-c", str(cfg)]) == 0
    encoder = tmp_path / "run/encoder.safetensors"
    assert encoder.is_file() and (tmp_path / "run/reconstructions/reconstruction.png").is_file()
    assert (tmp_path / "run/checkpoints/best.ckpt").is_file()
    with safe_open(str(encoder), framework="pt") as f:
        meta = f.metadata()
    assert "vit3d.config" in meta and '"mask_ratio": 0.75' in meta["vit3d.provenance"]
    logs = sorted((tmp_path / "run/logs").glob("version_*"))[-1]
    metrics = read_rows(logs / "metrics.csv")
    assert any(r.get("val/loss") for r in metrics) and any(r.get("train/loss") for r in metrics)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logs), size_guidance={"images": 0})
    events.Reload()
    assert "val/reconstruction" in events.Tags()["images"]

    saved = load_file(str(encoder))
    # `vit3d fit` with the fit config and only the encoder file added, spelt both ways: the typed Pretrained
    # network (architecture from the file), or the config's own preset with init_args.pretrained. The weights fit
    # starts from (recorded by a probe callback at fit start) hold every encoder tensor and a fresh head.
    fit_cfg = write_yaml(tmp_path / "fit.yaml", fit_config(volumes, tmp_path / "fit"))
    spellings = {"Pretrained": ["--model.net", "pipelines.networks.Pretrained", "--model.net.init_args.path",
                                str(encoder)],
                 "preset": ["--model.net.init_args.pretrained", str(encoder)]}
    for name, extra in spellings.items():
        start = tmp_path / f"start_{name}.safetensors"
        probe = ["--trainer.callbacks+=vit3d_test_probes.InitialWeights",
                 f"--trainer.callbacks.path={start}"]
        assert vit3d(["fit", "-c", str(fit_cfg), *extra, *probe]) == 0, name
        state = load_file(str(start))
        assert set(saved) <= set(state), name
        for key, value in saved.items():
            assert torch.equal(state[key], value), (name, key)
        assert set(state) - set(saved) == {"head.weight", "head.bias"}, name  # only the new 2-class head


def test_resume_mid_epoch_matches_uninterrupted(volumes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    """Killed after step 6 (mid-epoch), resumed with --ckpt_path last: the same encoder, bit for bit (the
    masks depend on the batch count, which the loop state restores)."""
    monkeypatch.syspath_prepend(str(PROBES))
    base = volume_config(volumes, tmp_path / "a", max_steps=-1, max_epochs=3)  # 8 volumes, batch 2: 4 steps/epoch
    base["data"]["init_args"]["batch_size"] = 2
    every_step = ["--last_checkpoint.every_n_train_steps", "1"]  # last.ckpt after every optimiser step
    assert vit3d(["pretrain", "-c", str(write_yaml(tmp_path / "a.yaml", base)), *every_step]) == 0

    killed = dict(base, trainer={**base["trainer"], "default_root_dir": str(tmp_path / "b"), "callbacks": [
        {"class_path": "vit3d_test_probes.CrashAtStep", "init_args": {"step": 7}}]})
    with pytest.raises(RuntimeError, match="simulated kill"):
        vit3d(["pretrain", "-c", str(write_yaml(tmp_path / "b.yaml", killed)), *every_step])
    assert torch.load(tmp_path / "b/checkpoints/last.ckpt", weights_only=True)["global_step"] == 6
    assert not (tmp_path / "b/encoder.safetensors").exists()

    resumed = dict(base, trainer={**base["trainer"], "default_root_dir": str(tmp_path / "b")})
    capsys.readouterr()
    assert vit3d(["pretrain", "-c", str(write_yaml(tmp_path / "c.yaml", resumed)), *every_step,
                  "--ckpt_path", "last"]) == 0
    said = "".join(capsys.readouterr())
    assert "vit3d pretrain: done: 3 epoch(s), 12 optimiser steps (this run: 6 steps" in said
    assert "vit3d fit" not in said  # the summary names the command that ran
    a, b = (load_file(str(tmp_path / run / "encoder.safetensors")) for run in ("a", "b"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_unlabelled_folder_and_splits(volumes: Path, tmp_path: Path) -> None:
    rows = read_rows(volumes)
    # a CSV with a split column: train rows learn, val rows validate, test rows stay unseen
    dataset = functools.partial(VolumeDataset, img_size=(16, 32, 32))
    dm = PretrainVolumeDataModule(str(volumes), dataset=dataset, validate_files=False)
    dm.setup("fit")
    ids = {split: {Path(row["image"]).name for _, row in dm.datasets[split].rows} for split in ("train", "val")}
    expected = {s: {Path(r["image"]).name for r in rows if r["split"] == s} for s in ("train", "val")}
    assert ids == expected
    assert all(int(dm.datasets["train"][i]["label"]) == -1 for i in range(2))  # labels are not read
    # a folder of files (masks excluded): 5 % held out for validation, at least one, none lost
    folder = PretrainVolumeDataModule(str(volumes.parent / "volumes"), dataset=dataset, validate_files=False)
    folder.setup("fit")
    train = [row["image"] for _, row in folder.datasets["train"].rows]
    val = [row["image"] for _, row in folder.datasets["val"].rows]
    assert len(val) == 1 and len(train) == len(rows) - 1 and not set(train) & set(val)
    with pytest.raises(ConfigError, match="no 'test' split"):
        folder._source("test")
    assert not folder.has_split("test")  # so validate_splits checks train and val only


def test_bad_config_is_one_line(volumes: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = volume_config(volumes, tmp_path / "bad")
    cfg["model"]["mask_ratio"] = 1.0
    assert vit3d(["pretrain", "-c", str(write_yaml(tmp_path / "bad.yaml", cfg))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("vit3d pretrain: error:") and "mask_ratio 1.0" in err[-1]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vit3d.data.synthetic import make_clip_dataset

    return make_clip_dataset(tmp_path_factory.mktemp("clips"), num_samples=8, frames=8, size=(32, 32), seed=0)


def test_clips_continue_videomae_pretraining(clips: Path, tmp_path: Path) -> None:
    """Start from a HF VideoMAEForPreTraining directory (encoder and decoder), tube masks, a GIF at the end."""
    transformers = pytest.importorskip("transformers")
    config = transformers.VideoMAEConfig(image_size=16, patch_size=8, num_frames=4, tubelet_size=2, hidden_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                         decoder_hidden_size=16, decoder_num_hidden_layers=1,
                                         decoder_num_attention_heads=2, decoder_intermediate_size=32)
    transformers.VideoMAEForPreTraining(config).save_pretrained(tmp_path / "videomae")
    cfg = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "precision": "32-true", "enable_progress_bar": False,
                    "enable_model_summary": False, "max_steps": 2, "default_root_dir": str(tmp_path / "run")},
        "model": {"net": {"class_path": "pipelines.pretrain.VideoMAEPretraining",
                          "init_args": {"path": str(tmp_path / "videomae")}}, "mask_ratio": 0.5},
        "data": {"class_path": "pipelines.pretrain.PretrainVideoDataModule",
                 "init_args": {"data": str(clips), "dataset": {"frames": 4, "img_size": [16, 16], "decoder": "pyav"},
                               "batch_size": 4, "num_workers": 0}},
    }
    assert vit3d(["pretrain", "-c", str(write_yaml(tmp_path / "clips.yaml", cfg))]) == 0
    gif = tmp_path / "run/reconstructions/reconstruction.gif"
    from PIL import Image

    with Image.open(gif) as img:
        assert img.n_frames == 4  # one per clip frame: masked | reconstruction | original
    ckpt = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["data_kind"] == "clip"
    assert "model.decoder_pred.weight" in ckpt["state_dict"]
    with safe_open(str(tmp_path / "run/encoder.safetensors"), framework="pt") as f:
        provenance = json.loads(f.metadata()["vit3d.provenance"])
    assert provenance["started_from"] == str(tmp_path / "videomae") and provenance["mask_ratio"] == 0.5


@pytest.mark.parametrize(("pretrain", "fit"), [("pretrain_volumes.yaml", "demo_volumes.yaml"),
                                               ("pretrain_clips.yaml", "demo_clips.yaml")])
def test_shipped_configs_parse_and_match_their_fit_config(pretrain: str, fit: str, capsys) -> None:
    configs = Path(__file__).resolve().parents[2] / "configs"
    assert vit3d(["pretrain", "-c", str(configs / pretrain), "--print_config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    target = yaml.safe_load((configs / fit).read_text())
    # the encoder is the fit config's network and the preprocessing its dataset's, so fit from the encoder file
    # needs nothing else
    net, fit_net = printed["model"]["net"], target["model"]["net"]
    assert net["class_path"] == fit_net["class_path"]
    assert {k: net["init_args"][k] for k in fit_net["init_args"]} == fit_net["init_args"]
    dataset, fit_dataset = printed["data"]["init_args"]["dataset"], target["data"]["init_args"]["dataset"]
    preprocessing = [k for k in fit_dataset if k not in ("num_clips", "num_crops")]  # multi-view testing only
    assert {k: dataset["init_args"][k] for k in preprocessing} == {k: fit_dataset[k] for k in preprocessing}


@pytest.mark.slow
def test_benchmark_script_smoke(tmp_path: Path) -> None:
    """benchmarks/pretrain_finetune.py end to end at its smoke sizes: every arm fine-tunes the same steps."""
    import importlib.util
    import json

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "pretrain_finetune.py"
    spec = importlib.util.spec_from_file_location("pretrain_finetune", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "out.json"
    assert bench.main(["--smoke", "--work", str(tmp_path / "work"), "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["arm"] for r in rows] == ["scratch", "mae"]
    assert rows[0]["finetune_steps"] == rows[1]["finetune_steps"] == 4
    assert all(0.0 <= r["test_acc"] <= 1.0 for r in rows) and rows[1]["pretrain_steps"] > 0


@pytest.mark.slow  # two processes on a shared CPU: ~2 min; the fit DDP test covers the shared machinery by default
def test_two_process_ddp_ranks_agree_and_one_encoder_is_written(volumes: Path, tmp_path: Path) -> None:
    """`vit3d pretrain` under DDP on CPU (gloo, 2 processes): same weights on both ranks, the encoder written once."""
    import os
    import subprocess
    import sys

    config = volume_config(volumes, tmp_path / "run", max_steps=3, devices=2, strategy="ddp", callbacks=[
        {"class_path": "vit3d_test_probes.WeightsHash", "init_args": {"out_dir": str(tmp_path / "hashes")}}])
    config["data"]["init_args"]["batch_size"] = 2
    cfg = write_yaml(tmp_path / "ddp.yaml", config)
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROBES), str(repo), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "MASTER_PORT": str(29600 + os.getpid() % 1000)}
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "pretrain", "-c", str(cfg)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (h0, step0, world0, _), (h1, step1, _, _) = ((tmp_path / "hashes" / f"rank{r}.txt").read_text().split()
                                                 for r in (0, 1))
    assert world0 == "2" and step0 == step1 == "3" and h0 == h1
    assert (tmp_path / "run/encoder.safetensors").is_file()
    assert proc.stdout.count("vit3d pretrain: wrote") + proc.stderr.count("vit3d pretrain: wrote") == 1


def test_starts_from_a_2d_checkpoint_inflated_on_the_fly_or_an_inflate_file(tmp_path: Path) -> None:
    import vit3d
    from pipelines.networks import Pretrained, preset_class
    from pipelines.pretrain import MAEModule
    from vit3d.weights import inflate_file, save_model

    two_d = vit3d.create_model("vit_tiny_patch16_2d", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                               num_classes=10)
    src = save_model(two_d, tmp_path / "vit2d.safetensors")
    inflated = tmp_path / "vit3d.safetensors"
    inflate_file(src, inflated, frames=16, tubelet=4, in_chans=1, num_classes=0)
    x = torch.randn(2, 1, 16, 32, 32)
    tiny = {"patch_size": [4, 8, 8], "embed_dim": 32, "depth": 2, "num_heads": 2, "in_chans": 1,
            "img_size": [16, 32, 32]}
    nets = [preset_class("vit_tiny_patch16_3d")(**tiny, pretrained=str(src)),  # 2D, inflated on the fly
            Pretrained(str(inflated), in_chans=1, img_size=[16, 32, 32])]  # a vit3d inflate file
    for net in nets:
        module = MAEModule(net, **TINY_DECODER)
        encoder = module.model.encoder
        assert torch.equal(encoder.blocks[1].mlp.fc2.weight, two_d.blocks[1].mlp.fc2.weight)
        assert encoder.num_classes == 0 and encoder.in_chans == 1 and encoder.patch_size == (4, 8, 8)
        loss = module.model(x, module.model.random_mask(x, torch.Generator().manual_seed(0)))
        assert torch.isfinite(loss)
    with pytest.raises(ConfigError, match="VisionTransformer"):
        MAEModule(preset_class("cct_2_3x2_32_3d")(in_chans=1, img_size=[16, 32, 32]))


def test_a_whole_autoencoder_keeps_its_decoder_and_takes_the_run_masks() -> None:
    """A MaskedAutoencoder given as net (what VideoMAEPretraining builds) continues with its own decoder; the run's
    mask settings apply to it, and a decoder setting that could not apply is refused, not ignored."""
    from pipelines.pretrain import MAEModule
    from vit3d.models import VisionTransformer
    from vit3d.models.mae import MaskedAutoencoder

    encoder = VisionTransformer(img_size=[8, 32, 32], patch_size=[2, 8, 8], in_chans=3, num_classes=0, embed_dim=32,
                                depth=1, num_heads=2)
    mae = MaskedAutoencoder(encoder, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)
    module = MAEModule(mae, data_kind="clip")
    assert module.model is mae and (mae.mask_type, mae.mask_ratio) == ("tube", 0.9)  # the clip defaults
    mask = mae.random_mask(torch.zeros(2, 3, 8, 32, 32), torch.Generator().manual_seed(0))
    assert mask.mask.view(2, 4, 16).all(dim=1).sum().item() == 2 * round(0.9 * 16)  # whole tubes, 90 % of them
    with pytest.raises(ConfigError, match="decoder_depth"):
        MAEModule(mae, decoder_depth=2)
    with pytest.raises(ConfigError, match="mask_ratio 0.999 of 64 patches hides 64"):
        MAEModule(mae, mask_ratio=0.999)
