"""Every bad input of the data layer: validate() reports it with file and reason; at run time
``on_error='raise'`` raises an error naming the file, ``'skip'`` logs it and the epoch goes on."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from nibabel.testing import data_path

from vit3d.data import BadRow, SampleError, VideoClipDataset, VolumeDataset, collate
from vit3d.data.synthetic import write_mp4

from .helpers import write_nifti

VOLUME_CASES = {  # name -> (expected reason, regex)
    "missing": r"file not found; check the path",
    "corrupt": r"corrupt gzip data \(.*\); the file is damaged; copy it again",
    "flat": r"2D image of shape \(16, 16\) where a 3D volume is expected; pass on_2d='slice'",
    "series": r"4D series with 3 volumes of shape \(8, 8, 4\) where a 3D volume is expected; pass on_4d=",
    "nan": r"2 NaN and 1 infinite voxels; fix or clean the file",
    "unknown": r"unknown label 'banana': the classes \(from the training split\) are \['a', 'b'\]",
}


@pytest.fixture()
def volume_rows(tmp_path: Path) -> list[dict]:
    good = np.full((8, 8, 4), 40.0, dtype=np.float32)
    nan = good.copy()
    nan[0, 0, 0] = nan[1, 1, 1] = np.nan
    nan[2, 2, 2] = np.inf
    (tmp_path / "corrupt.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    rows = [
        {"image": str(write_nifti(tmp_path / "good0.nii.gz", good)), "label": "a"},
        {"image": str(tmp_path / "missing.nii.gz"), "label": "a"},
        {"image": str(tmp_path / "corrupt.nii.gz"), "label": "b"},
        {"image": str(write_nifti(tmp_path / "flat.nii.gz", np.ones((16, 16), np.float32))), "label": "a"},
        {"image": str(write_nifti(tmp_path / "series.nii.gz", np.ones((8, 8, 4, 3), np.float32))), "label": "b"},
        {"image": str(write_nifti(tmp_path / "nan.nii.gz", nan)), "label": "a"},
        {"image": str(write_nifti(tmp_path / "unknown.nii.gz", good)), "label": "banana"},
        {"image": str(write_nifti(tmp_path / "good1.nii.gz", good)), "label": "b"},
    ]
    return rows


def test_volume_validate_reports_every_bad_row(volume_rows: list[dict]) -> None:
    ds = VolumeDataset(volume_rows, classes=["a", "b"], img_size=(4, 8, 8))
    report = ds.validate(num_workers=2)
    assert [b.row for b in report] == [1, 2, 3, 4, 5, 6] and all(isinstance(b, BadRow) for b in report)
    for bad, (name, pattern) in zip(report, VOLUME_CASES.items(), strict=True):
        assert Path(bad.file).name.startswith(name), bad
        assert re.search(pattern, bad.reason), (pattern, bad.reason)
    text = str(report)
    assert text.startswith("6 of 8 rows are unusable:") and "row 5: " in text and "nan.nii.gz" in text
    assert str(VolumeDataset(volume_rows[:1], img_size=(4, 8, 8)).validate()) == "all 1 rows are usable"


@pytest.mark.parametrize("row", range(1, 7))
def test_volume_raise_names_the_file(volume_rows: list[dict], row: int) -> None:
    name, pattern = list(VOLUME_CASES.items())[row - 1]
    ds = VolumeDataset(volume_rows, classes=["a", "b"], img_size=(4, 8, 8))
    error = FileNotFoundError if name == "missing" else ValueError
    with pytest.raises(error) as info:
        ds[row]
    assert Path(info.value.file).name == f"{name}.nii.gz" and re.search(pattern, info.value.reason), info.value


def test_volume_configured_dimensionality_is_accepted(volume_rows: list[dict]) -> None:
    ds = VolumeDataset(volume_rows, classes=["a", "b"], img_size=(4, 8, 8), on_2d="slice", on_4d="mean")
    assert tuple(ds[3]["image"].shape) == (1, 4, 8, 8) and tuple(ds[4]["image"].shape) == (1, 4, 8, 8)
    nib4d = VolumeDataset([{"image": os.path.join(data_path, "example4d.nii.gz"), "label": "x"}], on_4d="first")
    assert tuple(nib4d[0]["image"].shape) == (1, 24, 96, 128)


@pytest.mark.parametrize("cache", ["none", "memory", "disk"])
def test_volume_skip_keeps_the_epoch_going(volume_rows: list[dict], tmp_path: Path, cache: str,
                                           caplog: pytest.LogCaptureFixture) -> None:
    ds = VolumeDataset(volume_rows, classes=["a", "b"], img_size=(4, 8, 8), on_error="skip", train=True,
                       cache=cache, cache_dir=tmp_path / "cache")
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate)
    with caplog.at_level(logging.WARNING, logger="vit3d.data"):
        ids = [i for batch in loader for i in batch.get("id", [])]
    assert [Path(i).name for i in ids] == ["good0.nii.gz", "good1.nii.gz"]
    skipped = " ".join(r.getMessage() for r in caplog.records)
    for name in VOLUME_CASES:
        assert f"{name}.nii.gz" in skipped


# ---------------------------------------------------------------------------------------------- video

VIDEO_CASES = {
    "missing": r"video not found; check the path",
    "corrupt": r"not a video container FFmpeg can read \(",
    "short": r"video shorter than the clip: 5 frames \(0.50 s at 8 fps\) but 8 frames at stride 2 need 15; "
             r"lower frames/stride or pass on_short='repeat'",
    "empty": r"no video stream \(streams: none\)",
    "unknown": r"unknown label 'banana': the classes \(from the training split\) are \['a', 'b'\]",
}


@pytest.fixture()
def video_rows(tmp_path: Path) -> list[dict]:
    import av

    rng = np.random.default_rng(0)
    clip = lambda n: rng.integers(0, 255, size=(n, 32, 32, 3), dtype=np.uint8)  # noqa: E731
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    with av.open(str(tmp_path / "empty.mp4"), "w") as container:  # a video stream without frames
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()
    return [
        {"path": str(write_mp4(tmp_path / "good0.mp4", clip(20))), "label": "a"},
        {"path": str(tmp_path / "missing.mp4"), "label": "a"},
        {"path": str(tmp_path / "corrupt.mp4"), "label": "b"},
        {"path": str(write_mp4(tmp_path / "short.mp4", clip(5))), "label": "a"},
        {"path": str(tmp_path / "empty.mp4"), "label": "b"},
        {"path": str(write_mp4(tmp_path / "unknown.mp4", clip(20))), "label": "banana"},
        {"path": str(write_mp4(tmp_path / "good1.mp4", clip(20))), "label": "b"},
    ]


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_video_validate_reports_every_bad_row(video_rows: list[dict], decoder: str) -> None:
    ds = VideoClipDataset(video_rows, classes=["a", "b"], frames=8, stride=2, img_size=(32, 32), decoder=decoder)
    report = ds.validate()
    assert [b.row for b in report] == [1, 2, 3, 4, 5]
    for bad, (name, pattern) in zip(report, VIDEO_CASES.items(), strict=True):
        assert Path(bad.file).name == f"{name}.mp4" and re.search(pattern, bad.reason), bad
    assert str(report).startswith("5 of 7 rows are unusable:")


@pytest.mark.parametrize("row", range(1, 6))
def test_video_raise_names_the_file(video_rows: list[dict], row: int) -> None:
    name, pattern = list(VIDEO_CASES.items())[row - 1]
    ds = VideoClipDataset(video_rows, classes=["a", "b"], frames=8, stride=2, img_size=(32, 32))
    error = FileNotFoundError if name == "missing" else SampleError
    with pytest.raises(error) as info:
        ds[row]
    assert Path(info.value.file).name == f"{name}.mp4" and re.search(pattern, info.value.reason), info.value


def test_video_short_clip_can_repeat_the_last_frame(video_rows: list[dict]) -> None:
    ds = VideoClipDataset(video_rows[3:4], frames=8, stride=2, img_size=(32, 32), on_short="repeat",
                          mean=(0, 0, 0), std=(1, 1, 1))
    x = ds[0]["image"]
    assert tuple(x.shape) == (3, 8, 32, 32)
    assert torch.equal(x[:, 2], x[:, 7])  # frames 4, 4, ...: the last frame (index 4) repeats


def test_video_skip_keeps_the_epoch_going(video_rows: list[dict], caplog: pytest.LogCaptureFixture) -> None:
    ds = VideoClipDataset(video_rows, classes=["a", "b"], frames=8, stride=2, img_size=(32, 32), train=True,
                          on_error="skip")
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate)
    with caplog.at_level(logging.WARNING, logger="vit3d.data"):
        ids = [i for batch in loader for i in batch.get("id", [])]
    assert [Path(i).name for i in ids] == ["good0.mp4", "good1.mp4"]
    skipped = " ".join(r.getMessage() for r in caplog.records)
    assert all(f"{name}.mp4" in skipped for name in VIDEO_CASES)
