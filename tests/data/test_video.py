"""Video decoding (decord vs PyAV on PyAV-written H.264), clip samplers, transforms and multi-view testing."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vit3d.data import VideoClipDataset, average_views, collate
from vit3d.data.synthetic import write_mp4
from vit3d.data.video import (
    DecordDecoder,
    MultiClipSampler,
    PyAVDecoder,
    RandomClipSampler,
    UniformClipSampler,
    get_decoder,
    normalize,
    short_side_resize,
    three_crops,
)


def _rows(table: Path) -> list[dict]:
    with table.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def gradient_mp4(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A 20-frame 48x64 clip whose frames differ (moving gradient + frame number bars), written by PyAV."""
    t, h, w = 20, 48, 64
    yy, xx = np.mgrid[0:h, 0:w]
    frames = np.zeros((t, h, w, 3), dtype=np.uint8)
    for i in range(t):
        frames[i, ..., 0] = (xx * 4 + i * 9) % 256
        frames[i, ..., 1] = (yy * 5) % 256
        frames[i, ..., 2] = 40 + 10 * i
    path = write_mp4(tmp_path_factory.mktemp("mp4") / "gradient.mp4", frames, fps=10, crf=0)
    return path, frames


def test_decord_and_pyav_agree_frame_by_frame(gradient_mp4: tuple[Path, np.ndarray]) -> None:
    path, written = gradient_mp4
    d, a = DecordDecoder(), PyAVDecoder()
    assert d.info(str(path)) == a.info(str(path)) == (20, 10.0, 48, 64)
    all_idx = list(range(20))
    fd, fa = d.frames(str(path), all_idx), a.frames(str(path), all_idx)
    assert fd.shape == fa.shape == (20, 48, 64, 3) and fd.dtype == fa.dtype == np.uint8
    # both wrap FFmpeg's H.264 decoder and its yuv420p -> rgb24 conversion: measured identical, so no tolerance
    np.testing.assert_array_equal(fd, fa)
    # random access (seeking), unordered and repeated indices
    idx = [17, 3, 3, 12, 19, 0]
    np.testing.assert_array_equal(d.frames(str(path), idx), fa[idx])
    np.testing.assert_array_equal(a.frames(str(path), idx), fa[idx])
    # and the decoded frames are the written ones up to yuv420p chroma subsampling (lossless luma at crf=0)
    err = np.abs(fa.astype(np.float32) - written.astype(np.float32))
    assert err.mean() < 4.0, err.mean()


def test_synthetic_clips_decode_identically(clip_csv: Path) -> None:
    d, a = DecordDecoder(), PyAVDecoder()
    for r in _rows(clip_csv)[:3]:
        path = str(clip_csv.parent / r["path"])
        np.testing.assert_array_equal(d.frames(path, range(16)), a.frames(path, range(16)))


def test_samplers() -> None:
    u = UniformClipSampler()([0, 100][0], 100, frames=8, step=2)
    assert len(u) == 1 and u[0].indices.tolist() == list(range(42, 57, 2))  # span 15, centred
    rng = np.random.default_rng(0)
    starts = {int(RandomClipSampler()(10, 50, 8, 2, rng)[0].indices[0]) for _ in range(200)}
    assert min(starts) == 10 and max(starts) == 50 - 15 and len(starts) > 15
    m = MultiClipSampler(3)(0, 100, 4, 1.0)
    assert [c.clip_index for c in m] == [0, 1, 2]
    assert [c.indices[0] for c in m] == [16, 48, 80]  # centres of three equal segments
    frac = UniformClipSampler()(0, 30, 4, 2.5)[0].indices  # fps=12 from 30 fps: a 2.5 frame step
    assert np.diff(frac).tolist() in ([2, 3, 2], [3, 2, 3])


