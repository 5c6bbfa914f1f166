"""Re-encoded copies for training: every frame and timestamp kept, at the size the crops need, used by the dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vit3d.data import VideoClipDataset
from vit3d.data.seeding import SampleKey
from vit3d.data.synthetic import write_mp4
from vit3d.data.video import MetadataCache, PyAVDecoder, probe
from vit3d.data.video.reencode import reencode, reencoded_path

PLAIN = dict(mean=(0, 0, 0), std=(1, 1, 1))


@pytest.fixture(scope="module")
def vfr_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 frames of 96x160 moving gradient, variable frame rate, first frame at 2.0 s."""
    t, h, w = 24, 96, 160
    yy, xx = np.mgrid[0:h, 0:w]
    frames = np.stack([np.stack([(xx * 2 + 7 * i) % 256, (yy * 3) % 256, np.full_like(xx, 10 * i)], -1)
                       for i in range(t)]).astype(np.uint8)
    gaps = np.where(np.arange(t) % 3 == 0, 100, 40)  # ms: 10 and 25 fps alternating
    pts = 2000 + np.concatenate([[0], np.cumsum(gaps[:-1])])
    return write_mp4(tmp_path_factory.mktemp("vfr") / "vfr.mp4", frames, pts=pts.tolist(), time_base=(1, 1000),
                     crf=0)


def test_reencode_keeps_every_frame_and_timestamp(vfr_video: Path, tmp_path: Path) -> None:
    meta = probe(vfr_video)
    out = reencode(meta, tmp_path / "small.mp4", (48, 80), crf=0, chunk=5)  # chunks across GOPs
    small = probe(out)
    assert (small.height, small.width) == (48, 80) and small.num_frames == meta.num_frames == 24
    np.testing.assert_allclose(small.timestamps, meta.timestamps, atol=1e-3)  # VFR and the 2 s offset kept
    ref = PyAVDecoder().frames(meta, range(24), (48, 80))
    got = PyAVDecoder().frames(small, range(24))
    diff = np.abs(got.astype(int)[:, None] - ref.astype(int)[None]).mean(axis=(2, 3, 4))  # (copy, source) frames
    assert diff.diagonal().max() < 6.0  # lossless x264; 4:2:0 chroma costs a few levels on this pattern
    assert (diff.argmin(axis=1) == np.arange(24)).all()  # each frame is its own source frame, in order
    assert not list(tmp_path.glob("tmp*"))  # written beside, then renamed


def test_dataset_decodes_the_small_copy_made_once(vfr_video: Path, tmp_path: Path) -> None:
    rows = [{"path": str(vfr_video), "label": "a"}]
    cache = tmp_path / "small"
    kw = dict(frames=4, stride=2, img_size=(32, 32), flip=False, metadata_cache=MetadataCache(), **PLAIN)
    fast = VideoClipDataset(rows, train=True, reencode_cache=cache, **kw)
    plain = VideoClipDataset(rows, train=True, **kw)
    for seed in range(3):
        a, b = fast[SampleKey(0, seed)], plain[SampleKey(0, seed)]
        assert np.array_equal(a["times"].numpy(), b["times"].numpy())  # same clip, same frames
        assert a["image"].shape == b["image"].shape == (3, 4, 32, 32)
        assert (a["image"] - b["image"]).abs().mean() < 0.03
    files = list(cache.glob("*.mp4"))
    meta = probe(vfr_video)
    # 1.25 x the cover of the 32x32 crop on 96x160: 40x67, even: 40x68
    assert files == [reencoded_path(meta, cache, (40, 68))]
    stamp = files[0].stat().st_mtime_ns
    evaluation = VideoClipDataset(rows, train=False, reencode_cache=cache, **kw)
    assert evaluation[0]["image"].shape == (3, 4, 32, 32)
    assert list(cache.glob("*.mp4")) == files and files[0].stat().st_mtime_ns == stamp  # reused, not rewritten


def test_no_copy_when_it_would_keep_more_than_half_the_pixels(vfr_video: Path, tmp_path: Path) -> None:
    for crop in (96, 64):  # covers x 1.25: 120x200 (larger than the video), 80x134 (70 % of its pixels)
        ds = VideoClipDataset([{"path": str(vfr_video), "label": "a"}], frames=4, img_size=(crop, crop),
                              train=True, reencode_cache=tmp_path / "small", **PLAIN)
        assert ds[SampleKey(0, 1)]["image"].shape == (3, 4, crop, crop)
    assert not (tmp_path / "small").exists()
