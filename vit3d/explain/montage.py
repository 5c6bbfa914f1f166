"""PNG montages of a map over a whole scan or clip, readable the way their viewers are.

Volumes with an affine are shown in radiological convention, as PACS viewers and 3D Slicer's default views do:
the volume is reoriented to RAS (nibabel's ``io_orientation``), axial and coronal panels put the patient's right
on the viewer's left, sagittal panels put anterior on the left, superior and anterior are up, and each panel is
drawn with its true voxel aspect. Every panel carries orientation letters on its edges; a colour bar gives the
map's scale. Clips are shown frame by frame in colour, titled with each frame's time.

The layout is matplotlib's constrained layout, so panel titles, the figure title and the colour bar never
overlap. Titles render any file name: glyphs come from the first installed font that has them (DejaVu Sans
covers Latin, Greek, Cyrillic, Arabic, Hebrew, ...; CJK and others when a Noto font is installed), and a
character no font has is written as its ``\\u`` escape instead of an empty box.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np

from vit3d.errors import ConfigError
from vit3d.layers import check_choice

from .export import ArrayLike, _display, _display_map, _heat_rgba, _np

__all__ = ["View", "montage_figure", "radiological_slices", "safe_text", "save_montage"]

View = Literal["axial", "coronal", "sagittal"]

# Fonts tried in order for each glyph (matplotlib >= 3.6 falls back per glyph through a family list).
_FONT_PREFERENCE = ("DejaVu Sans", "Noto Sans", "Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans Arabic",
                    "Noto Sans Devanagari", "Noto Sans Thai", "Noto Sans Hebrew", "WenQuanYi Zen Hei",
                    "Arial Unicode MS", "STIXGeneral")


@lru_cache(maxsize=1)
def _fonts() -> tuple[tuple[str, ...], frozenset[int]]:
    """The installed fonts of the preference list and the union of their code points."""
    from matplotlib import font_manager, ft2font

    by_name: dict[str, str] = {}
    for entry in font_manager.fontManager.ttflist:
        by_name.setdefault(entry.name, entry.fname)
    names, points = [], set()
    for name in _FONT_PREFERENCE:
        if name in by_name:
            try:
                points.update(ft2font.FT2Font(by_name[name]).get_charmap())
            except (OSError, RuntimeError):
                continue
            names.append(name)
    return tuple(names) or ("DejaVu Sans",), frozenset(points)


def safe_text(text: str) -> str:
    """``text`` with every character that no installed font can draw replaced by its ``\\uXXXX`` escape."""
    _, points = _fonts()
    if not points:
        return text
    return "".join(ch if (ord(ch) in points or ch in "\n\t ") else f"\\u{ord(ch):04x}" for ch in text)


# Per view: the RAS axis sliced, then the RAS axes running down the rows and across the columns, whether each
# runs backwards (so that superior/anterior is up and the patient's right is on the viewer's left), and the
# letters at the (top, bottom, left, right) edges.
_VIEWS = {
    "axial": (2, (1, True), (0, True), ("A", "P", "R", "L")),
    "coronal": (1, (2, True), (0, True), ("S", "I", "R", "L")),
    "sagittal": (0, (2, True), (1, True), ("S", "I", "A", "P")),
}


def _to_ras(arrays: Sequence[np.ndarray | None], affine: np.ndarray
            ) -> tuple[list[np.ndarray | None], np.ndarray, np.ndarray]:
    """Reorient ``(X, Y, Z)`` arrays to RAS voxel order (axis flips and swaps only).

    Returns:
        The arrays, their voxel sizes in mm and their new voxel-to-world affine.
    """
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    shape = next(a for a in arrays if a is not None).shape
    out = [None if a is None else nib.orientations.apply_orientation(a, ornt) for a in arrays]
    new_affine = affine @ nib.orientations.inv_ornt_aff(ornt, shape)
    zooms = np.sqrt((new_affine[:3, :3] ** 2).sum(0))
    return out, zooms, new_affine


def radiological_slices(volume: np.ndarray, axis: int, rows: tuple[int, bool], cols: tuple[int, bool],
                        index: int) -> np.ndarray:
    """Panel ``index`` along RAS ``axis`` of a RAS-ordered ``(X, Y, Z)`` array, as ``(rows, cols)`` for imshow."""
    panel = np.take(volume, index, axis=axis)
    rest = [a for a in range(3) if a != axis]  # remaining RAS axes, in order, are the panel's axes
    panel = np.transpose(panel, (rest.index(rows[0]), rest.index(cols[0])))
    if rows[1]:
        panel = panel[::-1]
    if cols[1]:
        panel = panel[:, ::-1]
    return np.ascontiguousarray(panel)


def _slice_indices(n: int, num_slices: int, peak: int, lo: int = 0, hi: int | None = None) -> list[int]:
    hi = n - 1 if hi is None else hi
    if num_slices >= hi - lo + 1:
        return list(range(lo, hi + 1))
    idx = set(np.linspace(lo, hi, num_slices).round().astype(int).tolist())
    if peak not in idx:
        idx.remove(min(idx, key=lambda v: abs(v - peak)))
        idx.add(peak)
    return sorted(idx)


def _figure(n: int, cols: int, aspect: float, title: str | None):  # noqa: ANN202 - (figure, axes)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    panel = 2.2
    fig, axes = plt.subplots(rows, cols, figsize=(cols * panel * max(0.6, min(aspect, 3.0)) + 1.0,
                                                  rows * (panel + 0.35) + (0.6 if title else 0.2)),
                             squeeze=False, layout="constrained")
    for ax in axes.ravel():
        ax.axis("off")
    return fig, axes


def _finish(fig, axes, cmap: str, title: str | None, label: str):  # noqa: ANN001, ANN202 - the figure
    import matplotlib

    mappable = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(0.0, 1.0), cmap=cmap)
    bar = fig.colorbar(mappable, ax=axes.ravel().tolist(), shrink=0.8, fraction=0.03, pad=0.01)
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(safe_text(title), fontsize=10)
    return fig


def save_montage(volume: ArrayLike, amap: ArrayLike, path: str | Path, *, affine: ArrayLike | None = None,
                 view: View = "axial", num_slices: int = 12, cols: int = 6, cmap: str = "jet", alpha: float = 0.6,
                 mask: ArrayLike | None = None, title: str | None = None, axis_name: str = "slice",
                 floor: float = 0.9, frame_times: Sequence[float] | None = None) -> Path:
    """Write :func:`montage_figure` (same arguments) to ``path`` as a PNG at 100 dpi; returns ``path``."""
    import matplotlib.pyplot as plt

    fig = montage_figure(volume, amap, affine=affine, view=view, num_slices=num_slices, cols=cols, cmap=cmap,
                         alpha=alpha, mask=mask, title=title, axis_name=axis_name, floor=floor,
                         frame_times=frame_times)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path


def _panel(ax, image: np.ndarray, heat: np.ndarray, cmap: str, alpha: float, mask: np.ndarray | None,  # noqa: ANN001
           aspect: float, rgb: bool = False) -> None:
    ax.imshow(image, cmap=None if rgb else "gray", vmin=0, vmax=1, interpolation="nearest", aspect=aspect)
    ax.imshow(_heat_rgba(heat, cmap, alpha), interpolation="bilinear", aspect=aspect)
    if mask is not None and mask.max() > 0:
        ax.contour(mask > 0.5, levels=[0.5], colors="white", linewidths=1.0)


def _letters(ax, letters: tuple[str, str, str, str]) -> None:  # noqa: ANN001
    style = dict(color="yellow", fontsize=8, fontweight="bold", transform=ax.transAxes)
    top, bottom, left, right = letters
    ax.text(0.5, 0.98, top, ha="center", va="top", **style)
    ax.text(0.5, 0.02, bottom, ha="center", va="bottom", **style)
    ax.text(0.02, 0.5, left, ha="left", va="center", **style)
    ax.text(0.98, 0.5, right, ha="right", va="center", **style)


def montage_figure(volume: ArrayLike, amap: ArrayLike, *, affine: ArrayLike | None = None, view: View = "axial",
                   num_slices: int = 12, cols: int = 6, cmap: str = "jet", alpha: float = 0.6,
                   mask: ArrayLike | None = None, title: str | None = None, axis_name: str = "slice",
                   floor: float = 0.9, frame_times: Sequence[float] | None = None):  # noqa: ANN201 - a Figure
    """A matplotlib figure: montage of a map over a volume or a clip (the map's peak slice or frame is shown).

    Every text is created with the font fallback list of :func:`safe_text`, so any file name renders.

    Args:
        volume: with ``affine``: the scan ``(X, Y, Z)`` on its file grid (or ``(1, X, Y, Z)``); without: ``(D, H,
            W)`` grey or ``(3, T, H, W)`` colour (a clip as the model sees it), sliced along the first spatial axis.
        amap: the map on the same grid as ``volume`` (spatial shape only).
        affine: the 4x4 voxel-to-world (RAS) affine of ``volume``: shows the scan in radiological convention
            with orientation letters and true voxel aspect.
        view: ``'axial'``, ``'coronal'`` or ``'sagittal'`` (with ``affine``).
        num_slices: panels, evenly spaced over the slices where the scan has signal.
        cols: panels per row.
        cmap: matplotlib colormap of the overlay.
        alpha: opacity of the overlay at the map's maximum (it fades to transparent towards the floor).
        mask: optional mask on the same grid, drawn as a white contour (e.g. a lesion).
        title: figure title (any script; see :func:`safe_text`).
        axis_name: panel label without ``affine`` (``'slice'`` or ``'frame'``).
        floor: quantile of the map below which nothing is drawn (0 draws the plain min-max map).
        frame_times: seconds of each frame (clips): panels are titled ``t = 1.23 s``.
    """
    import matplotlib

    check_choice("view", view, tuple(_VIEWS))
    families, _ = _fonts()
    with matplotlib.rc_context({"font.family": list(families)}):
        return _montage(volume, amap, affine, view, num_slices, cols, cmap, alpha, mask, title, axis_name, floor,
                        frame_times)


def _montage(volume: ArrayLike, amap: ArrayLike, affine: ArrayLike | None, view: str, num_slices: int, cols: int,
             cmap: str, alpha: float, mask: ArrayLike | None, title: str | None, axis_name: str, floor: float,
             frame_times: Sequence[float] | None):  # noqa: ANN202
    vol = _np(volume)
    a = _display_map(amap, floor)
    m = None if mask is None else _np(mask)
    rgb = False
    if affine is None and vol.ndim == 4 and vol.shape[0] == 3:  # colour clip (3, T, H, W) -> (T, H, W, 3)
        vol, rgb = np.moveaxis(vol, 0, -1), True
    elif vol.ndim == 4 and vol.shape[0] == 1:
        vol = vol[0]
    elif vol.ndim == 4 and affine is None:
        vol = vol.mean(0)  # other channel counts: their mean in grey
    spatial = vol.shape[:3]
    if len(spatial) != 3 or a.shape != spatial:
        raise ConfigError(f"volume {tuple(_np(volume).shape)} and map {a.shape} must share one 3D grid (same shape)")
    if m is not None and m.shape != spatial:
        raise ConfigError(f"mask shape {m.shape} differs from the volume's {spatial}")
    if frame_times is not None and len(frame_times) != spatial[0]:
        raise ConfigError(f"{len(frame_times)} frame times for {spatial[0]} frames")
    shown = _display(vol) if not rgb else np.clip((vol - np.percentile(vol, 1)) /
                                                  max(np.percentile(vol, 99) - np.percentile(vol, 1), 1e-6), 0, 1)

    if affine is None:
        peak = int(np.unravel_index(int(a.argmax()), a.shape)[0])
        idx = _slice_indices(spatial[0], num_slices, peak)
        fig, axes = _figure(len(idx), cols, spatial[2] / spatial[1], title)
        for ax, i in zip(axes.ravel(), idx, strict=False):
            _panel(ax, shown[i], a[i], cmap, alpha, None if m is None else m[i], 1.0, rgb)
            label = f"t = {frame_times[i]:.2f} s" if frame_times is not None else f"{axis_name} {i}"
            ax.set_title(label + (" (peak)" if i == peak else ""), fontsize=8, color="red" if i == peak else "black")
        return _finish(fig, axes, cmap, title, "attention (normalised)")

    aff = np.asarray(_np(affine), dtype=np.float64)
    if aff.shape != (4, 4):
        raise ConfigError(f"affine must be 4x4 (voxel -> world), got shape {aff.shape}")
    (shown, a, m), zooms, ras_affine = _to_ras([shown, a, m], aff)
    axis, rows, cols_ax, letters = _VIEWS[view]
    peak = int(np.unravel_index(int(a.argmax()), a.shape)[axis])
    signal = np.nonzero((shown > 0.05).any(axis=tuple(x for x in range(3) if x != axis)))[0]
    lo, hi = (int(signal.min()), int(signal.max())) if signal.size else (0, shown.shape[axis] - 1)
    idx = _slice_indices(shown.shape[axis], num_slices, peak, min(lo, peak), max(hi, peak))
    aspect = float(zooms[rows[0]] / zooms[cols_ax[0]])  # mm per row over mm per column
    n_rows, n_cols = shown.shape[rows[0]], shown.shape[cols_ax[0]]
    fig, axes = _figure(len(idx), cols, n_cols / (n_rows * aspect), title)
    sign = {"axial": "S", "coronal": "A", "sagittal": "R"}[view]
    for ax, i in zip(axes.ravel(), idx, strict=False):
        panels = [radiological_slices(v, axis, rows, cols_ax, i) if v is not None else None for v in (shown, a, m)]
        _panel(ax, panels[0], panels[1], cmap, alpha, panels[2], aspect)
        _letters(ax, letters)
        mm = float(ras_affine[axis, axis] * i + ras_affine[axis, 3])  # world position of the slice, as scanners
        ax.set_title(f"{sign} {mm:.0f} mm" + (" (peak)" if i == peak else ""), fontsize=8,
                     color="red" if i == peak else "black")
    return _finish(fig, axes, cmap, title, "attention (normalised)")
