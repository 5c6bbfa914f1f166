"""Probing real files: timestamps against the times they were written with, rotation, damaged tails, broken
files and the metadata cache."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from vit3d.data.common import MissingFileError
from vit3d.data.video import MetadataCache, VideoProbeError, probe, probe_many

from .corpus import Item


def test_timestamps_are_the_written_ones(video_corpus: dict[str, Item]) -> None:
    for name, item in video_corpus.items():
        if item.broken:
            continue
        meta = probe(item.path)
        n = meta.num_frames
        limit = item.usable_frames or len(item.ids)
        assert (n == len(item.ids)) if item.usable_frames is None else (0 < n <= limit), (name, n)
        np.testing.assert_allclose(meta.times, item.times[:n], atol=1e-3, err_msg=name)
        assert meta.rotation == item.rotation, name
        assert (meta.height, meta.width) == ((32, 24) if item.rotation in (90, 270) else (24, 32)), name


def test_start_offsets_are_kept_and_removed_for_sampling(video_corpus: dict[str, Item]) -> None:
    offset, ts = probe(video_corpus["offset_mp4"].path), probe(video_corpus["h264_ts"].path)
    assert offset.start_time == pytest.approx(2.5) and offset.times[0] == 0.0
    assert ts.start_time > 0 and ts.times[0] == 0.0  # MPEG-TS streams start at ~1.4 s
    edit = probe(video_corpus["edit_mp4"].path)  # 30 frames in the file, 5 discarded by the edit list
    assert edit.num_frames == 25 and edit.start_time == pytest.approx(0.0, abs=1e-3)


def test_variable_frame_rate(video_corpus: dict[str, Item]) -> None:
    meta = probe(video_corpus["vfr_mp4"].path)
    gaps = np.round(np.diff(meta.times), 3)
    assert sorted(set(gaps.tolist())) == [0.1, 0.4, 0.6]
    assert meta.fps == pytest.approx(29 / 3.7)


def test_damaged_tail_ends_at_the_last_decodable_frame(video_corpus: dict[str, Item]) -> None:
    meta = probe(video_corpus["damaged_tail"].path)
    assert 10 < meta.num_frames < 40 and meta.num_frames <= meta.declared_frames


@pytest.mark.parametrize("name, reason", [("zero", "empty file (0 bytes)"),
                                          ("audio_only", "no video stream (streams: audio); an audio-only"),
                                          ("no_index", "truncated before its"),
                                          ("text", "not a video container FFmpeg can read")])
def test_broken_files_get_specific_reasons(video_corpus: dict[str, Item], name: str, reason: str) -> None:
    with pytest.raises(VideoProbeError) as info:
        probe(video_corpus[name].path)
    assert reason in info.value.reason and info.value.file == str(video_corpus[name].path)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match="video not found"):
        probe(tmp_path / "nope.mp4")
    with pytest.raises(VideoProbeError, match="not a regular file"):
        probe(tmp_path)


def test_cache_keyed_by_size_and_mtime_and_kept_on_disk(video_corpus: dict[str, Item], tmp_path: Path) -> None:
    src = tmp_path / "v.mp4"
    shutil.copy(video_corpus["h264_mp4"].path, src)
    cache = MetadataCache(tmp_path / "cache")
    first = cache.get(src)
    assert cache.get(src) is first and cache.probes == 1
    again = MetadataCache(tmp_path / "cache")  # a new process: read from disk, no probe
    m = again.get(src)
    assert again.probes == 0 and np.array_equal(m.pts, first.pts) and m.rotation == first.rotation
    shutil.copy(video_corpus["vfr_mp4"].path, src)  # same path, new content: size/mtime change
    os.utime(src, ns=(first.mtime_ns + 10**9, first.mtime_ns + 10**9))
    changed = again.get(src)
    assert again.probes == 1 and changed.duration > first.duration
    bad = {p: r for p, r in probe_many([str(video_corpus["zero"].path), str(src)], again, num_workers=2).items()}
    assert isinstance(bad[str(video_corpus["zero"].path)], VideoProbeError)
