"""Spatial clip transforms: sizes, crops, normalisation and its inverse."""

from __future__ import annotations

import torch

from vit3d.data.video import denormalize, normalize, short_side_resize, three_crops


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
