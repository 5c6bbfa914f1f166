"""Volume transform presets (CT, MRI) built from MONAI dictionary transforms or TorchIO transforms.

Every preset is two stages, so that caching can keep the first:

- ``prepare`` (deterministic, cached): load and check each image key, orient to RAS, resample to
  ``spacing``, CT Hounsfield window clip and scale to [0, 1] or MRI z-score over the foreground, crop or
  pad to ``img_size``, reorder axes to ``(C, D, H, W)`` and stack the image keys as channels.
- ``augment`` (random, training only): flips, small affine, noise and intensity shifts (CT) or
  bias field and contrast (MRI).

Sizes and spacings are given in the model's ``(D, H, W)`` order; MONAI and TorchIO work in the file's
``(x, y, z)`` order internally, so they are reversed here. The MONAI ``prepare`` stage is invertible:
``Compose.inverse`` maps a ``(C, D, H, W)`` map back to the file's grid and affine.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Literal

import torch

from .io import read_volume

__all__ = ["Preset", "build_monai_stages", "build_torchio_stages"]

Preset = Literal["ct", "mri"]
PRESETS = ("ct", "mri")


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
                    raise ValueError(f"image keys {keys} have different shapes {sorted(shapes)} after "
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

    return dict(LoadVolumed=LoadVolumed, ToDHWd=ToDHWd, ConcatChannelsd=ConcatChannelsd)


def _xyz(size: Sequence[float]) -> tuple:
    return tuple(reversed(tuple(size)))


def build_monai_stages(preset: Preset | None, *, image_keys: Sequence[str], mask_key: str | None,
                       img_size: Sequence[int] | None, spacing: Sequence[float] | None, train: bool,
                       window: tuple[float, float], on_2d: str, on_4d: str, reader: Any = None,
                       user_transform: Callable | None = None) -> tuple[Any, Any | None]:
    """The MONAI ``(prepare, augment)`` composes of a preset (``augment`` is None unless ``train``).

    With ``user_transform`` the prepare stage only loads, checks, orients to RAS, reorders to ``(C, D, H, W)``
    and stacks channels; ``user_transform`` then runs in the augment stage (never cached: it may be random).
    """
    from monai import transforms as mt

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
    if preset == "ct":
        steps.append(mt.ScaleIntensityRanged(image_keys, a_min=window[0], a_max=window[1], b_min=0.0, b_max=1.0,
                                             clip=True))
    elif preset == "mri":
        steps.append(mt.NormalizeIntensityd(image_keys, nonzero=True, channel_wise=True))
    if img_size is not None:
        steps.append(mt.ResizeWithPadOrCropd(keys, spatial_size=_xyz(img_size), mode="constant"))
    steps += [c["ToDHWd"](keys), c["ConcatChannelsd"](image_keys, name="image")]
    prepare = mt.Compose(steps)
    if user_transform is not None:
        return prepare, user_transform
    if not train:
        return prepare, None
    spatial_keys = ["image"] + ([mask_key] if mask_key else [])
    aug: list[Any] = [mt.RandFlipd(spatial_keys, prob=0.5, spatial_axis=axis) for axis in range(3)]
    aug.append(mt.RandAffined(spatial_keys, prob=0.5, rotate_range=(0.26, 0.26, 0.26), scale_range=(0.1, 0.1, 0.1),
                              mode=["bilinear"] + (["nearest"] if mask_key else []), padding_mode="zeros"))
    if preset == "mri":
        aug += [mt.RandBiasFieldd("image", prob=0.3, coeff_range=(0.0, 0.1)),
                mt.RandAdjustContrastd("image", prob=0.3, gamma=(0.7, 1.5)),
                mt.RandGaussianNoised("image", prob=0.3, std=0.1),
                mt.RandScaleIntensityd("image", factors=0.1, prob=0.3)]
    else:
        aug += [mt.RandGaussianNoised("image", prob=0.3, std=0.03),
                mt.RandScaleIntensityd("image", factors=0.1, prob=0.5),
                mt.RandShiftIntensityd("image", offsets=0.05, prob=0.5)]
    return prepare, mt.Compose(aug)


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


class _TorchioPrepare:
    """Deterministic TorchIO stage: dict of paths -> dict with ``image`` ``(C, D, H, W)`` (and the mask)."""

    def __init__(self, preset: Preset | None, image_keys: Sequence[str], mask_key: str | None,
                 img_size: Sequence[int] | None, spacing: Sequence[float] | None, window: tuple[float, float],
                 on_2d: str, on_4d: str, reader: Any = None) -> None:
        import torchio as tio

        self.image_keys, self.mask_key = list(image_keys), mask_key
        self.on_2d, self.on_4d, self.reader = on_2d, on_4d, reader
        steps: list[Any] = [tio.ToCanonical()]
        if spacing is not None:
            steps.append(tio.Resample(_xyz(spacing)))
        if preset == "ct":
            steps += [tio.Clamp(out_min=window[0], out_max=window[1]),
                      tio.RescaleIntensity(out_min_max=(0.0, 1.0), in_min_max=window)]
        elif preset == "mri":
            steps.append(tio.Lambda(_zscore_foreground, types_to_apply=[tio.INTENSITY]))
        if img_size is not None:
            steps.append(tio.CropOrPad(_xyz(img_size)))
        self.transform = tio.Compose(steps)

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        import torchio as tio

        images = {}
        for key in self.image_keys + ([self.mask_key] if self.mask_key else []):
            vol = read_volume(data[key], on_2d=self.on_2d, on_4d=self.on_4d, reader=self.reader)
            kind = tio.LabelMap if key == self.mask_key else tio.ScalarImage
            images[key] = kind(tensor=vol.as_tensor(), affine=vol.affine.numpy())
        subject = self.transform(tio.Subject(**images))
        out = {k: v for k, v in data.items() if k not in images}
        out["image"] = torch.cat([subject[k].data.float() for k in self.image_keys], dim=0).permute(0, 3, 2, 1)
        out["affine"] = torch.as_tensor(subject[self.image_keys[0]].affine)[:, [2, 1, 0, 3]]
        if self.mask_key:
            out[self.mask_key] = subject[self.mask_key].data.permute(0, 3, 2, 1).contiguous()
        out["image"] = out["image"].contiguous()
        return out


class _TorchioAugment:
    """Random TorchIO stage on ``(C, D, H, W)`` tensors (TorchIO's random state is torch's)."""

    def __init__(self, preset: Preset | None, mask_key: str | None) -> None:
        import torchio as tio

        self.mask_key = mask_key
        steps: list[Any] = [tio.RandomFlip(axes=(0, 1, 2), flip_probability=0.5),
                            tio.RandomAffine(p=0.5, scales=0.1, degrees=15, default_pad_value="minimum")]
        if preset == "mri":
            steps += [tio.RandomBiasField(p=0.3, coefficients=0.3), tio.RandomGamma(p=0.3, log_gamma=(-0.3, 0.3)),
                      tio.RandomNoise(p=0.3, std=(0.0, 0.1))]
        else:
            steps += [tio.RandomNoise(p=0.3, std=(0.0, 0.03))]
        self.transform = tio.Compose(steps)
        self.preset = preset

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        import torchio as tio

        images = {"image": tio.ScalarImage(tensor=data["image"])}
        if self.mask_key:
            images[self.mask_key] = tio.LabelMap(tensor=data[self.mask_key])
        subject = self.transform(tio.Subject(**images))
        out = dict(data)
        out["image"] = subject["image"].data.float()
        if self.preset != "mri":  # intensity scale and shift, which TorchIO has no transform for
            if torch.rand(()) < 0.5:
                out["image"] = out["image"] * (1 + 0.1 * (2 * torch.rand(()) - 1))
            if torch.rand(()) < 0.5:
                out["image"] = out["image"] + 0.05 * (2 * torch.rand(()) - 1)
        if self.mask_key:
            out[self.mask_key] = subject[self.mask_key].data
        return out


def build_torchio_stages(preset: Preset | None, *, image_keys: Sequence[str], mask_key: str | None,
                         img_size: Sequence[int] | None, spacing: Sequence[float] | None, train: bool,
                         window: tuple[float, float], on_2d: str, on_4d: str, reader: Any = None,
                         user_transform: Callable | None = None) -> tuple[Callable, Callable | None]:
    """The TorchIO ``(prepare, augment)`` callables of a preset (``augment`` is None unless ``train``)."""
    if user_transform is not None:  # the user's transform gets the loaded RAS (C, D, H, W) image
        return _TorchioPrepare(None, image_keys, mask_key, None, None, window, on_2d, on_4d, reader), user_transform
    prepare = _TorchioPrepare(preset, image_keys, mask_key, img_size, spacing, window, on_2d, on_4d, reader)
    return prepare, (_TorchioAugment(preset, mask_key) if train else None)
