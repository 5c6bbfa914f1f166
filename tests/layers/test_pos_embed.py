import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vit3d.layers import resample_pos_embed, sincos_pos_embed


@pytest.mark.parametrize("grid", [(7,), (4, 5), (2, 3, 4)])
def test_sincos_pairs_lie_on_unit_circle(grid):
    dim = 24
    pe = sincos_pos_embed(grid, dim)
    assert pe.shape == (math.prod(grid), dim)
    # each axis block is [sin | cos] of the same angles: sin^2 + cos^2 == 1
    k = dim // (2 * len(grid))
    for axis in range(len(grid)):
        block = pe[:, axis * 2 * k:(axis + 1) * 2 * k]
        torch.testing.assert_close(block[:, :k] ** 2 + block[:, k:] ** 2, torch.ones(len(pe), k))
    assert torch.unique(pe, dim=0).shape[0] == len(pe)  # every position distinct


def test_sincos_closed_form_2d():
    grid, dim = (3, 5), 16
    pe = sincos_pos_embed(grid, dim).numpy()
    k = dim // 4
    omega = 1.0 / 10000 ** (np.arange(k) / k)
    for r in range(3):
        for c in range(5):
            row = pe[r * 5 + c]
            np.testing.assert_allclose(row[:k], np.sin(r * omega), atol=1e-6)
            np.testing.assert_allclose(row[k:2 * k], np.cos(r * omega), atol=1e-6)
            np.testing.assert_allclose(row[2 * k:3 * k], np.sin(c * omega), atol=1e-6)
            np.testing.assert_allclose(row[3 * k:], np.cos(c * omega), atol=1e-6)


def test_sincos_uneven_split_and_bad_dims():
    assert sincos_pos_embed((2, 2, 2), 1024).shape == (8, 1024)  # 512 pairs over 3 axes: 171, 171, 170
    with pytest.raises(ValueError, match="even embed_dim"):
        sincos_pos_embed((2, 2), 15)
    with pytest.raises(ValueError, match="too small"):
        sincos_pos_embed((2, 2, 2), 4)


def test_resample_identity_when_sizes_match():
    pe = torch.randn(1, 1 + 2 * 3 * 4, 8)
    assert resample_pos_embed(pe, (2, 3, 4), (2, 3, 4)) is pe


def test_resample_2d_matches_bicubic_and_keeps_prefix():
    pe = torch.randn(1, 1 + 4 * 4, 6)
    out = resample_pos_embed(pe, (8, 6), (4, 4), num_prefix_tokens=1)
    assert out.shape == (1, 1 + 48, 6)
    assert torch.equal(out[:, :1], pe[:, :1])
    grid = pe[:, 1:].reshape(1, 4, 4, 6).permute(0, 3, 1, 2)
    ref = F.interpolate(grid, size=(8, 6), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(1, -1, 6)
    torch.testing.assert_close(out[:, 1:], ref)


def test_resample_3d_there_and_back_stays_close():
    # a smooth table (low-frequency sin-cos) survives up- then down-sampling almost unchanged
    grid = (4, 6, 6)
    coords = torch.stack(torch.meshgrid(*[torch.linspace(0, 1, g) for g in grid], indexing="ij"), -1).reshape(-1, 3)
    smooth = torch.sin(coords @ torch.randn(3, 24) * 0.5)  # slowly varying over the grid
    pe = torch.cat([torch.randn(1, 1, 24), smooth[None]], dim=1)
    up = resample_pos_embed(pe, (8, 12, 12), grid)
    back = resample_pos_embed(up, grid, (8, 12, 12))
    assert torch.equal(back[:, :1], pe[:, :1])
    err = (back - pe).abs()
    assert err.max() < 0.1 and err.mean() < 0.02


def test_resample_rejects_mismatched_tables():
    with pytest.raises(ValueError, match="does not hold 1 prefix tokens"):
        resample_pos_embed(torch.randn(1, 11, 4), (2, 2), (3, 3))
    with pytest.raises(ValueError, match="2-D grid"):
        resample_pos_embed(torch.randn(1, 10, 4), (2, 2, 2), (3, 3))


def test_sinusoid_table_closed_form():
    """Vaswani et al.'s layout: channel 2i = sin(pos / 10000^(2i/d)), 2i+1 = cos of the same angle."""
    from vit3d.layers import sinusoid_table

    n, d = 7, 10
    table = sinusoid_table(n, d).double()
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    freq = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    torch.testing.assert_close(table[:, 0::2], (pos * freq).sin(), atol=1e-7, rtol=0)
    torch.testing.assert_close(table[:, 1::2], (pos * freq).cos(), atol=1e-7, rtol=0)
    with pytest.raises(ValueError, match="num_positions"):
        sinusoid_table(0, 8)
