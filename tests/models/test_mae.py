"""Masked autoencoding: exact masks, an encoder that sees only visible patches, targets, gradients, learning."""

from __future__ import annotations

import math

import pytest
import torch

import vit3d
from vit3d.layers.patch_embed import patchify
from vit3d.models.mae import (
    MaskedAutoencoder,
    mask_from_bool,
    num_masked,
    patch_targets,
    random_mask,
    tube_mask,
    unpatchify,
)

# (name, overrides): every position type, with and without a class token, tubelets, 2D and 3D
CONFIGS = {
    "learn_cls": dict(img_size=(8, 16, 16), patch_size=(2, 4, 4)),
    "sincos_avg": dict(img_size=(8, 16, 16), patch_size=(2, 8, 8), pos_embed="sincos", class_token=False,
                       global_pool="avg"),
    "separable_cls": dict(img_size=(8, 16, 16), patch_size=(4, 4, 4), pos_embed="learn_separable"),
    "no_embed_class": dict(img_size=(8, 16, 16), patch_size=(2, 4, 4), no_embed_class=True),
    "none_layerscale": dict(img_size=(8, 16, 16), patch_size=(2, 4, 4), pos_embed="none", init_values=1e-2),
    "sincos_seq_gelu_tanh": dict(img_size=(8, 16, 16), patch_size=(2, 8, 8), pos_embed="sincos_seq",
                                 class_token=False, global_pool="avg", act_layer="gelu_tanh"),
    "2d": dict(img_size=(16, 16), patch_size=(4, 4), spatial_dims=2),
}


def tiny_encoder(**overrides: object) -> vit3d.VisionTransformer:
    args = dict(embed_dim=32, depth=2, num_heads=2, num_classes=0, in_chans=2)
    args.update(overrides)
    return vit3d.VisionTransformer(**args)  # type: ignore[arg-type]


def tiny_mae(encoder: vit3d.VisionTransformer, **kwargs: object) -> MaskedAutoencoder:
    return MaskedAutoencoder(encoder, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2, **kwargs)


# ---------------------------------------------------------------------- masks
@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.75, 0.9])
def test_random_mask_hides_the_exact_share(ratio: float) -> None:
    grid = (4, 5, 6)
    n = math.prod(grid)
    m = random_mask(7, grid, ratio, generator=torch.Generator().manual_seed(1))
    assert m.mask.shape == (7, n)
    assert (m.mask.sum(dim=1) == round(ratio * n)).all()
    assert m.ids_masked.shape == (7, round(ratio * n)) and m.ids_keep.shape == (7, n - round(ratio * n))
    # index lists are ascending, disjoint and agree with the boolean map
    for ids, flag in ((m.ids_masked, True), (m.ids_keep, False)):
        assert (ids.diff(dim=1) > 0).all()
        assert (m.mask.gather(1, ids) == flag).all()
    assert len({tuple(row.tolist()) for row in m.mask}) > 1, "samples of a batch share one mask"


@pytest.mark.parametrize("ratio", [0.5, 0.9])
def test_tube_mask_hides_whole_tubes(ratio: float) -> None:
    grid = (4, 6, 5)
    m = tube_mask(3, grid, ratio, generator=torch.Generator().manual_seed(0))
    per_frame = m.mask.view(3, grid[0], -1)
    assert (per_frame == per_frame[:, :1]).all(), "a hidden position must stay hidden in every frame"
    assert (per_frame[:, 0].sum(dim=1) == round(ratio * 30)).all()
    assert (m.mask.sum(dim=1) == grid[0] * round(ratio * 30)).all()


def test_masks_are_reproducible_from_a_seed() -> None:
    a = random_mask(2, (4, 4, 4), 0.75, generator=torch.Generator().manual_seed(3))
    b = random_mask(2, (4, 4, 4), 0.75, generator=torch.Generator().manual_seed(3))
    c = random_mask(2, (4, 4, 4), 0.75, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.mask, b.mask) and not torch.equal(a.mask, c.mask)


