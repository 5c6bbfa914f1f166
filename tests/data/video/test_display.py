"""Showing clips: colour frames from model inputs, frame times, any-script titles, GIF timing from the clip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vit3d.data.video import normalize
from vit3d.data.video.display import (
    clip_to_rgb,
    frame_durations_ms,
    save_frame_montage,
    save_timed_gif,
    title_fonts,
)


def test_clip_to_rgb_undoes_normalisation() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, size=(4, 6, 8, 3), dtype=np.uint8)
    x = normalize(torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255, (0.45,) * 3, (0.225,) * 3)
    back = clip_to_rgb(x.permute(1, 0, 2, 3), (0.45,) * 3, (0.225,) * 3)
    np.testing.assert_array_equal(back, rgb)  # colour survives (not a grey montage)


def test_frame_durations_follow_the_clip() -> None:
    assert frame_durations_ms([0.0, 0.1, 0.2, 0.6, 0.7]) == [100, 100, 400, 100, 100]
    assert frame_durations_ms([0.0, 0.04, 0.08]) == [40, 40, 40]  # 25 fps, not a fixed default
    assert frame_durations_ms([1.0]) == [125]  # one frame: the fallback rate (8 fps)


def test_titles_never_render_as_boxes() -> None:
    families, shown = title_fonts("vidéo_Ωμέγα_видео.mp4")
    assert families == ("DejaVu Sans",) and shown == "vidéo_Ωμέγα_видео.mp4"  # DejaVu covers these scripts
    families, shown = title_fonts("日本語_😀.mp4")
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    # every character is either drawn by one of the chosen fonts or written as an escape
    cmaps = [set(FT2Font(e.fname).get_charmap()) for e in font_manager.fontManager.ttflist if e.name in families]
    for c in shown:
        assert c.isspace() or any(ord(c) in m for m in cmaps), (c, families)
    assert shown.endswith(".mp4")


def test_montage_and_gif(tmp_path: Path) -> None:
    from PIL import Image

    frames = np.zeros((6, 24, 32, 3), np.uint8)
    frames[..., 0] = 200  # red
    frames[:, :4, :4, 1] = np.arange(6)[:, None, None] * 40  # every frame differs (PIL merges equal frames)
    png = save_frame_montage(frames, tmp_path / "m.png", times=[0, 0.1, 0.2, 0.6, 0.7, 0.8], title="日本語.mp4")
    img = np.asarray(Image.open(png).convert("RGB"))
    assert (img[..., 0].astype(int) - img[..., 1] > 150).mean() > 0.05  # colour panels
    gif = save_timed_gif(frames, tmp_path / "a.gif", times=[0, 0.1, 0.2, 0.6, 0.7, 0.8])
    with Image.open(gif) as g:
        durations = []
        for i in range(g.n_frames):
            g.seek(i)
            durations.append(g.info["duration"])
    assert durations == [100, 100, 400, 100, 100, 100]
    with pytest.raises(ValueError, match="not \\(T, H, W, 3\\)"):
        save_frame_montage(frames[..., 0], tmp_path / "x.png")
