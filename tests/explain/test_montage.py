"""Montages: radiological convention with letters, colour bar, titles that never overlap, any file name."""

from __future__ import annotations

import warnings
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from vit3d.explain import safe_text, save_montage
from vit3d.explain.montage import _VIEWS, _to_ras, montage_figure, radiological_slices

# An LPS-stored scan (as DICOM keeps it): voxel x runs to the patient's left, y to posterior, z to superior.
LPS = np.array([[-2.0, 0, 0, 50.0], [0, -2.0, 0, 60.0], [0, 0, 3.0, -20.0], [0, 0, 0, 1]])


def _marker_volume(world: tuple[float, float, float]) -> tuple[np.ndarray, tuple[int, ...]]:
    vol = np.zeros((30, 34, 12), dtype=np.float32)
    vox = np.linalg.solve(LPS, np.r_[world, 1.0])[:3].round().astype(int)
    vol[tuple(vox)] = 1.0
    return vol, tuple(vox)


@pytest.mark.parametrize("view", ["axial", "coronal", "sagittal"])
def test_radiological_convention(view: str) -> None:
    """A marker at the patient's right, anterior, superior lands where a radiologist expects it in every view."""
    # world (RAS mm): right = +x, anterior = +y, superior = +z; the scan spans x in (-8, 50], y in (-6, 60]
    vol, _ = _marker_volume((40.0, 50.0, 10.0))
    (ras,), _, _ = _to_ras([vol], LPS)
    axis, rows, cols, letters = _VIEWS[view]
    index = int(np.argwhere(ras > 0)[0][axis])
    panel = radiological_slices(ras, axis, rows, cols, index)
    r, c = np.argwhere(panel > 0)[0]
    top_half, left_half = r < panel.shape[0] / 2, c < panel.shape[1] / 2
    if view == "axial":  # anterior up, patient's right on the viewer's left
        assert letters == ("A", "P", "R", "L") and top_half and left_half
    elif view == "coronal":  # superior up, right on the left
        assert letters == ("S", "I", "R", "L") and top_half and left_half
    else:  # superior up, anterior on the left
        assert letters == ("S", "I", "A", "P") and top_half and left_half


def test_nibabel_volume_montage_has_letters_colour_bar_and_separate_titles(tmp_path: Path) -> None:
    import nibabel as nib
    from nibabel.testing import data_path

    img = nib.load(Path(data_path) / "anatomical.nii")  # a real MR head volume with an x-flipped affine
    vol = np.asarray(img.dataobj, dtype=np.float32)
    amap = np.zeros_like(vol)
    amap[8:14, 20:26, 10:14] = 1.0
    for view in ("axial", "coronal", "sagittal"):
        fig = montage_figure(vol, amap, affine=img.affine, view=view, num_slices=10, cols=5,
                             title="anatomical.nii: class a (0.93), attention rollout, a long title to wrap around")
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        texts = [t.get_text() for ax in fig.axes for t in ax.texts]
        assert {"A", "P", "R", "L", "S", "I"} & set(texts) >= set(_VIEWS[view][3])
        assert len(fig.axes) == 10 + 1  # ten panels, one colour bar
        assert fig.axes[-1].get_ylabel() == "attention (normalised)"
        boxes = [ax.title.get_window_extent(renderer) for ax in fig.axes[:-1] if ax.title.get_text()]
        boxes.append(fig._suptitle.get_window_extent(renderer))
        assert len(boxes) == 11
        for a, b in combinations(boxes, 2):
            assert not a.overlaps(b), "two titles overlap"
        import matplotlib.pyplot as plt

        plt.close(fig)
    path = save_montage(vol, amap, tmp_path / "m.png", affine=img.affine, view="coronal")
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "PNG" and np.asarray(im.convert("RGB")).std() > 10


def test_any_file_name_renders(tmp_path: Path) -> None:
    name = "скан_βήτα_שלום_スキャン.nii.gz"  # Cyrillic, Greek, Hebrew (in DejaVu) and Japanese
    shown = safe_text(name)
    assert shown.startswith("скан_βήτα_שלום_")
    vol = np.random.default_rng(0).random((6, 16, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "Glyph ... missing from font(s)" for an empty box
        save_montage(vol, vol, tmp_path / "u.png", title=name, num_slices=3)
    from vit3d.explain.montage import _fonts

    _, points = _fonts()
    if ord("ス") in points:  # a CJK font is installed: drawn as is
        assert shown == name
    else:  # written as escapes, never as empty boxes
        assert "\\u30b9" in shown and "ス" not in shown


def test_colour_clip_montage_with_frame_times(tmp_path: Path) -> None:
    clip = np.zeros((3, 4, 16, 16), dtype=np.float32)
    clip[0] = 1.0  # pure red frames
    fig = montage_figure(clip, np.random.default_rng(1).random((4, 16, 16)), frame_times=[0.0, 0.04, 0.08, 0.12],
                         floor=0.99, alpha=0.0)
    titles = [ax.get_title() for ax in fig.axes[:-1]]
    assert titles[1] == "t = 0.04 s" and titles[2].startswith("t = 0.08 s")
    image = fig.axes[0].images[0].get_array()
    assert image.shape == (16, 16, 3) and image[..., 0].min() > 0.9 and image[..., 1].max() < 0.1  # colour kept
    with pytest.raises(ValueError, match="frame times"):
        montage_figure(clip, np.zeros((4, 16, 16)), frame_times=[0.0])
    with pytest.raises(ValueError, match="view"):
        montage_figure(clip[0], clip[0], affine=np.eye(4), view="oblique")  # type: ignore[arg-type]
