"""`pip install vit3d` without extras: the library works with torch, numpy, safetensors, matplotlib and pillow only.

A subprocess blocks every optional package with a meta-path finder (as if it were not installed), then imports
vit3d, builds a model, saves and reloads it, inflates a 2D checkpoint and explains a prediction. The ``vit3d``
command then names the extra to install instead of failing with a traceback.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OPTIONAL = ["monai", "nibabel", "torchio", "pydicom", "SimpleITK", "av", "decord", "lightning", "pytorch_lightning",
            "torchmetrics", "jsonargparse", "tensorboard", "rich", "huggingface_hub", "transformers", "timm",
            "torchvision", "einops", "yaml", "sklearn"]

# ``sys.modules[name] = None`` is Python's own "not importable": ``import name`` raises ModuleNotFoundError and
# ``importlib.util.find_spec(name)`` returns None, exactly as for a package that is not installed.
BLOCKER = f"""
import sys
OPTIONAL = {OPTIONAL!r}
for name in OPTIONAL:
    sys.modules[name] = None
"""


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    script = BLOCKER + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=REPO,
                          timeout=300)


def test_base_dependencies_are_what_the_library_imports() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = {d.split(">")[0].split("=")[0].split(";")[0].split("[")[0].strip().lower() for d in meta["dependencies"]}
    assert names == {"torch", "numpy", "safetensors", "matplotlib", "pillow"}
    assert "einops" not in str(meta) and "version" in meta["dynamic"]
    extras = meta["optional-dependencies"]
    assert {"medical", "video", "train", "hub", "all", "dev"} <= set(extras)
    decord = next(d for d in extras["video"] if d.startswith("decord"))
    assert "platform_machine == 'x86_64'" in decord and "AMD64" in decord


def test_library_without_optional_packages(tmp_path: Path) -> None:
    proc = _run("""
        import sys, torch
        import vit3d
        from vit3d.explain import explain
        from vit3d.weights import inflate, load_model, save_model
        from vit3d.weights.report import Checkpoint, LoadReport
        from vit3d.weights.config import vit_config

        out = sys.argv[1]
        model = vit3d.create_model("vit_tiny_patch16_3d", img_size=(4, 32, 32), patch_size=(2, 8, 8), embed_dim=48,
                                   depth=2, num_heads=3, num_classes=2, in_chans=1).eval()
        x = torch.randn(1, 1, 4, 32, 32)
        path = save_model(model, out + "/m.safetensors")
        again = load_model(path).eval()
        assert torch.allclose(model(x), again(x), atol=1e-6)

        two_d = vit3d.create_model("vit_tiny_patch16_2d", img_size=32, patch_size=8, embed_dim=48, depth=2,
                                   num_heads=3, num_classes=2)
        src = Checkpoint(two_d.state_dict(), vit_config(two_d), LoadReport(source="memory"))
        three_d = inflate(src, img_size=(4, 32, 32), patch_size=(2, 8, 8))
        assert three_d.config["spatial_dims"] == 3

        result = explain(model, x, method="rollout")
        assert tuple(result.map.shape) == (1, 4, 32, 32)
        loaded = [m for m, mod in sys.modules.items() if mod is not None and m.split(".")[0] in OPTIONAL]
        assert not loaded, loaded
        print("ok", vit3d.__version__)
    """, str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("ok ")


def test_command_without_the_training_stack_names_the_extra() -> None:
    proc = _run("""
        import sys
        from pipelines.cli import main
        sys.exit(main(["fit", "--help"]))
    """)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == [
        "vit3d fit: error: `vit3d fit` needs the optional package 'lightning', which is not installed; "
        "pip install 'vit3d[train]'"]
