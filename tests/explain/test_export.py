"""Export of maps: back onto the original file grid (checked against MONAI's inverse), NIfTI, PNG, GIF, mp4."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from vit3d.explain import (
    invert_with_transform,
    normalize_map,
    overlay_rgb,
    resample_to_reference,
    save_clip_overlay,
    save_montage,
    save_nifti,
)

FILE_SHAPE = (20, 24, 14)
# LPS-style flips of x and y, anisotropic spacing, an offset: what scanners and vit3d.data.synthetic write.
FILE_AFFINE = np.array([[-0.9, 0, 0, 12.0], [0, -1.1, 0, 20.0], [0, 0, 2.5, -30.0], [0, 0, 0, 1]])


@pytest.fixture
def nifti_file(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "vol.nii.gz"
    img = nib.Nifti1Image(rng.normal(size=FILE_SHAPE).astype(np.float32), FILE_AFFINE)
    img.set_sform(FILE_AFFINE, code=2)
    img.set_qform(FILE_AFFINE, code=1)
    nib.save(img, path)
    return path


def _eval_transform():  # noqa: ANN202 - a MONAI Compose
    from monai.transforms import (
        Compose,
        EnsureChannelFirst,
        LoadImage,
        Orientation,
        ResizeWithPadOrCrop,
        Spacing,
    )

    return Compose([LoadImage(image_only=True), EnsureChannelFirst(), Orientation("RAS"),
                    Spacing(pixdim=(1.5, 1.5, 1.5)), ResizeWithPadOrCrop((16, 16, 16))])


def _gaussian(shape: tuple[int, ...], centre: np.ndarray, sigma: float = 1.2) -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    return np.exp(-((grid - centre) ** 2).sum(-1) / (2 * sigma ** 2)).astype(np.float32)


def test_peak_at_a_known_model_location_lands_on_the_right_file_voxel(nifti_file: Path) -> None:
    transform = _eval_transform()
    image = transform(str(nifti_file))
    assert tuple(image.shape[1:]) == (16, 16, 16)
    voxel = np.array([11, 13, 6])  # a file voxel inside the cropped field of view
    world = FILE_AFFINE @ np.append(voxel, 1.0)
    model_voxel = (np.linalg.inv(image.affine.numpy()) @ world)[:3]
    amap = _gaussian((16, 16, 16), model_voxel)

    ours = resample_to_reference(amap, image.affine, FILE_AFFINE, FILE_SHAPE)
    assert ours.shape == FILE_SHAPE
    assert tuple(np.unravel_index(ours.argmax(), ours.shape)) == tuple(voxel)

    # Oracle: MONAI's own inverse of the eval transform gives the same map on the file grid.
    monai_map = invert_with_transform(amap, image, transform)
    assert monai_map.shape == FILE_SHAPE
    assert tuple(np.unravel_index(monai_map.argmax(), monai_map.shape)) == tuple(voxel)
    np.testing.assert_allclose(ours, monai_map, atol=0.05)


def test_resample_identity_and_flip() -> None:
    amap = np.random.default_rng(1).random((5, 6, 7)).astype(np.float32)
    eye = np.eye(4)
    np.testing.assert_allclose(resample_to_reference(amap, eye, eye, (5, 6, 7)), amap, atol=1e-6)
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = 4.0  # file voxel i sits where model voxel 4 - i is
    np.testing.assert_allclose(resample_to_reference(amap, eye, flip, (5, 6, 7), interpolation="nearest"),
                               amap[::-1], atol=1e-6)
    out = resample_to_reference(amap, eye, eye, (5, 6, 9))
    assert (out[..., 7:] == 0).all()  # outside the model's field of view


def test_nifti_keeps_the_input_shape_and_affine(nifti_file: Path, tmp_path: Path) -> None:
    amap = np.random.default_rng(2).random(FILE_SHAPE).astype(np.float32)
    out = save_nifti(amap, tmp_path / "maps" / "attn.nii.gz", FILE_AFFINE, reference=nifti_file)
    written, ref = nib.load(out), nib.load(nifti_file)
    assert written.shape == ref.shape
    np.testing.assert_allclose(written.affine, ref.affine, atol=1e-5)
    assert int(written.header["sform_code"]) == 2 and int(written.header["qform_code"]) == 1
    np.testing.assert_allclose(np.asarray(written.dataobj), amap)
    with pytest.raises(ValueError, match="resample the map onto the reference grid"):
        save_nifti(amap[:-1], tmp_path / "bad.nii.gz", FILE_AFFINE, reference=nifti_file)
    with pytest.raises(ValueError, match="4x4"):
        save_nifti(amap, tmp_path / "bad.nii.gz", np.eye(3))


def test_invert_needs_recorded_operations() -> None:
    with pytest.raises(ValueError, match="applied_operations"):
        invert_with_transform(np.zeros((4, 4, 4)), torch.zeros(1, 4, 4, 4), None)


def test_montage_is_a_real_png(tmp_path: Path) -> None:
    from PIL import Image

    vol = torch.randn(10, 32, 48)
    amap = torch.zeros(10, 32, 48)
    amap[7, 10:14, 20:24] = 1.0
    mask = (amap > 0).float()
    path = save_montage(vol, amap, tmp_path / "montage.png", num_slices=6, cols=3, mask=mask, title="t")
    with Image.open(path) as im:
        assert im.format == "PNG"
        w, h = im.size
        pixels = np.asarray(im.convert("RGB"))
    assert w > h > 100  # 3 columns of wide slices by 2 rows
    assert pixels.std() > 10  # not a blank canvas
    with pytest.raises(ValueError, match="same shape"):
        save_montage(vol, amap[:5], tmp_path / "bad.png")


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_clip_overlay_is_a_real_animation(tmp_path: Path, suffix: str) -> None:
    clip = torch.rand(3, 6, 40, 48)  # (C, T, H, W) as the model sees it
    amap = torch.rand(6, 40, 48)
    path = save_clip_overlay(clip, amap, tmp_path / f"clip{suffix}", fps=4, min_size=80)
    if suffix == ".gif":
        from PIL import Image

        with Image.open(path) as im:
            assert im.format == "GIF" and im.n_frames == 6 and im.size == (96, 80)  # enlarged 2x
    else:
        import av

        with av.open(str(path)) as container:
            frames = list(container.decode(video=0))
        assert len(frames) == 6 and (frames[0].width, frames[0].height) == (96, 80)
    with pytest.raises(ValueError, match="suffix"):
        save_clip_overlay(clip, amap, tmp_path / "clip.avi")


def test_overlay_blends_the_colormap() -> None:
    import matplotlib

    frames = np.zeros((2, 4, 5))
    amap = np.random.default_rng(3).random((2, 4, 5))
    a = normalize_map(amap)
    heat = matplotlib.colormaps["jet"](a)[..., :3]
    # opacity sqrt(value) * alpha over black frames
    np.testing.assert_allclose(overlay_rgb(frames, amap, alpha=1.0) / 255.0, np.sqrt(a)[..., None] * heat,
                               atol=1 / 255)
    assert overlay_rgb(frames, amap, alpha=0.0).max() == 0
    # with a median floor, the lower half of the map is not drawn at all
    floored = overlay_rgb(frames, amap, alpha=1.0, floor=0.5)
    assert (floored[a <= np.median(a)] == 0).all() and floored[a == 1].max() > 0
    with pytest.raises(ValueError, match="differs"):
        overlay_rgb(frames, amap[:, :3])