def test_mask_from_bool_round_trip_and_errors() -> None:
    mask = torch.tensor([[True, False, True, False], [False, True, True, False]])
    m = mask_from_bool(mask)
    assert m.ids_keep.tolist() == [[1, 3], [0, 3]] and m.ids_masked.tolist() == [[0, 2], [1, 2]]
    with pytest.raises(ValueError, match="same number"):
        mask_from_bool(torch.tensor([[True, False], [True, True]]))
    with pytest.raises(ValueError, match=r"\(B, N\) bool"):
        mask_from_bool(mask.long())


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 0.01])
def test_bad_ratios_are_refused(ratio: float) -> None:
    with pytest.raises(ValueError, match="mask_ratio"):
        num_masked(16, ratio)


def test_bad_arguments() -> None:
    enc = tiny_encoder(**CONFIGS["learn_cls"])
    with pytest.raises(ValueError, match="divisible"):
        MaskedAutoencoder(enc, decoder_embed_dim=10, decoder_num_heads=3)
    with pytest.raises(ValueError, match="mask_type"):
        tiny_mae(enc, mask_type="block")
    with pytest.raises(ValueError, match="VisionTransformer"):
        MaskedAutoencoder(torch.nn.Linear(2, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pixel_mean"):
        tiny_mae(enc, pixel_mean=(0.5,))
    with pytest.raises(ValueError, match="hides"):  # 2x2 in-plane grid: 0.9 of 4 tubes hides all of them
        tiny_mae(tiny_encoder(img_size=(4, 8, 8), patch_size=(2, 4, 4)), mask_type="tube", mask_ratio=0.9)


# ---------------------------------------------------------------------- the encoder sees visible tokens only
@pytest.mark.parametrize("name", list(CONFIGS))
def test_encoder_runs_on_visible_tokens_only(name: str) -> None:
    enc = tiny_encoder(**CONFIGS[name]).eval()
    mae = tiny_mae(enc, mask_ratio=0.75).eval()
    x = torch.randn(2, 2, *enc.img_size)
    mask = mae.random_mask(x, torch.Generator().manual_seed(0))
    seen: list[int] = []
    hook = enc.blocks[0].register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[1]))
    with torch.no_grad():
        latent = mae.forward_encoder(x, mask.ids_keep)
    hook.remove()
    keep = mask.ids_keep.shape[1]
    num_patches = enc.patch_embed.num_patches
    assert seen == [enc.num_prefix_tokens + keep] and keep == num_patches - round(0.75 * num_patches)
    # What is hidden cannot change the encoding: scramble every hidden patch's pixels.
    patches = patchify(x, enc.patch_size)
    noise = torch.randn_like(patches) * mask.mask[..., None]
    x2 = unpatchify(patches + 10 * noise, enc.grid_size, enc.patch_size, 2)
    with torch.no_grad():
        assert torch.equal(mae.forward_encoder(x2, mask.ids_keep), latent)
        # and with nothing hidden, the encoder is exactly the ViT's own forward_features
        everything = torch.arange(enc.patch_embed.num_patches).expand(2, -1)
        torch.testing.assert_close(mae.forward_encoder(x, everything), enc.forward_features(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_parameter_gets_a_gradient(name: str) -> None:
    enc = tiny_encoder(**CONFIGS[name])
    mae = tiny_mae(enc, mask_type="tube" if enc.spatial_dims == 3 else "random", mask_ratio=0.5)
    x = torch.randn(2, 2, *enc.img_size)
    loss = mae(x, mae.random_mask(x, torch.Generator().manual_seed(0)))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    # The pooling norm (fc_norm) and head belong to fine-tuning; everything else must learn.
    unused = {n for n, _ in enc.named_parameters() if n.startswith(("fc_norm", "head"))}
    missing = [n for n, p in mae.named_parameters() if p.grad is None and n.removeprefix("encoder.") not in unused]
    assert not missing, missing


def test_decoder_predicts_hidden_patches_only() -> None:
    enc = tiny_encoder(**CONFIGS["learn_cls"])
    mae = tiny_mae(enc, mask_ratio=0.75)
    x = torch.randn(3, 2, *enc.img_size)
    mask = mae.random_mask(x)
    pred = mae.predict(x, mask)
    assert pred.shape == (3, mask.ids_masked.shape[1], 2 * math.prod(enc.patch_size))


# ---------------------------------------------------------------------- targets and pictures
def test_patch_targets_normalise_each_patch_per_channel() -> None:
    x = torch.randn(2, 3, 4, 8, 8) * torch.tensor([1.0, 5.0, 0.1]).view(1, 3, 1, 1, 1) + 3
    t = patch_targets(x, (2, 4, 4))
    # reference: one patch at a time, channel by channel
    d, h, w = 1, 0, 1  # patch at grid (1, 0, 1) of (2, 2, 2)
    index = (d * 2 + h) * 2 + w
    for c in range(3):
        v = x[1, c, 2:4, 0:4, 4:8].flatten()
        ref = (v - v.mean()) / (v.std(unbiased=True) + 1e-6)
        torch.testing.assert_close(t[1, index, c * 32:(c + 1) * 32], ref)
    raw = patch_targets(x, (2, 4, 4), norm_pix=False)
    assert torch.equal(unpatchify(raw, (2, 2, 2), (2, 4, 4), 3), x)
    undone = patch_targets(x, (2, 4, 4), norm_pix=False, pixel_mean=(1, 2, 3), pixel_std=(2, 2, 2))
    torch.testing.assert_close(undone, patchify(x * 2 + torch.tensor([1.0, 2, 3]).view(1, 3, 1, 1, 1), (2, 4, 4)))


def test_a_perfect_prediction_reconstructs_the_input() -> None:
    enc = tiny_encoder(**CONFIGS["learn_cls"])
    mae = tiny_mae(enc, mask_ratio=0.75)
    x = torch.randn(2, 2, *enc.img_size)
    mask = mae.random_mask(x, torch.Generator().manual_seed(0))
    target = mae.targets(x)
    perfect = target.gather(1, mask.ids_masked[..., None].expand(-1, -1, target.shape[-1]))
    masked, recon, original = mae.reconstruct(x, mask, perfect)
    torch.testing.assert_close(recon, x, atol=1e-4, rtol=1e-4)
    assert torch.equal(original, x)
    hidden = unpatchify(mask.mask[..., None].expand(-1, -1, target.shape[-1]).float(), enc.grid_size,
                        enc.patch_size, 2).bool()
    assert torch.equal(masked[~hidden], x[~hidden])
    assert (masked[0][hidden[0]] == x[0].min()).all()
    assert float(mae.loss(x, perfect, mask)) < 1e-10


def test_loss_falls_within_a_few_dozen_steps() -> None:
    """Volumes of a random level and in-plane slope: the visible patches tell the hidden ones, so a model that
    reads them must beat every guess that ignores them (each patch position's mean over the set)."""
    g = torch.Generator().manual_seed(0)
    z, y, x = torch.meshgrid(*[torch.linspace(-1, 1, s) for s in (8, 16, 16)], indexing="ij")
    level, slope = torch.rand(16, generator=g) * 2 - 1, torch.rand(16, generator=g) - 0.5
    vols = (level[:, None, None, None] + slope[:, None, None, None] * (y + x))[:, None]
    torch.manual_seed(0)
    mae = MaskedAutoencoder(tiny_encoder(in_chans=1, img_size=(8, 16, 16), patch_size=(2, 4, 4)),
                            decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2, norm_pix_loss=False)
    opt = torch.optim.AdamW(mae.parameters(), lr=3e-3)
    losses = []
    for step in range(40):
        mask = mae.random_mask(vols, torch.Generator().manual_seed(step))
        loss = mae(vols, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    target = mae.targets(vols)
    blind = float(((target - target.mean(dim=0)) ** 2).mean())
    assert sum(losses[-5:]) / 5 < 0.5 * blind < 0.5 * losses[0], (losses, blind)
