"""Volume transform presets (CT, MRI) built from MONAI dictionary transforms or TorchIO transforms.

Every preset is two stages, so that caching can keep the first:

- ``prepare`` (deterministic, cached): load and check each image key, orient to RAS, resample to
  ``spacing``, CT Hounsfield window clip and scale to [0, 1] or MRI z-score over the foreground, crop or
  bring the field of view to ``img_size`` (``fov``, below), reorder axes to ``(C, D, H, W)`` and stack the image
  keys as channels.
- ``augment`` (random, training only): the :class:`Augmentation` settings: left-right flips, a small affine,
  noise and intensity scale/shift (CT), bias field and gamma (MRI). Defaults keep anatomy plausible: no head-foot
  or front-back flip.

Field of view (``fov``), how a scan of any size becomes a ``img_size`` model input:

- ``'resize'`` (default): the whole scan, shrunk (aspect ratio kept, anti-aliased) only when it is larger than
  ``img_size`` at ``spacing``, then padded; a scan that fits keeps its physical scale.
- ``'foreground'``: crop to the bounding box of the foreground (body or non-zero region, see
  ``foreground_threshold``), then as ``'resize'``.
- ``'crop'``: centre crop or pad to ``img_size`` (the scale is kept, the borders are lost); a warning names each
  scan that loses more than ``max_dropped_foreground`` of its foreground this way.
- ``'whole'``: the whole scan at ``spacing``, padded only up to ``img_size``: for sliding-window inference
  (:func:`vit3d.inference.sliding_window_logits`), where samples differ in size.

Sizes and spacings are given in the model's ``(D, H, W)`` order; MONAI and TorchIO work in the file's
``(x, y, z)`` order internally, so they are reversed here. The MONAI ``prepare`` stage is invertible:
``Compose.inverse`` maps a ``(C, D, H, W)`` map back to the file's grid and affine.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from vit3d.errors import ConfigError
from vit3d.layers.helpers import check_choice

from .io import read_volume

__all__ = ["Augmentation", "FieldOfView", "Preset", "as_augmentation", "build_monai_stages", "build_torchio_stages",
           "check_fov_options", "fit_shape", "foreground_mask"]

logger = logging.getLogger("vit3d.data")

Preset = Literal["ct", "mri"]
FieldOfView = Literal["resize", "foreground", "crop", "whole"]
FOVS = ("resize", "foreground", "crop", "whole")
AnatomicalAxis = Literal["lr", "ap", "si"]
# After orientation to RAS and the reorder to (D, H, W): D runs inferior -> superior, H posterior -> anterior,
# W left -> right.
_AXIS_OF = {"si": 0, "ap": 1, "lr": 2}
# CT body mask: between air (-1000 HU) and fat (about -100 HU).
CT_BODY_HU = -500.0


@dataclass(frozen=True)
class Augmentation:
    """Random training transforms of the volume presets, the same for the MONAI and TorchIO backends.

    Every field is a plain value, so a YAML config sets them (``augmentation: {flip: [lr], rotate_degrees: 5}``).
    Probabilities are per sample. A field at 0 (or an empty ``flip``) switches that transform off.

    Attributes:
        flip: anatomical axes that may be mirrored: ``'lr'`` (left-right, the default: bodies are near-symmetric),
            ``'ap'`` (front-back), ``'si'`` (head-foot; implausible for most anatomy, so not a default).
        flip_prob: probability of mirroring along each axis in ``flip``.
        affine_prob: probability of the random affine.
        rotate_degrees: rotation range, +- degrees about each axis.
        scale: zoom range, +- fraction (0.1: 0.9x to 1.1x).
        translate: shift range, +- voxels along each axis.
        noise_prob: probability of additive Gaussian noise.
        noise_std: its standard deviation (in the preset's intensity units: [0, 1] for CT, z-scores for MRI).
        intensity_prob: probability of each of the intensity scale and shift.
        intensity_scale: multiplicative range, +- fraction.
        intensity_shift: additive range, +-.
        gamma_prob: probability of a gamma (contrast) change (MRI).
        gamma: ``(low, high)`` gamma range.
        bias_field_prob: probability of a smooth multiplicative bias field (MRI).
        bias_field: largest coefficient of the bias field's polynomial.
    """

    flip: tuple[AnatomicalAxis, ...] = ("lr",)
    flip_prob: float = 0.5
    affine_prob: float = 0.5
    rotate_degrees: float = 10.0
    scale: float = 0.1
    translate: float = 0.0
    noise_prob: float = 0.3
    noise_std: float = 0.03
    intensity_prob: float = 0.5
    intensity_scale: float = 0.1
    intensity_shift: float = 0.05
    gamma_prob: float = 0.0
    gamma: tuple[float, float] = (0.7, 1.5)
    bias_field_prob: float = 0.0
    bias_field: float = 0.1

    def __post_init__(self) -> None:
        bad = [a for a in self.flip if a not in _AXIS_OF]
        if bad:
            raise ConfigError(f"flip axes {bad} are not anatomical axes; choose from 'lr', 'ap', 'si'")
        for name in ("flip_prob", "affine_prob", "noise_prob", "intensity_prob", "gamma_prob", "bias_field_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name}={value} is not a probability in [0, 1]")
        for name in ("rotate_degrees", "scale", "translate", "noise_std", "intensity_scale", "intensity_shift",
                     "bias_field"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 0 (it is a +- range)")
        if self.scale >= 1:
            raise ConfigError(f"scale={self.scale} must be < 1 (a zoom of 1 +- scale)")
        if not 0 < self.gamma[0] <= self.gamma[1]:
            raise ConfigError(f"gamma={tuple(self.gamma)} must be (low, high) with 0 < low <= high")

    @classmethod
    def for_preset(cls, preset: Preset | None) -> Augmentation:
        """The defaults of a preset: MRI adds bias field and gamma and uses larger noise (z-score units)."""
        if preset == "mri":
            return cls(noise_std=0.1, intensity_shift=0.0, gamma_prob=0.3, bias_field_prob=0.3)
        return cls()

    @property
    def flip_axes(self) -> tuple[int, ...]:
        """Model axes ``(D, H, W)`` = ``(0, 1, 2)`` of :attr:`flip`."""
        return tuple(sorted({_AXIS_OF[a] for a in self.flip}))


def foreground_mask(image: Any, preset: Preset | None, threshold: float | None = None) -> Any:
    """Voxels of ``image`` (raw intensities) that belong to the subject rather than the background.

    ``threshold`` given: ``image > threshold``. Otherwise CT: ``> -500`` HU (the body, air excluded); MRI and
    others: ``> min + 0.1 (p99 - min)`` (above the noise floor, robust to a few hot voxels).
    """
    x = image
    if threshold is None:
        if preset == "ct":
            threshold = CT_BODY_HU
        else:
            flat = torch.as_tensor(x).float().reshape(-1)
            if flat.numel() > 1_000_000:  # quantile of a subsample: exact enough, cheap on 1 mm scans
                flat = flat[:: flat.numel() // 1_000_000 + 1]
            lo, hi = float(flat.min()), float(torch.quantile(flat, 0.99))
            threshold = lo + 0.1 * (hi - lo)
    return x > threshold


def fit_shape(shape: Sequence[int], size: Sequence[int]) -> tuple[tuple[int, ...], float]:
    """The shape a scan of ``shape`` is shrunk to so that it fits ``size`` with its aspect ratio kept.

    Returns:
        ``(new_shape, factor)``; ``factor`` >= 1 is the shrink factor (1: it already fits, nothing changes).
    """
    factor = max(1.0, *(s / t for s, t in zip(shape, size, strict=True)))
    if factor == 1.0:
        return tuple(int(s) for s in shape), 1.0
    new = tuple(min(int(t), max(1, math.floor(s / factor + 0.5))) for s, t in zip(shape, size, strict=True))
    return new, factor


def _resize_affine(affine: torch.Tensor, old: Sequence[int], new: Sequence[int]) -> torch.Tensor:
    """Voxel-to-world affine after resampling ``old`` -> ``new`` voxels over the same extent (voxel centres
    as ``align_corners=False``: new voxel ``j`` sits at old coordinate ``(j + 0.5) * r - 0.5``)."""
    a = torch.as_tensor(affine, dtype=torch.float64)
    n = len(old)
    r = torch.tensor([o / w for o, w in zip(old, new, strict=True)], dtype=torch.float64)
    step = torch.eye(n + 1, dtype=torch.float64)
    step[:n, :n] = torch.diag(r)
    step[:n, n] = (r - 1) / 2
    return a @ step


def _resample(x: torch.Tensor, shape: Sequence[int], nearest: bool, antialias: bool) -> torch.Tensor:
    """``(C, *spatial)`` resampled to ``shape``: trilinear (Gaussian pre-filter when shrinking) or nearest."""
    src = x.float()[None]
    if nearest:
        return F.interpolate(src, size=tuple(shape), mode="nearest-exact")[0].to(x.dtype)
    if antialias:
        from monai.transforms import GaussianSmooth

        # sigma = (factor - 1) / 2 per axis, as skimage.transform.resize and MONAI's Resize(anti_aliasing) use
        sigma = [max((o / n - 1) / 2, 0.0) for o, n in zip(x.shape[1:], shape, strict=True)]
        if max(sigma) > 0:
            src = GaussianSmooth(sigma=sigma)(src[0])[None]
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(shape)]
    return F.interpolate(torch.as_tensor(src), size=tuple(shape), mode=mode, align_corners=False)[0]


@functools.cache
def _classes() -> dict[str, type]:
    """Create the MONAI transform classes on first use (MONAI is imported lazily)."""
    from monai.data import MetaTensor
    from monai.transforms import InvertibleTransform, MapTransform

    class LoadVolumed(MapTransform):
        """Load each key's path with :func:`vit3d.data.io.read_volume` (checks included)."""

        def __init__(self, keys: Sequence[Hashable], *, on_2d: str = "error", on_4d: str = "error",
                     reader: Any = None) -> None:
            super().__init__(keys)
            self.on_2d, self.on_4d, self.reader = on_2d, on_4d, reader

        def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
            d = dict(data)
            for key in self.key_iterator(d):
                d[key] = read_volume(d[key], on_2d=self.on_2d, on_4d=self.on_4d, reader=self.reader)
            return d

    class ToDHWd(MapTransform, InvertibleTransform):
        """``(C, x, y, z)`` -> ``(C, z, y, x)`` = ``(C, D, H, W)``, permuting the affine's columns; invertible."""

        perm = (0, 3, 2, 1)

        def _apply(self, img: Any) -> Any:
            if not isinstance(img, MetaTensor):
                return torch.as_tensor(img).permute(self.perm).contiguous()
            out = MetaTensor(img.as_tensor().permute(self.perm).contiguous(), meta=copy.copy(img.meta),
                             applied_operations=list(img.applied_operations))
            out.affine = torch.as_tensor(img.affine)[:, [2, 1, 0, 3]]
            return out

        def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
            d = dict(data)
            for key in self.key_iterator(d):
                d[key] = self._apply(d[key])
                if isinstance(d[key], MetaTensor):
                    self.push_transform(d[key])
            return d

        def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
            d = dict(data)
            for key in self.key_iterator(d):
                self.pop_transform(d[key])
                d[key] = self._apply(d[key])  # the permutation is its own inverse
            return d

    class ConcatChannelsd(MapTransform):
        """Stack the keys along channels into ``name`` (keeping the first key's metadata), drop the others."""

        def __init__(self, keys: Sequence[Hashable], name: str = "image") -> None:
            super().__init__(keys)
            self.name = name

        def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
            d = dict(data)
            keys = list(self.key_iterator(d))
            first = d[keys[0]]
            if len(keys) > 1:
                shapes = {tuple(d[k].shape[1:]) for k in keys}
                if len(shapes) > 1:
                    raise ConfigError(f"image keys {keys} have different shapes {sorted(shapes)} after "
                                     "preprocessing; give img_size= so that they are cropped/padded alike")
                stacked = torch.cat([torch.as_tensor(d[k]) for k in keys], dim=0)
                if isinstance(first, MetaTensor):
                    stacked = MetaTensor(stacked, meta=copy.copy(first.meta),
                                         applied_operations=list(first.applied_operations))
                first = stacked
            for k in keys:
                d.pop(k)
            d[self.name] = first
            return d

    class FitToSized(MapTransform, InvertibleTransform):
        """Shrink every key by one factor (aspect ratio kept) so the first key fits ``size``; invertible.

        Scans that already fit pass unchanged. Images are resampled trilinearly after a Gaussian pre-filter
        (no aliasing on a 3x shrink of a 1 mm scan), masks by nearest neighbour; the affine follows exactly.
        """

        def __init__(self, keys: Sequence[Hashable], size: Sequence[int], nearest: Sequence[Hashable] = (),
                     allow_missing_keys: bool = False) -> None:
            super().__init__(keys, allow_missing_keys)
            self.size, self.nearest = tuple(int(s) for s in size), set(nearest)

        def _apply(self, img: Any, shape: Sequence[int], nearest: bool, antialias: bool) -> Any:
            old = tuple(img.shape[1:])
            out = _resample(torch.as_tensor(img), shape, nearest, antialias)
            if not isinstance(img, MetaTensor):
                return out
            res = MetaTensor(out, meta=copy.copy(img.meta), applied_operations=list(img.applied_operations))
            res.affine = _resize_affine(img.affine, old, shape).to(torch.as_tensor(img.affine).dtype)
            return res

        def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
            d = dict(data)
            keys = list(self.key_iterator(d))
            new, factor = fit_shape(d[keys[0]].shape[1:], self.size)
            for key in keys:
                old = tuple(d[key].shape[1:])
                if factor > 1:
                    d[key] = self._apply(d[key], new, key in self.nearest, antialias=True)
                if isinstance(d[key], MetaTensor):
                    self.push_transform(d[key], orig_size=old, extra_info={"factor": factor})
            return d

        def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
            d = dict(data)
            for key in self.key_iterator(d):
                op = self.pop_transform(d[key])
                old = tuple(int(s) for s in op["orig_size"])
                if tuple(d[key].shape[1:]) != old:
                    d[key] = self._apply(d[key], old, key in self.nearest, antialias=False)
            return d

    class ForegroundKeyd(MapTransform):
        """Add ``name``: the foreground of ``source`` (raw intensities, see :func:`foreground_mask`)."""

        def __init__(self, source: str, name: str, preset: Preset | None, threshold: float | None) -> None:
            super().__init__([source])
            self.source, self.name, self.preset, self.threshold = source, name, preset, threshold

        def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
            d = dict(data)
            src = d[self.source]
            fg = foreground_mask(src.as_tensor() if isinstance(src, MetaTensor) else src, self.preset, self.threshold)
            fg = fg.any(dim=0, keepdim=True).float()
            d[self.name] = MetaTensor(fg, meta=copy.copy(src.meta)) if isinstance(src, MetaTensor) else fg
            d[self.name + "_total"] = float(fg.sum())
            return d

    class ForegroundCheckd(MapTransform):
        """Drop the foreground key; with ``limit``, warn once per file that lost more than that share of it."""

        def __init__(self, name: str, limit: float | None) -> None:
            super().__init__([name])
            self.name, self.limit = name, limit
            self.warned: set[str] = set()

        def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
            d = dict(data)
            fg, total = d.pop(self.name), d.pop(self.name + "_total")
            ident = str(d.get("id", "?"))
            if self.limit is not None and total > 0 and ident not in self.warned:
                lost = 1.0 - float(torch.as_tensor(fg).sum()) / total
                if lost > self.limit:
                    self.warned.add(ident)
                    logger.warning("fov='crop' drops %.0f%% of the foreground of %s (more than %.0f%%); use "
                                   "fov='resize' or 'foreground' to see the whole scan, or sliding windows",
                                   100 * lost, ident, 100 * self.limit)
            return d

    return dict(LoadVolumed=LoadVolumed, ToDHWd=ToDHWd, ConcatChannelsd=ConcatChannelsd, FitToSized=FitToSized,
                ForegroundKeyd=ForegroundKeyd, ForegroundCheckd=ForegroundCheckd)


def _xyz(size: Sequence[float]) -> tuple:
    return tuple(reversed(tuple(size)))


def as_augmentation(value: Augmentation | Mapping[str, Any] | None) -> Augmentation | None:
    """``value`` as an :class:`Augmentation`: a mapping (a YAML block) is checked key by key, lists become tuples."""
    if value is None or isinstance(value, Augmentation):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"augmentation={value!r} must be an Augmentation or a mapping of its fields")
    fields = tuple(Augmentation.__dataclass_fields__)
    for key in value:
        check_choice("augmentation key", key, fields)
    return Augmentation(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})


