"""Checkpoints under kills, signals and full disks; exact resume (real processes, real signals, tiny runs).

Killed runs are real processes: forked from a forkserver that has imported torch, Lightning and MONAI once (so
each run skips that ~10 s import and the default suite stays fast) or, in a slow test, ``python -m pipelines.cli``. The
oracle of every resume test is an uninterrupted run with the same seed: the resumed run must end with the same
weights, bit for bit, with random augmentation and drop-path on.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from pipelines.checkpointing import (
    LAST,
    PREVIOUS,
    TMP_SUFFIX,
    atomic_save,
    load_checkpoint_file,
    model_differences,
    remove_stale_temp_files,
)
from pipelines.cli import main as vit3d
from vit3d.errors import CheckpointError

PROBES = Path(__file__).parent / "probes"
REPO = Path(__file__).resolve().parents[2]
TINY_MODEL = {"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": [4, 8, 8], "drop_path_rate": 0.2}
STEPS_PER_EPOCH, EPOCHS = 4, 3  # 8 training volumes, batch 2


@pytest.fixture(autouse=True)
def _probes_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(PROBES))


@pytest.fixture(scope="module")
def volumes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vit3d.data.synthetic import make_volume_dataset

    return make_volume_dataset(tmp_path_factory.mktemp("volumes"), num_samples=16, shape=(16, 32, 32), num_classes=2,
                               seed=0, val_fraction=0.25, test_fraction=0.25)


def config(csv_path: Path, root: Path, *, workers: int = 0, callbacks: list | None = None,
           plugins: list | None = None, **model: object) -> dict:
    trainer = {"accelerator": "cpu", "devices": 1, "precision": "32-true", "enable_progress_bar": False,
               "enable_model_summary": False, "log_every_n_steps": 1, "max_epochs": EPOCHS,
               "default_root_dir": str(root), "callbacks": callbacks or []}
    if plugins:
        trainer["plugins"] = plugins
    return {
        "seed_everything": 0,
        "trainer": trainer,
        "model": {"net": {"class_path": "pipelines.networks.vit_tiny_patch16_3d", "init_args": dict(TINY_MODEL)},
                  **model},
        "data": {"class_path": "pipelines.datamodules.VolumeDataModule",
                 "init_args": {"data": str(csv_path), "dataset": {"img_size": [16, 32, 32]}, "batch_size": 2,
                               "num_workers": workers, "augment": True, "validate_files": False}},
    }


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def marker(path: Path, sleep: float = 0.15) -> dict:
    return {"class_path": "vit3d_test_probes.StepMarker", "init_args": {"path": str(path), "sleep": sleep}}


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, f"resumed weights differ from the uninterrupted run's in {differ[:5]}"


@pytest.fixture(scope="module")
def reference(volumes: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``last.ckpt`` of an uninterrupted, seeded 3-epoch run (augmentation and drop-path on, no loader workers)."""
    root = tmp_path_factory.mktemp("reference")
    cfg = write_config(root / "ref.yaml", config(volumes, root / "run"))
    assert vit3d(["fit", "-c", str(cfg)]) == 0
    return root / "run" / "checkpoints" / LAST


# ---------------------------------------------------------------------------------------------- real processes
def start_fit(argv: list[str], log: Path) -> multiprocessing.Process:
    """``vit3d fit`` in a new process (stdout and stderr into ``log``).

    Forked from a forkserver that has imported torch, Lightning and MONAI once but never run a kernel: forking the
    test process itself would inherit its OpenMP thread pool, which deadlocks (libgomp is not fork-safe).
    """
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["vit3d_test_probes", "pipelines.cli", "pipelines.train", "pipelines.datamodules",
                                "monai.transforms", "vit3d.data.volume"])
    from vit3d_test_probes import run_fit

    proc = ctx.Process(target=run_fit, args=(argv, str(log)))
    proc.start()
    return proc


