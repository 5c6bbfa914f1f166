"""Showing clips: colour frames back from model inputs, frame times, titles that render any file name, and
montage / GIF writers that use the clip's own timing.

These serve ``vit3d explain`` on clips: undo the normalisation to get colour frames (:func:`clip_to_rgb`),
overlay a map on them (:func:`vit3d.explain.export.overlay_rgb`), then write a PNG montage titled with each
frame's time (:func:`save_frame_montage`) or a GIF whose frame durations are the clip's
(:func:`save_timed_gif`). File names in any script are drawn with matplotlib's DejaVu Sans plus whichever
installed fonts cover the remaining characters (matplotlib's font fallback); characters no font covers are
written as ``\\uXXXX`` escapes rather than as empty boxes.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vit3d.errors import ConfigError

__all__ = ["clip_to_rgb", "frame_durations_ms", "save_frame_montage", "save_timed_gif", "title_fonts"]


def clip_to_rgb(image: Any, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """A model input ``(3, T, H, W)`` (normalised with ``mean`` / ``std``) as ``(T, H, W, 3)`` uint8 colour frames."""
    x = np.asarray(image.detach().cpu().float() if hasattr(image, "detach") else image, dtype=np.float32)
    if x.ndim != 4 or x.shape[0] != 3:
        raise ConfigError(f"clip of shape {x.shape} is not (3, T, H, W)")
    x = x * np.asarray(std, np.float32).reshape(3, 1, 1, 1) + np.asarray(mean, np.float32).reshape(3, 1, 1, 1)
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 3, 0)


def frame_durations_ms(times: Sequence[float], fallback_fps: float = 8.0) -> list[int]:
    """Display time of each frame in ms from the clip's frame times (seconds): the gap to the next frame; the last
    frame keeps the median gap. Variable-rate clips keep their rhythm; a single frame uses ``fallback_fps``."""
    t = np.asarray(times, dtype=np.float64)
    if t.size < 2:
        return [max(10, round(1000 / fallback_fps))] * int(t.size)
    gaps = np.diff(t)
    gaps = np.where(gaps > 0, gaps, np.median(gaps[gaps > 0]) if (gaps > 0).any() else 1 / fallback_fps)
    gaps = np.append(gaps, np.median(gaps))
    return [max(10, int(round(g * 1000 / 10)) * 10) for g in gaps]  # GIF stores centiseconds


@functools.cache
def _charmap(path: str) -> frozenset[int]:
    from matplotlib.ft2font import FT2Font

    try:
        return frozenset(FT2Font(path).get_charmap())
    except (OSError, RuntimeError, ValueError):
        return frozenset()


@functools.lru_cache(maxsize=256)
def title_fonts(text: str) -> tuple[tuple[str, ...], str]:
    """Font families (DejaVu Sans first) that together cover ``text``, and ``text`` with any character that no
    installed font covers replaced by its ``\\uXXXX`` escape. Pass both to matplotlib (``fontfamily=``)."""
    from matplotlib import font_manager

    families = ["DejaVu Sans"]
    dejavu = font_manager.findfont("DejaVu Sans")
    missing = {ord(c) for c in text if not c.isspace()} - _charmap(dejavu)
    if missing:
        for entry in sorted(font_manager.fontManager.ttflist, key=lambda f: f.name):
            covered = missing & _charmap(entry.fname)
            if covered and entry.name not in families:
                families.append(entry.name)
                missing -= covered
            if not missing:
                break
    shown = "".join(c if ord(c) not in missing else c.encode("unicode_escape").decode("ascii") for c in text)
    return tuple(families), shown


def save_frame_montage(frames: np.ndarray, path: str | Path, *, times: Sequence[float] | None = None,
                       title: str | None = None, num_frames: int = 8, cols: int = 4,
                       highlight: int | None = None) -> Path:
    """PNG montage of colour frames ``(T, H, W, 3)`` uint8 (e.g. with a map overlaid), each titled with its time.

    Args:
        frames: the frames, in display orientation.
        path: output ``.png``.
        times: seconds of each frame since the video's first frame (the dataset's ``times``); frame numbers
            when None.
        title: figure title (e.g. the file name; any script).
        num_frames: frames shown, evenly spaced (``highlight`` always among them).
        cols: panels per row.
        highlight: a frame to mark (e.g. the map's peak).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = np.asarray(frames)
    if f.ndim != 4 or f.shape[-1] != 3:
        raise ConfigError(f"frames of shape {f.shape} are not (T, H, W, 3) colour")
    n = f.shape[0]
    idx = sorted(set(np.linspace(0, n - 1, min(num_frames, n)).round().astype(int).tolist()))
    if highlight is not None and highlight not in idx:
        idx[int(np.argmin([abs(i - highlight) for i in idx]))] = highlight
        idx = sorted(set(idx))
    cols = min(cols, len(idx))
    rows = -(-len(idx) // cols)
    h, w = f.shape[1:3]
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.2 * max(1.0, w / h), rows * 2.2 + 0.6), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), idx, strict=False):
        ax.imshow(f[i], interpolation="nearest")
        label = f"t = {float(times[i]):.2f} s" if times is not None else f"frame {i}"
        ax.set_title(label, fontsize=8, color="red" if i == highlight else "black")
    if title:
        families, shown = title_fonts(title)
        fig.suptitle(shown, fontsize=9, fontfamily=list(families))
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def save_timed_gif(frames: np.ndarray, path: str | Path, *, times: Sequence[float] | None = None,
                   fps: float = 8.0, min_size: int = 256) -> Path:
    """Animated GIF of ``(T, H, W, 3)`` uint8 frames, each shown as long as it lasts in the clip (``times``),
    enlarged (nearest neighbour, integer factor) until the shorter side reaches ``min_size``."""
    from PIL import Image

    f = np.asarray(frames)
    factor = max(1, -(-min_size // min(f.shape[1:3])))
    f = f.repeat(factor, axis=1).repeat(factor, axis=2)
    durations = frame_durations_ms(times if times is not None else np.arange(len(f)) / fps, fps)
    images = [Image.fromarray(fr) for fr in f]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0)
    return path