def check_fov_options(fov: str, augmentation: Augmentation | None, max_dropped_foreground: float | None) -> None:
    """Validate the field-of-view and augmentation options of a preset (raises ``ValueError`` with the fix)."""
    check_choice("fov", fov, FOVS)
    if augmentation is not None and not isinstance(augmentation, Augmentation):
        raise ConfigError(f"augmentation={augmentation!r} must be a vit3d.data.transforms.Augmentation")
    if max_dropped_foreground is not None and not 0.0 <= max_dropped_foreground <= 1.0:
        raise ConfigError(f"max_dropped_foreground={max_dropped_foreground} must be a share in [0, 1] (or None)")


_FG = "__foreground__"


def build_monai_stages(preset: Preset | None, *, image_keys: Sequence[str], mask_key: str | None,
                       img_size: Sequence[int] | None, spacing: Sequence[float] | None, train: bool,
                       window: tuple[float, float], on_2d: str, on_4d: str, reader: Any = None,
                       user_transform: Callable | None = None, fov: FieldOfView = "resize",
                       augmentation: Augmentation | None = None, foreground_threshold: float | None = None,
                       max_dropped_foreground: float | None = 0.05) -> tuple[Any, Any | None]:
    """The MONAI ``(prepare, augment)`` composes of a preset (``augment`` is None unless ``train``).

    With ``user_transform`` the prepare stage only loads, checks, orients to RAS, reorders to ``(C, D, H, W)``
    and stacks channels; ``user_transform`` then runs in the augment stage (never cached: it may be random).
    ``fov``, ``foreground_threshold`` and ``max_dropped_foreground`` are described in the module docstring;
    ``augmentation`` defaults to :meth:`Augmentation.for_preset`.
    """
    from monai import transforms as mt

    check_fov_options(fov, augmentation, max_dropped_foreground)
    c = _classes()
    image_keys = list(image_keys)
    keys = image_keys + ([mask_key] if mask_key else [])
    load = c["LoadVolumed"](keys, on_2d=on_2d, on_4d=on_4d, reader=reader)
    if user_transform is not None:
        preset, img_size, spacing = None, None, None
    modes = ["bilinear"] * len(image_keys) + (["nearest"] if mask_key else [])
    steps: list[Any] = [load, mt.Orientationd(keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))]
    if spacing is not None:
        steps.append(mt.Spacingd(keys, pixdim=_xyz(spacing), mode=modes, padding_mode="border"))
    needs_fg = user_transform is None and (fov == "foreground" or (fov == "crop" and img_size is not None
                                                                   and max_dropped_foreground is not None))
    if needs_fg:  # from the raw intensities, before the window/z-score changes what "background" means
        steps.append(c["ForegroundKeyd"](image_keys[0], _FG, preset, foreground_threshold))
    if preset == "ct":
        steps.append(mt.ScaleIntensityRanged(image_keys, a_min=window[0], a_max=window[1], b_min=0.0, b_max=1.0,
                                             clip=True))
    elif preset == "mri":
        steps.append(mt.NormalizeIntensityd(image_keys, nonzero=True, channel_wise=True))
    geo = keys + ([_FG] if needs_fg else [])
    # the foreground key is gone by the time Compose.inverse runs, hence allow_missing_keys
    if fov == "foreground" and user_transform is None:
        steps.append(mt.CropForegroundd(geo, source_key=_FG, margin=2, allow_smaller=True,
                                        allow_missing_keys=needs_fg))
    if img_size is not None:
        size = _xyz(img_size)
        if fov in ("resize", "foreground"):
            steps.append(c["FitToSized"](geo, size, nearest=[k for k in geo if k in (mask_key, _FG)],
                                         allow_missing_keys=needs_fg))
        if fov == "whole":
            steps.append(mt.SpatialPadd(geo, spatial_size=size, mode="constant", allow_missing_keys=needs_fg))
        else:
            steps.append(mt.ResizeWithPadOrCropd(geo, spatial_size=size, mode="constant",
                                                 allow_missing_keys=needs_fg))
    if needs_fg:
        steps.append(c["ForegroundCheckd"](_FG, max_dropped_foreground if fov == "crop" else None))
    steps += [c["ToDHWd"](keys), c["ConcatChannelsd"](image_keys, name="image")]
    prepare = mt.Compose(steps)
    if user_transform is not None:
        return prepare, user_transform
    if not train:
        return prepare, None
    # every prepared sample has exactly img_size unless fov="whole" (which only pads up to it)
    fixed = tuple(int(v) for v in img_size) if img_size is not None and fov != "whole" else None
    return prepare, _monai_augment(augmentation or Augmentation.for_preset(preset), mask_key, fixed)


