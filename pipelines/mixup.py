"""Mixup and CutMix for batches of any number of spatial dims (volumes ``(B, C, D, H, W)``, clips ``(B, C, T, H, W)``).

- Mixup: Zhang et al. 2017, https://arxiv.org/abs/1710.09412
- CutMix: Yun et al. 2019, https://arxiv.org/abs/1905.04899; for clips, cutting only H and W (``cut_axes=(1, 2)``)
  gives VideoMix's spatial tube (Yun et al. 2020, https://arxiv.org/abs/2012.03161).

Batch mode as in timm: one ``lam`` per batch, each sample mixed with the batch in reverse order. Randomness comes from
an explicit ``torch.Generator`` so a resumed run draws the same numbers as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from vit3d.errors import ConfigError


def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """``(B,)`` int labels -> ``(B, num_classes)`` targets with ``1 - smoothing + smoothing / C`` on the true class."""
    off = smoothing / num_classes
    return F.one_hot(labels, num_classes).to(torch.float32) * (1.0 - smoothing) + off


class Mixup:
    """Mix a batch and its soft targets.

    Args:
        num_classes: classes of the targets.
        mixup_alpha: Beta(alpha, alpha) parameter for mixup; 0 disables mixup.
        cutmix_alpha: Beta(alpha, alpha) parameter for CutMix; 0 disables CutMix.
        prob: probability of mixing a given batch at all.
        switch_prob: probability of CutMix over mixup when both are enabled.
        label_smoothing: smoothing applied to the one-hot targets before mixing.
        cut_axes: spatial axes (0-based, over the spatial dims only) the CutMix box is cut along; ``None`` cuts all
            of them. For clips ``(T, H, W)``, ``(1, 2)`` keeps the box through every frame.
    """

    def __init__(self, num_classes: int, *, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, prob: float = 1.0,
                 switch_prob: float = 0.5, label_smoothing: float = 0.0,
                 cut_axes: Sequence[int] | None = None) -> None:
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ConfigError(f"mixup_alpha ({mixup_alpha}) and cutmix_alpha ({cutmix_alpha}) must be >= 0")
        if not 0.0 <= prob <= 1.0 or not 0.0 <= switch_prob <= 1.0:
            raise ConfigError(f"prob ({prob}) and switch_prob ({switch_prob}) must be in [0, 1]")
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.num_classes = num_classes
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob = prob, switch_prob
        self.label_smoothing = label_smoothing
        self.cut_axes = None if cut_axes is None else tuple(int(a) for a in cut_axes)

    @property
    def enabled(self) -> bool:
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

    def _beta(self, alpha: float, generator: torch.Generator) -> float:
        # Beta(a, a) = G1 / (G1 + G2) with G ~ Gamma(a, 1); torch.distributions.Beta takes no generator.
        g = torch._standard_gamma(torch.full((2,), alpha, dtype=torch.float64), generator=generator)
        return float(g[0] / g.sum())

    def cut_box(self, spatial: Sequence[int], lam: float,
                generator: torch.Generator) -> tuple[tuple[slice, ...], float]:
        """A random box covering about ``1 - lam`` of ``spatial``; returns the slices and the exact ``lam``."""
        spatial = tuple(spatial)
        axes = tuple(range(len(spatial))) if self.cut_axes is None else self.cut_axes
        bad = [a for a in axes if not 0 <= a < len(spatial)]
        if bad:
            raise ConfigError(f"cut_axes {axes} has axes {bad} outside the {len(spatial)} spatial dims of {spatial}")
        ratio = (1.0 - lam) ** (1.0 / len(axes))
        slices = []
        for axis, size in enumerate(spatial):
            if axis not in axes:
                slices.append(slice(0, size))
                continue
            cut = int(round(size * ratio))
            centre = int(torch.randint(0, size, (1,), generator=generator))
            lo, hi = max(0, centre - cut // 2), min(size, centre + cut - cut // 2)
            slices.append(slice(lo, hi))
        box = 1
        for s in slices:
            box *= s.stop - s.start
        total = 1
        for size in spatial:
            total *= size
        return tuple(slices), 1.0 - box / total

    def __call__(self, x: torch.Tensor, labels: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix ``x`` ``(B, C, *spatial)`` and int ``labels`` ``(B,)``; returns the batch and ``(B, C)`` soft targets."""
        target = smooth_one_hot(labels, self.num_classes, self.label_smoothing).to(x.device)
        if not self.enabled or float(torch.rand(1, generator=generator)) >= self.prob:
            return x, target
        use_cutmix = self.cutmix_alpha > 0 and (
            self.mixup_alpha == 0 or float(torch.rand(1, generator=generator)) < self.switch_prob)
        flipped = x.flip(0)
        if use_cutmix:
            lam = self._beta(self.cutmix_alpha, generator)
            slices, lam = self.cut_box(x.shape[2:], lam, generator)
            x = x.clone()
            x[(slice(None), slice(None), *slices)] = flipped[(slice(None), slice(None), *slices)]
        else:
            lam = self._beta(self.mixup_alpha, generator)
            x = x * lam + flipped * (1.0 - lam)
        return x, target * lam + target.flip(0) * (1.0 - lam)