def test_transforms() -> None:
    x = torch.rand(4, 3, 60, 80)
    assert tuple(short_side_resize(x, 30).shape) == (4, 3, 30, 40)
    crops = three_crops(x, (60, 60))
    assert [c.shape[-1] for c in crops] == [60, 60, 60]
    assert torch.equal(crops[0], x[..., :60]) and torch.equal(crops[2], x[..., 20:])
    n = normalize(x, (0.5, 0.4, 0.3), (0.1, 0.2, 0.3))
    torch.testing.assert_close(n[:, 1], (x[:, 1] - 0.4) / 0.2)


def test_clip_samples_contract_and_normalisation_oracle(gradient_mp4: tuple[Path, np.ndarray]) -> None:
    path, _ = gradient_mp4
    ds = VideoClipDataset([{"path": str(path), "label": "a"}], frames=5, stride=3, img_size=(48, 64),
                          short_side=48, decoder="pyav")
    s = ds[0]
    assert set(s) == {"image", "label", "id", "view"} and s["id"] == str(path) and s["view"] == 0
    assert s["image"].dtype == torch.float32 and tuple(s["image"].shape) == (3, 5, 48, 64)
    assert ds.img_size == (5, 48, 64) and ds.in_chans == 3 and ds.classes == ["a"]
    # the middle clip: span 13 of 20 frames -> start 3, frames 3, 6, ..., 15; no resize, no crop
    frames = PyAVDecoder().frames(str(path), [3, 6, 9, 12, 15])
    expected = (torch.from_numpy(frames).float() / 255 - 0.45) / 0.225
    torch.testing.assert_close(s["image"], expected.permute(3, 0, 1, 2))


def test_fps_and_start_end(gradient_mp4: tuple[Path, np.ndarray]) -> None:
    path, _ = gradient_mp4
    ds = VideoClipDataset([{"path": str(path), "label": "a", "start": "0.5", "end": "1.5"}], frames=4, fps=5,
                          img_size=(48, 64), decoder="pyav", mean=(0, 0, 0), std=(1, 1, 1))
    clips, info = ds._clips(ds.rows[0][1], str(path))
    assert info.fps == 10.0
    assert clips[0].indices.tolist() == [6, 8, 10, 12]  # frames [5, 15) at a step of 10 / 5 = 2, centred
    frames = PyAVDecoder().frames(str(path), [6, 8, 10, 12])
    torch.testing.assert_close(ds[0]["image"], torch.from_numpy(frames).float().div(255).permute(3, 0, 1, 2))


def test_multi_view_testing(clip_csv: Path) -> None:
    ds = VideoClipDataset(clip_csv, split=["val", "test"], frames=8, stride=1, img_size=(32, 32), num_clips=2,
                          num_crops=3)
    videos = [r for r in _rows(clip_csv) if r["split"] in ("val", "test")]
    assert len(ds) == len(videos) * 6 and ds.num_views == 6
    batch = collate([ds[i] for i in range(len(ds))])
    assert tuple(batch["image"].shape) == (len(ds), 3, 8, 32, 32)
    assert batch["view"].tolist() == list(range(6)) * len(videos)
    assert len(set(batch["id"])) == len(videos)
    # the three crops of one clip differ (64 px wide frames, 32 px crops), the two clips differ in time
    assert not torch.equal(batch["image"][0], batch["image"][1])
    assert not torch.equal(batch["image"][0], batch["image"][3])
    # per-video averaging of view predictions
    logits = torch.randn(len(ds), 4)
    ids, probs = average_views(logits, batch["id"])
    assert ids == list(dict.fromkeys(batch["id"]))
    torch.testing.assert_close(probs[0], logits[:6].softmax(-1).mean(0))


def test_training_clips_random_and_flip(clip_csv: Path) -> None:
    ds = VideoClipDataset(clip_csv, split="train", frames=4, stride=2, img_size=(32, 32), train=True)
    outs = [ds[0]["image"] for _ in range(5)]
    assert all(o.shape == (3, 4, 32, 32) for o in outs)
    assert any(not torch.equal(outs[0], o) for o in outs[1:])
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate)
    assert sum(len(b["id"]) for b in loader) == len(ds)