def _monai_augment(aug: Augmentation, mask_key: str | None, spatial_size: tuple[int, ...] | None = None) -> Any:
    """The MONAI random transforms of ``aug`` on ``(C, D, H, W)`` samples (after the reorder); ``spatial_size``:
    the ``(D, H, W)`` every sample has, when fixed."""
    from monai import transforms as mt

    spatial_keys = ["image"] + ([mask_key] if mask_key else [])
    steps: list[Any] = [mt.RandFlipd(spatial_keys, prob=aug.flip_prob, spatial_axis=axis)
                        for axis in aug.flip_axes if aug.flip_prob > 0]
    if aug.affine_prob > 0 and (aug.rotate_degrees > 0 or aug.scale > 0 or aug.translate > 0):
        rad = math.radians(aug.rotate_degrees)
        # With a fixed sample size, MONAI keeps the identity sampling grid instead of building it per call (a
        # quarter of RandAffine's time on 80x96x96 volumes in benchmarks/data_bench.py's profile).
        steps.append(mt.RandAffined(spatial_keys, prob=aug.affine_prob, rotate_range=(rad,) * 3,
                                    scale_range=(aug.scale,) * 3, translate_range=(aug.translate,) * 3,
                                    mode=["bilinear"] + (["nearest"] if mask_key else []), padding_mode="zeros",
                                    spatial_size=spatial_size, cache_grid=spatial_size is not None))
    if aug.bias_field_prob > 0:
        steps.append(mt.RandBiasFieldd("image", prob=aug.bias_field_prob, coeff_range=(0.0, aug.bias_field)))
    if aug.gamma_prob > 0:
        steps.append(mt.RandAdjustContrastd("image", prob=aug.gamma_prob, gamma=tuple(aug.gamma)))
    if aug.noise_prob > 0 and aug.noise_std > 0:
        steps.append(mt.RandGaussianNoised("image", prob=aug.noise_prob, std=aug.noise_std))
    if aug.intensity_prob > 0 and aug.intensity_scale > 0:
        steps.append(mt.RandScaleIntensityd("image", factors=aug.intensity_scale, prob=aug.intensity_prob))
    if aug.intensity_prob > 0 and aug.intensity_shift > 0:
        steps.append(mt.RandShiftIntensityd("image", offsets=aug.intensity_shift, prob=aug.intensity_prob))
    return mt.Compose(steps)


