"""The ``vit3d`` dispatcher's one error policy: every subcommand turns a user error into one line, exit 2."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.cli import COMMANDS
from pipelines.cli import main as vit3d

REPO = Path(__file__).resolve().parents[2]


def _cases(tmp: Path) -> dict[str, tuple[list[str], str]]:
    corrupt = tmp / "corrupt.ckpt"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip archive")
    return {
        "fit": (["fit", "-c", "configs/ct.yaml", "--model.net.init_args.depht", "2"], "did you mean 'depth'"),
        "validate": (["validate", "--ckpt_path", str(tmp / "missing.ckpt")], "checkpoint not found"),
        "test": (["test", "--ckpt_path", str(corrupt)], "cannot read the checkpoint"),
        "predict": (["predict", "-c", "configs/ct.yaml"], "no trained checkpoint to predict with"),
        "pretrain": (["pretrain", "-c", "configs/pretrain_volumes.yaml", "--model.mask_ratio", "1.0"],
                     "mask_ratio 1.0 must be in (0, 1)"),
        "inflate": (["inflate", str(tmp / "vit.pth")], "--out"),
        "adapt": (["adapt", str(tmp / "missing.safetensors"), "--out", str(tmp / "x.safetensors")],
                  "checkpoint does not exist"),
        "models": (["models", "vit_tiny_patch16_3"], "did you mean vit_tiny_patch16_3d"),
        "explain": (["explain", "--ckpt", str(tmp / "missing.ckpt"), "--input", str(corrupt), "--out", str(tmp)],
                    "the checkpoint does not exist"),
        "bench": (["bench", "--model", "vit_tiny_patch16_3d", "--batch", "0"], "--batch 0 must be at least 1"),
    }


@pytest.mark.parametrize("command", list(COMMANDS))
def test_user_error_is_one_line_and_exit_2(command: str, tmp_path: Path, capsys: pytest.CaptureFixture,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("VIT3D_DEBUG", raising=False)
    argv, message = _cases(tmp_path)[command]
    assert vit3d(argv) == 2
    err = _without_logging_errors(capsys.readouterr().err)
    lines = [line for line in err.splitlines() if line.startswith("vit3d ")]
    assert len(lines) == 1 and lines[0].startswith(f"vit3d {command}: error: "), err
    assert message in lines[0] and "Traceback" not in err and "usage:" not in err, err


def _without_logging_errors(err: str) -> str:
    """Drop the "--- Logging error ---" blocks a logging handler prints when pytest has closed the stream it
    captured in an earlier test (an artefact of in-process runs, not output of the command)."""
    return re.sub(r"--- Logging error ---.*?Arguments: \(\)\n", "", err, flags=re.S)


def test_every_command_has_a_case(tmp_path: Path) -> None:
    assert set(_cases(tmp_path)) == set(COMMANDS)


def test_debug_shows_the_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vit3d.errors import ConfigError

    monkeypatch.chdir(REPO)
    with pytest.raises(ConfigError, match="at least 1"):
        vit3d(["bench", "--model", "vit_tiny_patch16_3d", "--batch", "0", "--debug"])


def test_console_script_exit_code_and_stderr(tmp_path: Path) -> None:
    """The real process: a refused checkpoint is one line on stderr, exit status 2, and never suggests an unsafe
    load."""
    import torch

    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}, "datamodule_hyper_parameters": {},
                "payload": Path("x")}, evil)  # a pickled Python object a safe load refuses
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("VIT3D_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "predict", "--ckpt_path", str(evil)],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("vit3d ")]
    assert len(lines) == 1 and "vit3d predict: error: refused" in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "weights_only=False" not in proc.stderr
