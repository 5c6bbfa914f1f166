"""Spatial clip transforms: sizes, crops, normalisation and its inverse."""

from __future__ import annotations

import torch

from vit3d.data.video import (
    cover_resize,
    cover_size,
    denormalize,
    normalize,
    resize,
    short_side_resize,
    three_crops,
    to_normalized,
)


def test_transforms() -> None:
    x = torch.rand(4, 3, 60, 80)
    assert tuple(short_side_resize(x, 30).shape) == (4, 3, 30, 40)
    crops = three_crops(x, (60, 60))
    assert [c.shape[-1] for c in crops] == [60, 60, 60]
    assert torch.equal(crops[0], x[..., :60]) and torch.equal(crops[2], x[..., 20:])
    n = normalize(x, (0.5, 0.4, 0.3), (0.1, 0.2, 0.3))
    torch.testing.assert_close(n[:, 1], (x[:, 1] - 0.4) / 0.2)
    torch.testing.assert_close(denormalize(n, (0.5, 0.4, 0.3), (0.1, 0.2, 0.3)), x)
    chw = n.permute(1, 0, 2, 3)  # (C, T, H, W) as the model sees clips
    torch.testing.assert_close(denormalize(chw, (0.5, 0.4, 0.3), (0.1, 0.2, 0.3)), x.permute(1, 0, 2, 3))


def test_cover_size_is_the_size_the_resize_steps_make() -> None:
    """cover_size (what decoders scale to) equals the shape short_side_resize + cover_resize produce."""
    for h, w in [(720, 1280), (1080, 1920), (480, 360), (48, 64)]:
        x = torch.zeros(1, 3, h, w)
        for factor in (1.0, 1.13, 1.25):
            for short_side in (None, 128):
                y = short_side_resize(x, int(round(short_side * factor))) if short_side else x
                y = cover_resize(y, (112, 112), 1.0 if short_side else factor)
                assert cover_size(h, w, (112, 112), factor, short_side) == tuple(y.shape[-2:]), (h, w, factor)


def test_resize_and_to_normalized_match_the_float_path() -> None:
    """uint8 frames: crop, convert and normalise in one copy == the float path (x / 255, normalize, to C-first)."""
    mean, std = (0.45, 0.4, 0.35), (0.225, 0.25, 0.3)
    u8 = torch.randint(0, 256, (4, 30, 40, 3), dtype=torch.uint8)
    tchw = u8.permute(0, 3, 1, 2)
    view = tchw[..., 3:27, 5:29].flip(-1)  # a flipped crop of channels-last frames: not contiguous
    expected = normalize(view.float() / 255, mean, std).permute(1, 0, 2, 3)
    got = to_normalized(view, mean, std)
    assert got.is_contiguous() and got.shape == (3, 4, 24, 24)
    torch.testing.assert_close(got, expected)
    assert resize(tchw, (30, 40)) is tchw  # nothing to do: no copy, no float
    small = resize(tchw, (15, 20))
    oracle = torch.nn.functional.interpolate(tchw.float(), size=(15, 20), mode="bilinear", antialias=True)
    torch.testing.assert_close(small, oracle)