def test_folder_per_class_layout(clip_csv: Path, tmp_path: Path) -> None:
    for r in _rows(clip_csv):
        (tmp_path / r["split"] / r["label"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(clip_csv.parent / r["path"], tmp_path / r["split"] / r["label"] / Path(r["path"]).name)
    ds = VideoClipDataset(tmp_path, split="train", frames=8, img_size=(32, 32))
    train_rows = [r for r in _rows(clip_csv) if r["split"] == "train"]
    assert len(ds) == len(train_rows) and ds.classes == sorted({r["label"] for r in train_rows})
    s = ds[0]
    assert ds.classes[int(s["label"])] == Path(s["id"]).parent.name


def test_decord_failure_falls_back_to_pyav(tmp_path: Path) -> None:
    """decord 0.6.0 fails on 48 px wide H.264 frames (a buffer-size check); the dataset retries with PyAV."""
    frames = np.random.default_rng(0).integers(0, 255, size=(6, 32, 48, 3), dtype=np.uint8)
    path = write_mp4(tmp_path / "w48.mp4", frames, crf=0)
    with pytest.raises(Exception, match="size must exactly match"):
        DecordDecoder().frames(str(path), [0, 1])
    ds = VideoClipDataset([{"path": str(path), "label": "a"}], frames=3, stride=2, img_size=(32, 48))
    torch.testing.assert_close(ds[0]["image"], VideoClipDataset([{"path": str(path), "label": "a"}], frames=3,
                                                                stride=2, img_size=(32, 48), decoder="pyav")[0]["image"])
    with pytest.raises(ValueError, match=r"unreadable or corrupt video \(.*w48.mp4\)"):
        VideoClipDataset([{"path": str(path), "label": "a"}], frames=3, img_size=(32, 48), fallback=False)[0]


def test_decoder_choice() -> None:
    assert get_decoder("decord").name == "decord" and get_decoder("pyav").name == "pyav"
    with pytest.raises(ValueError, match="decoder='ffmpeg' is not one of"):
        get_decoder("ffmpeg")
    with pytest.raises(ValueError, match="num_crops=2 is not one of"):
        VideoClipDataset([], num_crops=2)


def test_scaled_decoding(tmp_path: Path) -> None:
    """FFmpeg scales while decoding (decord and PyAV, both bilinear) and the clip matches a full-size decode
    resized by torch up to interpolation differences."""
    yy, xx = np.mgrid[0:240, 0:320]
    frames = np.stack([np.stack([(xx + 3 * t) % 256, (yy * 2) % 256, (xx + yy) % 256], -1) for t in range(12)])
    path = str(write_mp4(tmp_path / "v.mp4", frames.astype(np.uint8), crf=10))
    d, a = DecordDecoder().frames(path, [2, 7], (60, 80)), PyAVDecoder().frames(path, [2, 7], (60, 80))
    assert d.shape == a.shape == (2, 60, 80, 3)
    diff = np.abs(d.astype(np.float32) - a.astype(np.float32))
    assert diff.mean() < 1.0 and diff.max() <= 40, (diff.mean(), diff.max())  # measured 0.15 / 13 on 720p
    kw = dict(frames=4, stride=2, img_size=(48, 48), mean=(0, 0, 0), std=(1, 1, 1))
    ds = VideoClipDataset([{"path": path, "label": "a"}], **kw)
    assert ds._decode_size(ds._decode("info", path)) == (48, 64)
    scaled = ds[0]["image"]
    full = VideoClipDataset([{"path": path, "label": "a"}], decode_resize=False, **kw)[0]["image"]
    assert scaled.shape == full.shape == (3, 4, 48, 48)
    assert (scaled - full).abs().mean() < 0.02