# ---------------------------------------------------------------------------------------------- TorchIO


def _zscore_foreground(x: torch.Tensor) -> torch.Tensor:
    """Per-channel z-score over the voxels > 0, background left at 0 (as MONAI ``NormalizeIntensity(nonzero)``)."""
    x = x.float().clone()
    for c in range(x.shape[0]):
        fg = x[c] > 0
        if fg.any():
            vals = x[c][fg]
            std = vals.std(unbiased=False)
            x[c][fg] = (vals - vals.mean()) / (std if std > 0 else 1.0)
    return x


def _fov_tensors(tensors: list[torch.Tensor], nearest: list[bool], affine: torch.Tensor, fg: torch.Tensor | None,
                 fov: str, size: Sequence[int] | None) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The field-of-view step on ``(C, D, H, W)`` tensors sharing one ``(D, H, W)`` affine (TorchIO backend)."""
    affine = torch.as_tensor(affine, dtype=torch.float64)

    def crop(ts: list[torch.Tensor], aff: torch.Tensor, lo: Sequence[int], hi: Sequence[int]):  # noqa: ANN202
        sl = (slice(None), *(slice(a, b) for a, b in zip(lo, hi, strict=True)))
        shift = torch.eye(4, dtype=torch.float64)
        shift[:3, 3] = torch.tensor([float(a) for a in lo], dtype=torch.float64)
        return [t[sl] for t in ts], aff @ shift

    if fov == "foreground" and fg is not None and fg.any():
        idx = torch.nonzero(fg[0])
        shape = fg.shape[1:]
        lo = [max(int(v) - 2, 0) for v in idx.min(0).values]
        hi = [min(int(v) + 3, s) for v, s in zip(idx.max(0).values, shape, strict=True)]
        tensors, affine = crop(tensors, affine, lo, hi)
    if size is None:
        return tensors, affine
    size = tuple(int(s) for s in size)
    if fov in ("resize", "foreground"):
        new, factor = fit_shape(tensors[0].shape[1:], size)
        if factor > 1:
            old = tuple(tensors[0].shape[1:])
            tensors = [_resample(t, new, n, antialias=True) for t, n in zip(tensors, nearest, strict=True)]
            affine = _resize_affine(affine, old, new)
    shape = tuple(tensors[0].shape[1:])
    target = tuple(max(s, t) for s, t in zip(shape, size, strict=True)) if fov == "whole" else size
    if fov != "whole":  # centre crop where larger (only 'crop' can be), as MONAI's CenterSpatialCrop
        lo = [max(s - t, 0) // 2 for s, t in zip(shape, target, strict=True)]
        hi = [a + min(s, t) for a, s, t in zip(lo, shape, target, strict=True)]
        tensors, affine = crop(tensors, affine, lo, hi)
        shape = tuple(tensors[0].shape[1:])
    before = [(t - s) // 2 for s, t in zip(shape, target, strict=True)]
    if any(t > s for s, t in zip(shape, target, strict=True)):  # symmetric zero padding, as MONAI's SpatialPad
        flat = [v for s, t, b in reversed(list(zip(shape, target, before, strict=True))) for v in (b, t - s - b)]
        tensors = [F.pad(t, flat) for t in tensors]
        shift = torch.eye(4, dtype=torch.float64)
        shift[:3, 3] = -torch.tensor([float(b) for b in before], dtype=torch.float64)
        affine = affine @ shift
    return tensors, affine


class _TorchioPrepare:
    """Deterministic TorchIO stage: dict of paths -> dict with ``image`` ``(C, D, H, W)`` (and the mask)."""

    def __init__(self, preset: Preset | None, image_keys: Sequence[str], mask_key: str | None,
                 img_size: Sequence[int] | None, spacing: Sequence[float] | None, window: tuple[float, float],
                 on_2d: str, on_4d: str, reader: Any = None, fov: FieldOfView = "resize",
                 foreground_threshold: float | None = None, max_dropped_foreground: float | None = 0.05) -> None:
        import torchio as tio

        self.image_keys, self.mask_key = list(image_keys), mask_key
        self.on_2d, self.on_4d, self.reader = on_2d, on_4d, reader
        self.preset, self.img_size, self.fov = preset, None if img_size is None else tuple(img_size), fov
        self.threshold, self.limit = foreground_threshold, max_dropped_foreground
        self.warned: set[str] = set()
        steps: list[Any] = [tio.ToCanonical()]
        if spacing is not None:
            steps.append(tio.Resample(_xyz(spacing)))
        self.geometry = tio.Compose(steps)
        steps = []
        if preset == "ct":
            steps += [tio.Clamp(out_min=window[0], out_max=window[1]),
                      tio.RescaleIntensity(out_min_max=(0.0, 1.0), in_min_max=window)]
        elif preset == "mri":
            steps.append(tio.Lambda(_zscore_foreground, types_to_apply=[tio.INTENSITY]))
        self.intensity = tio.Compose(steps) if steps else None

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        import torchio as tio

        images = {}
        for key in self.image_keys + ([self.mask_key] if self.mask_key else []):
            vol = read_volume(data[key], on_2d=self.on_2d, on_4d=self.on_4d, reader=self.reader)
            kind = tio.LabelMap if key == self.mask_key else tio.ScalarImage
            images[key] = kind(tensor=vol.as_tensor(), affine=vol.affine.numpy())
        subject = self.geometry(tio.Subject(**images))
        fg = None
        if self.fov in ("foreground", "crop"):
            fg = foreground_mask(subject[self.image_keys[0]].data, self.preset, self.threshold)
            fg = fg.any(dim=0, keepdim=True).permute(0, 3, 2, 1).float()
        if self.intensity is not None:
            subject = self.intensity(subject)
        out = {k: v for k, v in data.items() if k not in images}
        keys = self.image_keys + ([self.mask_key] if self.mask_key else [])
        tensors = [subject[k].data.float().permute(0, 3, 2, 1) for k in keys]
        nearest = [k == self.mask_key for k in keys]
        affine = torch.as_tensor(subject[self.image_keys[0]].affine)[:, [2, 1, 0, 3]]
        if fg is not None:
            tensors, nearest = tensors + [fg], nearest + [True]
        tensors, affine = _fov_tensors(tensors, nearest, affine, fg, self.fov, self.img_size)
        if fg is not None:
            kept, tensors = tensors[-1], tensors[:-1]
            total, ident = float(fg.sum()), str(data.get("id", "?"))
            if self.fov == "crop" and self.limit is not None and total > 0 and ident not in self.warned:
                lost = 1.0 - float(kept.sum()) / total
                if lost > self.limit:
                    self.warned.add(ident)
                    logger.warning("fov='crop' drops %.0f%% of the foreground of %s (more than %.0f%%); use "
                                   "fov='resize' or 'foreground' to see the whole scan, or sliding windows",
                                   100 * lost, ident, 100 * self.limit)
        n = len(self.image_keys)
        out["image"] = torch.cat(tensors[:n], dim=0).contiguous()
        out["affine"] = affine
        if self.mask_key:
            out[self.mask_key] = tensors[n].contiguous()
        return out


class _TorchioAugment:
    """Random TorchIO stage on ``(C, D, H, W)`` tensors (TorchIO's random state is torch's)."""

    def __init__(self, aug: Augmentation, mask_key: str | None) -> None:
        import torchio as tio

        self.mask_key, self.aug = mask_key, aug
        steps: list[Any] = []
        if aug.flip_axes and aug.flip_prob > 0:  # TorchIO flips each listed axis with the probability
            steps.append(tio.RandomFlip(axes=aug.flip_axes, flip_probability=aug.flip_prob))
        if aug.affine_prob > 0 and (aug.rotate_degrees > 0 or aug.scale > 0 or aug.translate > 0):
            steps.append(tio.RandomAffine(p=aug.affine_prob, scales=aug.scale, degrees=aug.rotate_degrees,
                                          translation=aug.translate, default_pad_value="minimum"))
        if aug.bias_field_prob > 0:
            steps.append(tio.RandomBiasField(p=aug.bias_field_prob, coefficients=aug.bias_field))
        if aug.gamma_prob > 0:
            steps.append(tio.RandomGamma(p=aug.gamma_prob, log_gamma=(math.log(aug.gamma[0]),
                                                                      math.log(aug.gamma[1]))))
        if aug.noise_prob > 0 and aug.noise_std > 0:
            steps.append(tio.RandomNoise(p=aug.noise_prob, std=(0.0, aug.noise_std)))
        self.transform = tio.Compose(steps) if steps else None

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        import torchio as tio

        out = dict(data)
        if self.transform is not None:
            images = {"image": tio.ScalarImage(tensor=data["image"])}
            if self.mask_key:
                images[self.mask_key] = tio.LabelMap(tensor=data[self.mask_key])
            subject = self.transform(tio.Subject(**images))
            out["image"] = subject["image"].data.float()
            if self.mask_key:
                out[self.mask_key] = subject[self.mask_key].data
        aug = self.aug  # intensity scale and shift, which TorchIO has no transform for
        if aug.intensity_scale > 0 and torch.rand(()) < aug.intensity_prob:
            out["image"] = out["image"] * (1 + aug.intensity_scale * (2 * torch.rand(()) - 1))
        if aug.intensity_shift > 0 and torch.rand(()) < aug.intensity_prob:
            out["image"] = out["image"] + aug.intensity_shift * (2 * torch.rand(()) - 1)
        return out


def build_torchio_stages(preset: Preset | None, *, image_keys: Sequence[str], mask_key: str | None,
                         img_size: Sequence[int] | None, spacing: Sequence[float] | None, train: bool,
                         window: tuple[float, float], on_2d: str, on_4d: str, reader: Any = None,
                         user_transform: Callable | None = None, fov: FieldOfView = "resize",
                         augmentation: Augmentation | None = None, foreground_threshold: float | None = None,
                         max_dropped_foreground: float | None = 0.05) -> tuple[Callable, Callable | None]:
    """The TorchIO ``(prepare, augment)`` callables of a preset (``augment`` is None unless ``train``)."""
    check_fov_options(fov, augmentation, max_dropped_foreground)
    if user_transform is not None:  # the user's transform gets the loaded RAS (C, D, H, W) image
        return (_TorchioPrepare(None, image_keys, mask_key, None, None, window, on_2d, on_4d, reader, fov="whole"),
                user_transform)
    prepare = _TorchioPrepare(preset, image_keys, mask_key, img_size, spacing, window, on_2d, on_4d, reader, fov=fov,
                              foreground_threshold=foreground_threshold, max_dropped_foreground=max_dropped_foreground)
    return prepare, (_TorchioAugment(augmentation or Augmentation.for_preset(preset), mask_key) if train else None)

