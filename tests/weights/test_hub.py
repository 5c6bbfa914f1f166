"""Hub names load through huggingface_hub: downloads into its cache, offline reads from it, revision pinning,
safetensors preferred, pickles refused, and one clear line when neither network nor cache has the file.

The Hub is played by :class:`tests.weights.hub_server.FakeHub` on 127.0.0.1 (its file-resolve protocol), so the
cache is written by huggingface_hub's own download code; nothing leaves the machine.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vit3d
from vit3d.errors import CheckpointError
from vit3d.weights.hub import HubName, parse_hub_name

from .hub_server import FakeHub, repo_from_folder

huggingface_hub = pytest.importorskip("huggingface_hub")
transformers = pytest.importorskip("transformers")
COMMIT = "c0ffee" + "0" * 34


@pytest.fixture
def hf_repo(tmp_path):
    """A HF ViTForImageClassification saved by transformers (config.json + model.safetensors)."""
    cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                 image_size=16, patch_size=8, num_labels=3)
    torch.manual_seed(0)
    src = transformers.ViTForImageClassification(cfg).eval()
    src.save_pretrained(tmp_path / "src")
    return src, repo_from_folder(tmp_path / "src", COMMIT)


@pytest.fixture
def hub_env(tmp_path, monkeypatch):
    """Point huggingface_hub at a fresh cache (and, through ``use(url)``, at a FakeHub) for this test only."""
    from huggingface_hub import constants

    cache = tmp_path / "hf_cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))

    def use(url: str | None = None, offline: bool = False) -> Path:
        if url is not None:
            monkeypatch.setattr(constants, "ENDPOINT", url)
            template = url + "/{repo_id}/resolve/{revision}/{filename}"
            monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
        return cache

    return use


def _logits(model: torch.nn.Module, src: torch.nn.Module) -> float:
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        return float((model.eval()(x) - src(pixel_values=x).logits).abs().max())


def test_parse_hub_names(tmp_path, monkeypatch):
    assert parse_hub_name("hf-hub:google/vit-base-patch16-224") == HubName("google/vit-base-patch16-224")
    assert parse_hub_name("hf-hub:timm/vit_base_patch16_224.augreg_in21k@v1.0") == \
        HubName("timm/vit_base_patch16_224.augreg_in21k", "v1.0")
    assert parse_hub_name("MCG-NJU/videomae-base@" + COMMIT) == HubName("MCG-NJU/videomae-base", COMMIT)
    assert parse_hub_name("runs/best.safetensors") is None  # a weights suffix: a local path, even if missing
    assert parse_hub_name(Path("org/name")) is None
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "name").mkdir(parents=True)
    assert parse_hub_name("org/name") is None  # an existing local folder wins over the Hub
    with pytest.raises(CheckpointError, match="not a Hub name"):
        parse_hub_name("hf-hub:no-slash")


def test_download_prefers_safetensors_then_loads_offline(hf_repo, hub_env):
    src, repo = hf_repo
    repo[COMMIT]["pytorch_model.bin"] = b"never fetched"
    with FakeHub({"org/vit": repo}) as hub:
        hub_env(hub.url)
        model = vit3d.create_model(None, pretrained="hf-hub:org/vit")
        assert _logits(model, src) <= 1e-4
        assert not any("pytorch_model.bin" in r for r in hub.requests)
        assert any("from the Hugging Face Hub: org/vit" in n for n in model.load_report.notes)
    # The server is gone: offline mode reads huggingface_hub's cache, by branch, bare name or pinned commit.
    hub_env(offline=True)
    for name in ("hf-hub:org/vit", "org/vit", f"hf-hub:org/vit@{COMMIT}"):
        assert _logits(vit3d.create_model(None, pretrained=name), src) <= 1e-4
    with pytest.raises(CheckpointError, match=r"downloading hf-hub:org/vit@v9 failed and it is not in the "
                                              r"huggingface_hub cache.*HF_HUB_OFFLINE=1"):
        vit3d.create_model(None, pretrained="hf-hub:org/vit@v9")


def test_cache_written_by_huggingface_hub_offline_cli(hf_repo, tmp_path):
    """``hf download``-style prefetch with huggingface_hub itself, then ``HF_HUB_OFFLINE=1 vit3d inflate hub-name``
    in a fresh process: the real environment variables, no server running."""
    src, repo = hf_repo
    cache = tmp_path / "prefetched"
    with FakeHub({"org/vit": repo}) as hub:
        for filename in ("config.json", "model.safetensors"):
            huggingface_hub.hf_hub_download("org/vit", filename, cache_dir=cache, endpoint=hub.url)
    out = tmp_path / "vit3d.safetensors"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_ENDPOINT": "http://127.0.0.1:9"}
    run = subprocess.run([sys.executable, "-m", "pipelines.cli", "inflate", "hf-hub:org/vit", "--out", str(out),
                          "--frames", "2", "--tubelet", "2"], env=env, capture_output=True, text=True,
                         cwd=Path(__file__).parents[2], timeout=300)
    assert run.returncode == 0, run.stderr
    model = vit3d.load_model(out).eval()
    # A boring clip (one frame repeated) over one tubelet: the inflated model gives the 2D logits exactly.
    clip = torch.randn(1, 3, 16, 16).unsqueeze(2).expand(-1, -1, 2, -1, -1)
    with torch.no_grad():
        ref = src(pixel_values=clip[:, :, 0]).logits
        assert float((model(clip) - ref).abs().max()) <= 1e-4


def test_pickle_from_the_hub_is_refused(hub_env, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):  # noqa: ANN204
            return (open, (str(marker), "w"))

    repo = {"refs": {"main": COMMIT}, COMMIT: {"pytorch_model.bin": pickle.dumps({"evil": Payload()})}}
    with FakeHub({"org/evil": repo}) as hub:
        hub_env(hub.url)
        with pytest.raises(CheckpointError, match="refused as unsafe") as err:
            vit3d.create_model(None, pretrained="hf-hub:org/evil")
    assert "weights_only" not in str(err.value) and not marker.exists()


def test_missing_repo_revision_and_weights(hub_env, hf_repo):
    _, repo = hf_repo
    empty = {"refs": {"main": COMMIT}, COMMIT: {"README.md": b"no weights"}}
    with FakeHub({"org/vit": repo, "org/empty": empty}) as hub:
        hub_env(hub.url)
        with pytest.raises(CheckpointError, match="no Hugging Face Hub repository 'org/nope'"):
            vit3d.create_model(None, pretrained="org/nope")
        with pytest.raises(CheckpointError, match="'org/vit' has no revision 'v9'"):
            vit3d.weights.load_2d("hf-hub:org/vit@v9")
        with pytest.raises(CheckpointError, match=r"holds none of \['model.safetensors'"):
            vit3d.weights.load_2d("hf-hub:org/empty")


def test_offline_and_not_cached_is_one_line(hub_env, capsys):
    """``HF_HUB_OFFLINE=1`` with an empty cache: the error says the download failed and how to go on."""
    from pipelines.cli import main

    hub_env("http://127.0.0.1:9", offline=True)
    with pytest.raises(CheckpointError) as err:
        vit3d.create_model(None, pretrained="hf-hub:org/vit")
    msg = str(err.value)
    assert "downloading hf-hub:org/vit failed" in msg and "local checkpoint" in msg and "HF_HUB_OFFLINE=1" in msg
    assert main(["inflate", "hf-hub:org/vit", "--out", "unused.safetensors"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vit3d inflate: error: downloading hf-hub:org/vit failed")


@pytest.mark.slow
def test_no_network_is_one_line_after_one_retry_cycle(hub_env):
    """A closed port stands for no network: huggingface_hub retries the first file with backoff (~25 s), then
    the remaining files are looked up in the cache only, so the user waits for one cycle, not one per file."""
    import time

    hub_env("http://127.0.0.1:9")
    start = time.monotonic()
    with pytest.raises(CheckpointError, match=r"downloading hf-hub:org/vit failed.*HF_HUB_OFFLINE=1"):
        vit3d.create_model(None, pretrained="hf-hub:org/vit")
    assert time.monotonic() - start < 60


def test_pretrained_tags_load_timm_hub_weights(hub_env, tmp_path):
    """``vit_tiny_patch16_3d`` + ``pretrained=True``: its default tag's timm Hub weights, inflated on load (a boring
    clip over one tubelet gives the 2D logits); the 2D preset loads them as they are; a ``name.tag`` string works
    as ``pretrained`` (what ``--model.pretrained`` passes)."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    ref = vit3d.VisionTransformer(224, 16, num_classes=1000, embed_dim=192, depth=1, num_heads=3).eval()
    folder = tmp_path / "timm"
    folder.mkdir()
    save_file(ref.state_dict(), folder / "model.safetensors")
    (folder / "config.json").write_text('{"architecture": "vit_tiny_patch16_224", "num_classes": 1000}')
    frame = torch.randn(1, 3, 224, 224)
    clip = frame.unsqueeze(2).expand(-1, -1, 2, -1, -1)
    with FakeHub({"timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k": repo_from_folder(folder, COMMIT)}) as hub:
        hub_env(hub.url)
        with torch.no_grad():
            m3 = vit3d.create_model("vit_tiny_patch16_3d", pretrained=True, depth=1, img_size=(2, 224, 224)).eval()
            assert float((m3(clip) - ref(frame)).abs().max()) <= 1e-4
            assert "pretrained tag vit_tiny_patch16_3d.augreg_in21k_ft_in1k" in m3.load_report.notes[0]
            assert any(k == "patch_embed.proj.weight" for k, *_ in m3.load_report.resampled)
            m2 = vit3d.create_model("vit_tiny_patch16_2d.augreg_in21k_ft_in1k", pretrained=True, depth=1).eval()
            assert torch.equal(m2(frame), ref(frame))
            fresh = vit3d.create_model(None, pretrained="vit_tiny_patch16_3d.augreg_in21k_ft_in1k", depth=1,
                                       img_size=(2, 224, 224), num_classes=5)
        assert fresh.num_classes == 5 and any(k == "head.weight" for k, *_ in fresh.load_report.reinitialised)
    with pytest.raises(ValueError, match="no pretrained tag 'in21k'.*its tags"):
        vit3d.create_model("vit_tiny_patch16_3d.in21k", pretrained=True)
    with pytest.raises(ValueError, match="cct_7_3x2_32_2d has no pretrained weights registered"):
        vit3d.create_model("cct_7_3x2_32_2d", pretrained=True)
