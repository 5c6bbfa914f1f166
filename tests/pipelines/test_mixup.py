"""Mixup / CutMix on volumes and clips: exact identities of the mixed batch and its targets."""

from __future__ import annotations

import pytest
import torch

from pipelines.mixup import Mixup, smooth_one_hot


def test_smooth_one_hot() -> None:
    t = smooth_one_hot(torch.tensor([0, 2]), 4, 0.2)
    assert torch.allclose(t.sum(1), torch.ones(2))
    assert t[0, 0] == pytest.approx(0.8 + 0.05) and t[0, 1] == pytest.approx(0.05)


@pytest.mark.parametrize("spatial", [(4, 8, 8), (8, 8)])
def test_mixup_is_a_convex_combination(spatial: tuple[int, ...]) -> None:
    x, y = torch.randn(4, 2, *spatial), torch.tensor([0, 1, 2, 1])
    mix = Mixup(3, mixup_alpha=0.8, label_smoothing=0.0)
    out, target = mix(x, y, torch.Generator().manual_seed(1))
    # Sample 0 (class 0) is mixed with sample 3 (class 1), so its class-0 target weight is lam.
    lam = float(target[0, 0])
    assert 0.0 < lam < 1.0
    assert torch.allclose(out, lam * x + (1 - lam) * x.flip(0), atol=1e-6)
    assert torch.allclose(target.sum(1), torch.ones(4))


@pytest.mark.parametrize("cut_axes", [None, (1, 2)])
def test_cutmix_box_fraction_matches_lam(cut_axes: tuple[int, ...] | None) -> None:
    x = torch.arange(2 * 1 * 8 * 16 * 16, dtype=torch.float32).reshape(2, 1, 8, 16, 16)
    y = torch.tensor([0, 1])
    mix = Mixup(2, cutmix_alpha=1.0, cut_axes=cut_axes)
    out, target = mix(x, y, torch.Generator().manual_seed(3))
    from_other = (out[0] != x[0]).float().mean()
    assert float(target[0, 1]) == pytest.approx(float(from_other), abs=1e-6)  # 1 - lam = pasted fraction
    assert torch.equal(out[0][out[0] != x[0]], x[1][out[0] != x[0]])
    if cut_axes == (1, 2):  # the box runs through every frame
        changed = (out[0] != x[0]).any(dim=(0, 2, 3))
        assert changed.all() or not changed.any()


def test_same_generator_same_draws() -> None:
    x, y = torch.randn(4, 1, 4, 8, 8), torch.tensor([0, 1, 0, 1])
    mix = Mixup(2, mixup_alpha=0.4, cutmix_alpha=1.0)
    a = mix(x, y, torch.Generator().manual_seed(7))
    b = mix(x, y, torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="cut_axes"):
        Mixup(2, cutmix_alpha=1.0, cut_axes=(3,))(torch.randn(2, 1, 4, 4, 4), torch.tensor([0, 1]),
                                                  torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="label_smoothing"):
        Mixup(2, label_smoothing=1.5)
