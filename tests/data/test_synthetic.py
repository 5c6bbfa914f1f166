"""The synthetic generators: real files, determinism, geometry, and labels that a single frame cannot give."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from vit3d.data import synthetic
from vit3d.errors import ConfigError


def _rows(table: Path) -> list[dict]:
    with table.open(newline="") as f:
        return list(csv.DictReader(f))


def test_volume_files_geometry_and_labels(volume_csv: Path) -> None:
    rows = _rows(volume_csv)
    assert len(rows) == 12 and set(rows[0]) == {"image", "label", "split", "mask"}
    assert sorted({r["label"] for r in rows}) == ["ring", "sphere", "tube"]
    assert {r["split"] for r in rows} <= {"train", "val", "test"} and any(r["split"] == "val" for r in rows)
    for r in rows[:3]:
        img = nib.load(volume_csv.parent / r["image"])
        mask = np.asarray(nib.load(volume_csv.parent / r["mask"]).dataobj)
        # stored as (x, y, z) = (W, H, D) with anisotropic spacing and an LPS-like affine (x, y flipped)
        assert img.shape == (32, 32, 16) and img.get_data_dtype() == np.int16
        np.testing.assert_allclose(img.header.get_zooms(), (1.0, 1.0, 2.0))
        assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
        hu = np.asarray(img.dataobj, dtype=np.float32)
        assert (hu == hu.min()).sum() > 0 and hu.min() <= -900  # air around the body
        inside = hu[mask > 0].mean()
        ring = (mask == 0) & (hu > -50)  # soft tissue outside the lesion
        assert 20 < np.median(hu[ring]) < 70 and inside > np.median(hu[ring]) + 50, "lesion must stand out"
        assert 20 < mask.sum() < mask.size // 4


def test_volume_dataset_is_seeded_and_idempotent(tmp_path: Path) -> None:
    a = synthetic.make_volume_dataset(tmp_path / "a", num_samples=4, shape=(8, 16, 16), seed=3)
    b = synthetic.make_volume_dataset(tmp_path / "b", num_samples=4, shape=(8, 16, 16), seed=3)
    c = synthetic.make_volume_dataset(tmp_path / "c", num_samples=4, shape=(8, 16, 16), seed=4)
    load = lambda t, i: np.asarray(nib.load(t.parent / _rows(t)[i]["image"]).dataobj)  # noqa: E731
    np.testing.assert_array_equal(load(a, 1), load(b, 1))
    assert not np.array_equal(load(a, 1), load(c, 1))
    stamp = (a.parent / _rows(a)[0]["image"]).stat().st_mtime_ns
    assert synthetic.make_volume_dataset(tmp_path / "a", num_samples=4, shape=(8, 16, 16), seed=3) == a
    assert (a.parent / _rows(a)[0]["image"]).stat().st_mtime_ns == stamp, "same parameters must not rewrite"
    synthetic.make_volume_dataset(tmp_path / "a", num_samples=4, shape=(8, 16, 16), seed=4)
    assert not np.array_equal(load(a, 1), load(b, 1)), "other parameters must rewrite"


def test_volume_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_classes=9 must be between 2 and 5"):
        synthetic.make_volume_dataset(tmp_path, num_classes=9)
    with pytest.raises(ValueError, match="spacing"):
        synthetic.make_volume_dataset(tmp_path, spacing=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="must be even"):
        synthetic.make_clip_dataset(tmp_path, size=(33, 32))


def _displacement(frames: np.ndarray, lag: int) -> np.ndarray:
    """Mean (dy, dx) shift of the moving object between frames t and t + lag (circular cross-correlation)."""
    fg = np.abs(frames.astype(np.float32) - np.median(frames, axis=0)).sum(-1)
    h, w = fg.shape[1:]
    shifts = []
    for t in range(len(fg) - lag):
        corr = np.fft.ifft2(np.fft.fft2(fg[t]).conj() * np.fft.fft2(fg[t + lag])).real
        dy, dx = np.unravel_index(np.argmax(corr), corr.shape)
        shifts.append(((dy + h // 2) % h - h // 2, (dx + w // 2) % w - w // 2))
    return np.mean(shifts, axis=0)


def test_clip_label_is_the_direction_of_motion(clip_csv: Path) -> None:
    import av

    rows = _rows(clip_csv)
    assert len(rows) == 12 and set(rows[0]) == {"path", "label", "split"}
    for r in rows:
        with av.open(str(clip_csv.parent / r["path"])) as container:
            frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
        assert frames.shape == (16, 32, 64, 3)  # video_frames defaults to 2 * frames
        dy, dx = _displacement(frames, lag=3)
        want = np.array({"right": (0, 1), "left": (0, -1), "down": (1, 0), "up": (-1, 0)}[r["label"]])
        moved = np.array([dy, dx])
        assert np.sign(np.round(moved / 2)).tolist() == want.tolist(), (r, moved)


def test_clip_single_frame_position_is_uninformative(tmp_path: Path) -> None:
    """The object wraps around the edges, so its position in any one frame is uniform for every class."""
    rng = np.random.default_rng(0)
    centroids = {"left": [], "right": []}
    for name in centroids:
        for _ in range(200):
            clip = synthetic._make_clip(name, 4, (32, 32), rng)
            fg = np.abs(clip[0].astype(np.float32) - clip[2].astype(np.float32)).sum(-1) > 60
            if fg.any():
                centroids[name].append(np.nonzero(fg)[1].mean())
    # same distribution of the first frame's column position for both directions
    assert abs(np.mean(centroids["left"]) - np.mean(centroids["right"])) < 2.5


def test_write_mp4_streams_frames_from_an_iterable(tmp_path: Path) -> None:
    """A generator of frames writes the same video as the stacked array (1080p sources need no 1 GB array)."""
    from vit3d.data.synthetic import write_mp4
    from vit3d.data.video import PyAVDecoder, probe

    frames = np.stack([np.full((32, 48, 3), 20 * t, dtype=np.uint8) for t in range(6)])
    a = write_mp4(tmp_path / "a.mp4", frames, crf=0)
    b = write_mp4(tmp_path / "b.mp4", (f for f in frames), crf=0)
    ma, mb = probe(a), probe(b)
    assert ma.num_frames == mb.num_frames == 6 and (mb.height, mb.width) == (32, 48)
    np.testing.assert_array_equal(PyAVDecoder().frames(ma, range(6)), PyAVDecoder().frames(mb, range(6)))
    with pytest.raises(ConfigError, match="no frames"):
        write_mp4(tmp_path / "c.mp4", iter([]))