def wait_for(predicate, proc, timeout: float = 300.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        if not proc.is_alive():
            return
        assert time.monotonic() < deadline, "the run did not get there in time"
        time.sleep(0.02)


def step_of(path: Path) -> int:
    try:
        return int(path.read_text() or -1)
    except (FileNotFoundError, ValueError):
        return -1


def finish(proc: multiprocessing.Process, timeout: float = 300.0) -> int:
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        pytest.fail("the run did not stop")
    return proc.exitcode


# ---------------------------------------------------------------------------------------------- tests
def test_last_holds_the_final_epoch_and_summary(volumes: Path, reference: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    # Lightning 2.6's ModelCheckpoint(save_last=True) refreshed last.ckpt only with a new best; it must be the end.
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.setattr("tempfile.tempdir", None)
    root = tmp_path / "run"
    cfg = write_config(tmp_path / "c.yaml", config(volumes, root, callbacks=[]))
    assert vit3d(["fit", "-c", str(cfg), "--trainer.max_epochs", "2"]) == 0
    out = capsys.readouterr().out
    last = torch.load(root / "checkpoints" / LAST, weights_only=True)
    assert last["epoch"] == 1 and last["global_step"] == 2 * STEPS_PER_EPOCH  # N epochs -> epoch N-1, all steps
    previous = torch.load(root / "checkpoints" / PREVIOUS, weights_only=True)
    assert previous["epoch"] == 0 and previous["global_step"] == STEPS_PER_EPOCH
    best = root / "checkpoints" / "best.ckpt"
    best_state = next(v for k, v in last["callbacks"].items() if k.startswith("ModelCheckpoint"))
    # last.ckpt is saved after ModelCheckpoint: it knows the best score, so a resume cannot overwrite best.ckpt
    assert best_state["best_model_path"] == str(best) and best_state["best_model_score"] is not None
    assert torch.load(best, weights_only=True)["global_step"] in (STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH)
    assert "vit3d fit: done: 2 epoch(s), 8 optimiser steps" in out
    assert f"best: {best}" in out and "val/acc" in out
    assert f"last: {root / 'checkpoints' / LAST}  (epoch 1, step 8" in out
    assert "logs: " in out and str(root / "logs" / "version_0") in out
    leftovers = [p for p in root.rglob(f"*{TMP_SUFFIX}")] + list(tmpdir.iterdir())
    assert not leftovers, leftovers


def test_sigkill_mid_epoch_then_resume_is_bit_identical(volumes: Path, reference: Path, tmp_path: Path) -> None:
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    kill_after = rng.randint(2, EPOCHS * STEPS_PER_EPOCH - 3)
    root, steps = tmp_path / "run", tmp_path / "steps.txt"
    cfg = write_config(tmp_path / "c.yaml", config(volumes, root, callbacks=[marker(steps)]))
    proc = start_fit(["-c", str(cfg), "--last_checkpoint.every_n_train_steps", "1"], tmp_path / "log.txt")
    wait_for(lambda: step_of(steps) >= kill_after, proc)
    time.sleep(rng.uniform(0.0, 0.2))  # anywhere: in the marker's sleep, the next step or its checkpoint write
    os.kill(proc.pid, signal.SIGKILL)
    assert finish(proc) == -signal.SIGKILL, f"random seed {seed}"
    last = root / "checkpoints" / LAST
    state = load_checkpoint_file(last)  # complete: never truncated by the kill
    assert 0 < state["global_step"] < EPOCHS * STEPS_PER_EPOCH, f"random seed {seed}"

    resumed = write_config(tmp_path / "r.yaml", config(volumes, root))
    assert vit3d(["fit", "-c", str(resumed), "--ckpt_path", "last"]) == 0
    assert torch.load(last, weights_only=True)["global_step"] == EPOCHS * STEPS_PER_EPOCH
    assert_same_weights(reference, last)
    assert not list(root.rglob(f"*{TMP_SUFFIX}"))


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_sigkill_during_a_checkpoint_write(volumes: Path, reference: Path, tmp_path: Path, workers: int) -> None:
    root, hung = tmp_path / "run", tmp_path / "hung.txt"
    plugin = {"class_path": "vit3d_test_probes.PausingCheckpointIO",
              "init_args": {"marker": str(hung), "pause_at": 6}}
    cfg = write_config(tmp_path / "c.yaml", config(volumes, root, workers=workers, plugins=[plugin]))
    proc = start_fit(["-c", str(cfg), "--last_checkpoint.every_n_train_steps", "1"], tmp_path / "log.txt")
    wait_for(hung.is_file, proc)
    assert hung.is_file(), (tmp_path / "log.txt").read_text()[-3000:]
    os.kill(proc.pid, signal.SIGKILL)
    assert finish(proc) == -signal.SIGKILL
    folder = root / "checkpoints"
    partial = list(folder.glob(f"*{TMP_SUFFIX}"))
    assert len(partial) == 1 and partial[0].name.startswith(".")  # the half-written file, beside its target
    state = load_checkpoint_file(folder / LAST)  # the previous complete checkpoint, untouched
    assert state["global_step"] == 4  # saves: steps 1-3, best.ckpt and last.ckpt at epoch 0's end, then step 5

    resumed = write_config(tmp_path / "r.yaml", config(volumes, root, workers=workers))
    assert vit3d(["fit", "-c", str(resumed), "--ckpt_path", "last"]) == 0
    assert not list(folder.glob(f"*{TMP_SUFFIX}")), "the stale temporary file was not removed"
    assert_same_weights(reference, folder / LAST)


def test_sigterm_stops_with_143_and_a_resumable_checkpoint(volumes: Path, reference: Path, tmp_path: Path) -> None:
    root, steps, log = tmp_path / "run", tmp_path / "steps.txt", tmp_path / "log.txt"
    cfg = write_config(tmp_path / "c.yaml", config(volumes, root, workers=2, callbacks=[marker(steps, 0.3)]))
    proc = start_fit(["-c", str(cfg)], log)  # default triggers only: epochs and 30 minutes
    wait_for(lambda: step_of(steps) >= 5, proc)  # mid-epoch 1
    os.kill(proc.pid, signal.SIGTERM)
    assert finish(proc) == 143, log.read_text()[-3000:]
    text = log.read_text()
    last = root / "checkpoints" / LAST
    state = torch.load(last, weights_only=True)
    assert state["global_step"] == step_of(steps)  # the step in flight was finished, then saved
    assert 5 <= state["global_step"] < 2 * STEPS_PER_EPOCH and state["epoch"] == 1
    assert "SIGTERM received" in text and "stopped by SIGTERM" in text and "exit status 143" in text
    assert f"resume: vit3d fit -c {cfg} --ckpt_path last" in text
    # no third-party noise a user cannot act on: Lightning's saving default and product tip, torch 2.13's pytree
    # deprecation
    assert "weights_only" not in text and "LeafSpec" not in text and "litlogger" not in text, text[-3000:]

    assert vit3d(["fit", "-c", str(write_config(tmp_path / "r.yaml", config(volumes, root))),
                  "--ckpt_path", "last"]) == 0
    assert_same_weights(reference, last)


def test_truncated_last_falls_back_to_previous_or_names_the_file(volumes: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "run"
    cfg = write_config(tmp_path / "c.yaml", config(volumes, root))
    assert vit3d(["fit", "-c", str(cfg), "--trainer.max_epochs", "2"]) == 0
    folder = root / "checkpoints"
    last, previous = folder / LAST, folder / PREVIOUS
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 3])  # e.g. copied by hand, or written by an older version
    capsys.readouterr()
    with pytest.warns(UserWarning, match="resuming from .*previous.ckpt"):
        assert vit3d(["fit", "-c", str(cfg), "--trainer.max_epochs", "2", "--ckpt_path", "last"]) == 0
    err = capsys.readouterr().err
    assert "last.ckpt is unusable; resuming from" in err and "epoch 0, step 4" in err
    assert torch.load(last, weights_only=True)["global_step"] == 2 * STEPS_PER_EPOCH  # epoch 1 trained again

    # No complete checkpoint left: one line naming the file, exit status 2, no traceback.
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    previous.unlink()
    for ckpt in ("last", str(last)):
        assert vit3d(["fit", "-c", str(cfg), "--ckpt_path", ckpt]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("vit3d fit: error: cannot read the checkpoint"), err
        assert str(last) in err[0] and "truncated" in err[0] and "Traceback" not in err[0]


def test_resume_with_another_model_lists_the_differing_keys(volumes: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "run"
    cfg = write_config(tmp_path / "c.yaml", config(volumes, root))
    assert vit3d(["fit", "-c", str(cfg), "--trainer.max_epochs", "1"]) == 0
    other = config(volumes, root)
    other["model"]["net"]["init_args"] = {**TINY_MODEL, "embed_dim": 64, "depth": 3}
    other["model"]["label_smoothing"] = 0.0
    capsys.readouterr()
    rc = vit3d(["fit", "-c", str(write_config(tmp_path / "o.yaml", other)), "--trainer.max_epochs", "2",
                "--ckpt_path", "last"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    for text in ("in 3 key(s)", "label_smoothing: 0.1 in the checkpoint, 0.0 in the config",
                 "net.init_args.depth: 2 in the checkpoint, 3 in the config", "net.init_args.embed_dim: 32",
                 f"--model.net.init_args.pretrained {root / 'checkpoints' / LAST}"):
        assert text in err[0], err[0]
    assert torch.load(root / "checkpoints" / LAST, weights_only=True)["epoch"] == 0  # nothing was overwritten


def test_full_disk_is_one_line_and_the_run_resumes_after_freeing_space(volumes: Path, reference: Path,
                                                                       tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    # A filesystem with room for 2.5 checkpoints: last.ckpt and previous.ckpt fit, best.ckpt at the end of the
    # first epoch does not.
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs")
    size_k = int(2.5 * reference.stat().st_size / 1024)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_k}k", "tmpfs", str(mnt)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        root = mnt / "run"
        cfg = write_config(tmp_path / "c.yaml", config(volumes, root))
        capsys.readouterr()
        assert vit3d(["fit", "-c", str(cfg), "--last_checkpoint.every_n_train_steps", "1"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        folder = root / "checkpoints"
        assert err[0].startswith("vit3d fit: error: no space left to write the checkpoint best.ckpt: "), err[0]
        assert " free" in err[0] and f"({folder})" in err[0] and "--ckpt_path last" in err[0]
        assert load_checkpoint_file(folder / LAST)["global_step"] == 3  # the last good state, complete
        assert not list(mnt.rglob(f"*{TMP_SUFFIX}")) and not (folder / "best.ckpt").exists()

        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)  # space freed
        resumed = write_config(tmp_path / "r.yaml", config(volumes, root))
        assert vit3d(["fit", "-c", str(resumed), "--ckpt_path", "last"]) == 0
        assert_same_weights(reference, folder / LAST)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_atomic_save_leaves_the_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "x.ckpt"
    atomic_save({"a": torch.ones(3)}, target)

    class Unpicklable:
        def __reduce__(self) -> tuple:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):  # a bug keeps its traceback, and the old file stays
        atomic_save({"a": Unpicklable()}, target)
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["x.ckpt"]

    stale = tmp_path / f".x.ckpt.{os.uname().nodename}.999999999{TMP_SUFFIX}"  # its writer is gone
    stale.write_bytes(b"half")
    assert remove_stale_temp_files(tmp_path) == [stale] and not stale.exists()

    target.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="truncated or not a checkpoint archive"):
        load_checkpoint_file(target)


def test_model_differences_compares_nested_and_sequence_values() -> None:
    saved = {"model": "vit", "model_args": {"embed_dim": 32, "patch_size": (4, 8, 8)}, "img_size": [16, 32, 32],
             "grad_checkpointing": False, "_instantiator": "x"}
    same = {"model": "vit", "model_args": {"embed_dim": 32, "patch_size": [4, 8, 8]}, "img_size": (16, 32, 32),
            "grad_checkpointing": True}
    assert model_differences(saved, same) == []
    assert model_differences(saved, {**same, "model_args": {"embed_dim": 64, "patch_size": [4, 8, 8]}}) == [
        ("model_args.embed_dim", 32, 64)]


@pytest.mark.slow
def test_clips_sigkill_then_resume_is_bit_identical(tmp_path: Path) -> None:
    from vit3d.data.synthetic import make_clip_dataset

    table = make_clip_dataset(tmp_path / "clips", num_samples=12, frames=8, size=(32, 32), num_classes=2, seed=0,
                              val_fraction=0.25, test_fraction=0.0)

    def clip_config(root: Path, callbacks: list) -> dict:
        cfg = config(table, root, callbacks=callbacks)
        cfg["model"]["net"]["init_args"] = {**TINY_MODEL, "patch_size": [2, 8, 8]}
        cfg["data"] = {"class_path": "pipelines.datamodules.VideoDataModule",
                       "init_args": {"data": str(table), "batch_size": 2, "augment": True, "num_workers": 0,
                                     "dataset": {"frames": 4, "stride": 2, "img_size": [32, 32], "decoder": "pyav"}}}
        cfg["trainer"]["max_epochs"] = 2
        return cfg

    ref = write_config(tmp_path / "ref.yaml", clip_config(tmp_path / "ref", []))
    assert vit3d(["fit", "-c", str(ref)]) == 0
    root, steps = tmp_path / "run", tmp_path / "steps.txt"
    cfg = write_config(tmp_path / "c.yaml", clip_config(root, [marker(steps)]))
    proc = start_fit(["-c", str(cfg), "--last_checkpoint.every_n_train_steps", "1"], tmp_path / "log.txt")
    wait_for(lambda: step_of(steps) >= 3, proc)
    os.kill(proc.pid, signal.SIGKILL)
    assert finish(proc) == -signal.SIGKILL
    assert vit3d(["fit", "-c", str(write_config(tmp_path / "r.yaml", clip_config(root, []))),
                  "--ckpt_path", "last"]) == 0
    assert_same_weights(tmp_path / "ref" / "checkpoints" / LAST, root / "checkpoints" / LAST)


@pytest.mark.slow
def test_sigint_of_the_console_command_exits_130_and_resumes(volumes: Path, reference: Path,
                                                              tmp_path: Path) -> None:
    root, steps = tmp_path / "run", tmp_path / "steps.txt"
    cfg = write_config(tmp_path / "c.yaml", config(volumes, root, workers=2, callbacks=[marker(steps, 0.3)]))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROBES), str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "fit", "-c", str(cfg)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 600
    while step_of(steps) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # as Ctrl+C does: to the loader workers too, which must not die mid-batch
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 130, out[-3000:]
    assert "stopped by SIGINT" in out and "Traceback" not in out
    assert vit3d(["fit", "-c", str(cfg), "--ckpt_path", "last", "--trainer.callbacks", "[]"]) == 0
    assert_same_weights(reference, root / "checkpoints" / LAST)


@pytest.mark.slow
def test_slurm_requeue_signal_saves_requeues_and_the_requeued_job_resumes(
        volumes: Path, reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # SLURM itself is not here: its environment variables are, and `scontrol` is a script recording its arguments.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path / 'scontrol.txt'}\n")
    (bin_dir / "scontrol").chmod(0o755)
    slurm = {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "vit3d", "SLURM_JOB_ID": "4242", "SLURM_PROCID": "0",
             "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}
    root, steps = tmp_path / "run", tmp_path / "steps.txt"
    cfg = write_config(tmp_path / "c.yaml", config(volumes, root, callbacks=[marker(steps, 0.3)]))
    env = {**os.environ, **slurm, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join([str(PROBES), str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "fit", "-c", str(cfg)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 600
    while step_of(steps) < 6 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)  # SLURMEnvironment's default requeue signal
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 128 + signal.SIGUSR1, out[-3000:]
    assert (tmp_path / "scontrol.txt").read_text().split() == ["requeue", "4242"]
    assert torch.load(root / "checkpoints" / LAST, weights_only=True)["global_step"] == step_of(steps)

    for key, value in {**slurm, "SLURM_RESTART_COUNT": "1"}.items():  # the requeued job: same command, no flag
        monkeypatch.setenv(key, value)
    assert vit3d(["fit", "-c", str(write_config(tmp_path / "r.yaml", config(volumes, root)))]) == 0
    assert_same_weights(reference, root / "checkpoints" / LAST)
