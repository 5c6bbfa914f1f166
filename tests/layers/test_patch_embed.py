import pytest
import torch
import torch.nn.functional as F

from vit3d.layers import PatchEmbed

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


@pytest.mark.parametrize("img_size,patch_size", [((12,), (4,)), ((8, 12), (4, 2)), ((4, 8, 12), (2, 4, 4))])
def test_patch_embed_equals_strided_conv(img_size, patch_size):
    n = len(img_size)
    pe = PatchEmbed(img_size, patch_size, in_chans=2, embed_dim=8)
    x = torch.randn(3, 2, *img_size)
    ref = CONV[n](x, pe.proj.weight, pe.proj.bias, stride=patch_size).flatten(2).transpose(1, 2)
    out = pe(x)
    grid = tuple(s // p for s, p in zip(img_size, patch_size, strict=True))
    assert pe.grid_size == grid and out.shape == (3, pe.num_patches, 8)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_tokens_are_row_major_over_the_grid():
    pe = PatchEmbed((4, 6, 6), (2, 3, 3), in_chans=1, embed_dim=4)
    x = torch.zeros(1, 1, 4, 6, 6)
    x[0, 0, 2:4, 3:6, 0:3] = 1.0  # patch at grid index (1, 1, 0)
    with torch.no_grad():
        pe.proj.bias.zero_()
        out = pe(x)
    hit = out[0].abs().sum(-1).nonzero().flatten().tolist()
    assert hit == [1 * 4 + 1 * 2 + 0]


def test_patch_embed_bad_arguments():
    with pytest.raises(ValueError, match=r"not divisible by patch_size \(2, 16, 16\) along axis 1"):
        PatchEmbed((16, 100, 112), (2, 16, 16))
    with pytest.raises(ValueError, match="3 entries but 2 spatial dims"):
        PatchEmbed((8, 8), (2, 2, 2), spatial_dims=2)
    pe = PatchEmbed((8, 8), 4, in_chans=3, embed_dim=8)
    with pytest.raises(ValueError, match="with 4 dims"):
        pe(torch.randn(1, 3, 8, 8, 8))
    with pytest.raises(ValueError, match="1 channels but the model was built with in_chans=3"):
        pe(torch.randn(1, 1, 8, 8))
    with pytest.raises(ValueError, match="dynamic_img_size=True"):
        pe(torch.randn(1, 3, 12, 8))
