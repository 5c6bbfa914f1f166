import pytest
import torch

from vit3d.layers import Block, DropPath, LayerScale, Mlp, check_choice, to_ntuple


def test_block_shape_and_gradients():
    block = Block(16, 2, init_values=1e-3, drop_path=0.1)
    x = torch.randn(2, 5, 16, requires_grad=True)
    out = block(x)
    assert out.shape == x.shape
    out.square().sum().backward()
    assert all(p.grad is not None for p in block.parameters())


def test_block_is_prenorm_residual():
    block = Block(8, 2).eval()
    x = torch.randn(1, 3, 8)
    h = x + block.attn(block.norm1(x))
    torch.testing.assert_close(block(x), h + block.mlp(block.norm2(h)))


def test_layerscale_scales_channels():
    ls = LayerScale(4, init_values=0.5)
    torch.testing.assert_close(ls(torch.ones(2, 4)), torch.full((2, 4), 0.5))


def test_drop_path_identity_at_eval_and_unbiased_in_training():
    dp = DropPath(0.25)
    x = torch.ones(20000, 1)
    assert torch.equal(dp.eval()(x), x)
    y = dp.train()(x)
    torch.testing.assert_close(torch.unique(y), torch.tensor([0.0, 1 / 0.75]))
    assert abs((y == 0).float().mean().item() - 0.25) < 0.02
    assert abs(y.mean().item() - 1.0) < 0.03
    with pytest.raises(ValueError, match=r"must be in \[0, 1\)"):
        DropPath(1.0)


def test_mlp_shapes():
    assert Mlp(8, 32, 4)(torch.randn(2, 3, 8)).shape == (2, 3, 4)


def test_helpers_errors_name_values():
    assert to_ntuple(3, 2) == (3, 3)
    with pytest.raises(ValueError, match="must be positive"):
        to_ntuple((1, 0), 2, "patch_size")
    with pytest.raises(ValueError, match="did you mean 'token'"):
        check_choice("global_pool", "tokn", ("token", "avg"))


def test_act_layers_closed_forms():
    """'gelu' is x * Phi(x); 'gelu_tanh' is Hendrycks & Gimpel's tanh approximation (HF gelu_fast, Flax gelu)."""
    import math

    from vit3d.layers import get_act_layer

    x = torch.linspace(-4, 4, 101, dtype=torch.float64)
    exact = 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
    tanh = 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    torch.testing.assert_close(get_act_layer("gelu")()(x), exact)
    torch.testing.assert_close(get_act_layer("gelu_tanh")()(x), tanh)
    assert float((exact - tanh).abs().max()) > 1e-4  # the two differ: the setting matters
    with pytest.raises(ValueError, match="did you mean 'gelu_tanh'"):
        get_act_layer("gelu_tan")
