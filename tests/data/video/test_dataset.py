"""VideoClipDataset: sample contract, clips by real timestamps, validate() against a full epoch of random
sampling, per-sample seeds, skipped samples, folders, multi-view testing."""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vit3d.data import VideoClipDataset, average_views, collate
from vit3d.data.common import FailedSample, SampleError
from vit3d.data.seeding import SampleKey, sample_seed
from vit3d.data.synthetic import write_mp4
from vit3d.data.video import MetadataCache, PyAVDecoder, probe
from vit3d.errors import ConfigError

from . import corpus
from .corpus import Item

PLAIN = dict(mean=(0, 0, 0), std=(1, 1, 1))


def _rows(table: Path) -> list[dict]:
    with table.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def gradient_mp4(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A 20-frame 48x64 clip whose frames differ (moving gradient), written by PyAV."""
    t, h, w = 20, 48, 64
    yy, xx = np.mgrid[0:h, 0:w]
    frames = np.zeros((t, h, w, 3), dtype=np.uint8)
    for i in range(t):
        frames[i, ..., 0] = (xx * 4 + i * 9) % 256
        frames[i, ..., 1] = (yy * 5) % 256
        frames[i, ..., 2] = 40 + 10 * i
    path = write_mp4(tmp_path_factory.mktemp("mp4") / "gradient.mp4", frames, fps=10, crf=0)
    return path, frames


def test_clip_samples_contract_and_normalisation_oracle(gradient_mp4: tuple[Path, np.ndarray]) -> None:
    path, _ = gradient_mp4
    ds = VideoClipDataset([{"path": str(path), "label": "a"}], frames=5, stride=3, img_size=(48, 64))
    s = ds[0]
    assert set(s) == {"image", "label", "id", "view", "times"} and s["id"] == str(path) and s["view"] == 0
    assert s["image"].dtype == torch.float32 and tuple(s["image"].shape) == (3, 5, 48, 64)
    assert ds.img_size == (5, 48, 64) and ds.in_chans == 3 and ds.classes == ["a"]
    # the middle clip: span 12 of frames 0..19 -> start 4 (slack 7 / 2 rounded), frames 4, 7, ..., 16
    frames = PyAVDecoder().frames(probe(path), [4, 7, 10, 13, 16])
    expected = (torch.from_numpy(frames).float() / 255 - 0.45) / 0.225
    torch.testing.assert_close(s["image"], expected.permute(3, 0, 1, 2))
    torch.testing.assert_close(s["times"], torch.tensor([0.4, 0.7, 1.0, 1.3, 1.6]))


def test_fps_and_start_end(gradient_mp4: tuple[Path, np.ndarray]) -> None:
    path, _ = gradient_mp4
    ds = VideoClipDataset([{"path": str(path), "label": "a", "start": "0.5", "end": "1.5"}], frames=4, fps=5,
                          img_size=(48, 64), **PLAIN)
    clip = ds.plan(ds.rows[0][1], ds.meta(str(path)))[0]
    # frames [0.5 s, 1.5 s) = 5..14; a 0.6 s clip at 5 fps, centred: starts at 0.5 + 0.15
    assert clip.indices.tolist() == [6, 8, 10, 12]
    frames = PyAVDecoder().frames(probe(path), [6, 8, 10, 12])
    torch.testing.assert_close(ds[0]["image"], torch.from_numpy(frames).float().div(255).permute(3, 0, 1, 2))


def test_variable_frame_rate_and_offsets_decode_the_right_frames(video_corpus: dict[str, Item]) -> None:
    """fps sampling picks the frame shown at each time (oracle: the times the corpus was written with)."""
    for name in ("vfr_mp4", "offset_mp4", "edit_mp4", "h264_ts"):
        item = video_corpus[name]
        ds = VideoClipDataset([{"path": str(item.path), "label": "a"}], frames=8, fps=4, img_size=(24, 32),
                              train=True, flip=False, decode_resize=False, **PLAIN)
        times = np.asarray(item.times)
        for epoch in range(8):
            s = ds[SampleKey(0, sample_seed(0, epoch, 0))]
            t = s["times"].numpy()
            shown = [int(np.searchsorted(times, x + 1e-6, side="right") - 1) for x in t]
            frames = (s["image"].permute(1, 2, 3, 0).numpy() * 255).round().astype(np.uint8)
            assert [corpus.frame_id(f) for f in frames] == [item.ids[i] for i in shown], (name, t)
            assert np.allclose(np.diff(t), 0.25, atol=0.1) or name == "vfr_mp4"


def test_validate_flags_broken_files_and_nothing_that_passed_fails_an_epoch(video_corpus: dict[str, Item],
                                                                            tmp_path: Path) -> None:
    rows = [{"path": str(it.path), "label": "a"} for it in video_corpus.values()]
    cache = MetadataCache()
    for decoder in ("pyav", "decord"):
        if decoder == "decord":
            pytest.importorskip("decord")
        ds = VideoClipDataset(rows, frames=6, stride=2, img_size=(24, 24), train=True, decoder=decoder,
                              metadata_cache=cache)
        report = ds.validate(num_workers=2)
        flagged = {Path(b.file).name for b in report}
        assert flagged == {it.path.name for it in video_corpus.values() if it.broken}, report.format_report()
        probes = cache.probes
        good = [i for i, (_, r) in enumerate(ds.rows) if Path(r["path"]).name not in flagged]
        for epoch in range(4):  # full epochs of random clips: every draw decodes, nothing re-probed
            for i in good:
                s = ds[SampleKey(i, sample_seed(0, epoch, i))]
                assert isinstance(s, dict) and s["image"].shape == (3, 6, 24, 24)
        assert cache.probes == probes
        if decoder == "decord":  # the files decord mishandles are decoded with PyAV, and said so
            noted = " ".join(report.notes)
            assert "theora.ogv: decoded with PyAV" in noted and "h264.ts: decoded with PyAV" in noted


def test_damaged_tail_passes_validate_and_every_random_clip_decodes(video_corpus: dict[str, Item]) -> None:
    """The old check decoded only the middle clip; random clips near the end then failed in training."""
    item = video_corpus["damaged_tail"]
    ds = VideoClipDataset([{"path": str(item.path), "label": "a"}], frames=4, stride=1, img_size=(24, 32),
                          train=True, flip=False, decode_resize=False, **PLAIN)
    assert not ds.validate()
    meta = ds.meta(str(item.path))
    last_seen = 0
    for k in range(120):
        s = ds[SampleKey(0, k)]
        last_seen = max(last_seen, int(np.round(s["times"][-1].item() * 10)))
    assert last_seen == meta.num_frames - 1  # random clips reach the last decodable frame, and decode


def test_sample_keys_seed_every_random_draw(clip_csv: Path) -> None:
    ds = VideoClipDataset(clip_csv, split="train", frames=4, stride=2, img_size=(24, 24), train=True)
    a, b = ds[SampleKey(1, 123)], ds[SampleKey(1, 123)]
    torch.testing.assert_close(a["image"], b["image"])
    others = [ds[SampleKey(1, s)]["image"] for s in range(124, 130)]
    assert any(not torch.equal(a["image"], o) for o in others)
    assert isinstance(ds[1], dict)  # plain indices keep working


def test_skip_returns_failed_sample_logged_once(video_corpus: dict[str, Item], caplog: pytest.LogCaptureFixture
                                                ) -> None:
    rows = [{"path": str(video_corpus["zero"].path), "label": "a"},
            {"path": str(video_corpus["h264_mp4"].path), "label": "a"}]
    ds = VideoClipDataset(rows, frames=4, img_size=(24, 24), on_error="skip")
    with caplog.at_level(logging.WARNING, logger="vit3d.data"):
        out = [ds[0] for _ in range(3)]
    assert out[0] == FailedSample(id=str(video_corpus["zero"].path), reason=out[0].reason)
    assert "empty file" in out[0].reason
    assert sum("zero.mp4" in r.message for r in caplog.records) == 1
    batch = collate([ds[0], ds[1]])
    assert batch["image"].shape[0] == 1 and [f.id for f in batch["failed"]] == [str(video_corpus["zero"].path)]
    with pytest.raises(SampleError, match=r"empty file \(0 bytes\) \(.*zero.mp4\); re-copy"):
        VideoClipDataset(rows, frames=4, img_size=(24, 24))[0]


def test_short_video_error_and_repeat(gradient_mp4: tuple[Path, np.ndarray]) -> None:
    path, _ = gradient_mp4
    rows = [{"path": str(path), "label": "a"}]
    with pytest.raises(SampleError, match="video shorter than the clip: 20 frames"):
        VideoClipDataset(rows, frames=16, stride=2, img_size=(48, 64))[0]
    s = VideoClipDataset(rows, frames=16, stride=2, img_size=(48, 64), on_short="repeat")[0]
    assert s["times"][-1] == pytest.approx(1.9) and s["times"][0] == 0.0


def test_multi_view_testing(clip_csv: Path) -> None:
    ds = VideoClipDataset(clip_csv, split=["val", "test"], frames=8, stride=1, img_size=(32, 32), num_clips=2,
                          num_crops=3)
    videos = [r for r in _rows(clip_csv) if r["split"] in ("val", "test")]
    assert len(ds) == len(videos) * 6 and ds.num_views == 6
    batch = collate([ds[i] for i in range(len(ds))])
    assert tuple(batch["image"].shape) == (len(ds), 3, 8, 32, 32)
    assert batch["view"].tolist() == list(range(6)) * len(videos)
    assert len(set(batch["id"])) == len(videos)
    assert not torch.equal(batch["image"][0], batch["image"][1])  # crops differ
    assert not torch.equal(batch["image"][0], batch["image"][3])  # clips differ in time
    logits = torch.randn(len(ds), 4)
    ids, probs = average_views(logits, batch["id"])
    assert ids == list(dict.fromkeys(batch["id"]))
    torch.testing.assert_close(probs[0], logits[:6].softmax(-1).mean(0))


def test_training_clips_random_and_loader_workers(clip_csv: Path) -> None:
    ds = VideoClipDataset(clip_csv, split="train", frames=4, stride=2, img_size=(32, 32), train=True)
    outs = [ds[0]["image"] for _ in range(5)]
    assert all(o.shape == (3, 4, 32, 32) for o in outs)
    assert any(not torch.equal(outs[0], o) for o in outs[1:])
    ds.validate()  # fills the shared metadata cache before the workers fork
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate)
    assert sum(len(b["id"]) for b in loader) == len(ds)


def test_folder_layouts_as_dataset_keywords(clip_csv: Path, tmp_path: Path) -> None:
    for r in _rows(clip_csv):  # flat root/<class>/ plus a stray file
        (tmp_path / r["label"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(clip_csv.parent / r["path"], tmp_path / r["label"] / Path(r["path"]).name)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="has no val split .* set val_fraction="):
        VideoClipDataset(tmp_path, split="val", frames=8, img_size=(32, 32))
    train = VideoClipDataset(tmp_path, split="train", val_fraction=0.25, frames=8, img_size=(32, 32))
    val = VideoClipDataset(tmp_path, split="val", val_fraction=0.25, frames=8, img_size=(32, 32))
    assert len(train.rows) + len(val.rows) == len(_rows(clip_csv)) and len(val.rows) == 4  # 1 of 3 per class
    assert not set(train.paths) & set(val.paths) and train.classes == val.classes
    assert [Path(f).name for f, _ in train.ignored_files] == ["notes.txt"]
    assert "notes.txt: not used" in train.validate().format_report()
    s = train[0]
    assert train.classes[int(s["label"])] == Path(s["id"]).parent.name


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="num_crops=2 is not one of"):
        VideoClipDataset([], num_crops=2)
    with pytest.raises(ConfigError, match="num_clips=3 needs sampler='multi'"):
        VideoClipDataset([], num_clips=3, sampler="uniform")
    with pytest.raises(ConfigError, match="fps=0 must be positive"):
        VideoClipDataset([], fps=0)


def test_training_clips_decode_at_the_crop_scale(tmp_path: Path) -> None:
    """With decode_resize, FFmpeg delivers frames at the sample's random scale (smaller than the video), so no
    full-size RGB frame and no float resize are made; the clips agree with the full-size path."""
    t, h, w = 12, 96, 160
    yy, xx = np.mgrid[0:h, 0:w]
    frames = np.stack([np.stack([(xx * 2 + 5 * i) % 256, (yy * 3) % 256, np.full_like(xx, 90)], -1)
                       for i in range(t)]).astype(np.uint8)
    path = write_mp4(tmp_path / "wide.mp4", frames, fps=10, crf=0)
    rows = [{"path": str(path), "label": "a"}]
    fast, slow = (VideoClipDataset(rows, frames=4, stride=2, img_size=(32, 32), train=True, flip=False,
                                   decode_resize=r, **PLAIN) for r in (True, False))
    for seed in range(4):
        rng = np.random.default_rng(seed)
        decoded, _, cover = fast.load_clip(rows[0], 0, rng)
        assert tuple(decoded.shape[1:3]) == cover and cover[0] < h and cover[1] < w and min(cover) >= 32
        full, _, cover_full = slow.load_clip(rows[0], 0, np.random.default_rng(seed))
        assert tuple(full.shape[1:3]) == (h, w) and cover_full == cover  # same draws, same target size
        a, b = fast[SampleKey(0, seed)]["image"], slow[SampleKey(0, seed)]["image"]
        assert a.shape == b.shape == (3, 4, 32, 32)
        assert (a - b).abs().mean() < 0.03  # FFmpeg's vs torch's bilinear downscaling, in [0, 1] units
