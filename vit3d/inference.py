"""Classification of whole scans larger than the model input: sliding windows with overlap, logits aggregated.

A model trained on ``img_size`` windows sees a whole scan as overlapping windows laid out exactly as MONAI's
``sliding_window_inference`` lays them out (``monai.data.utils.dense_patch_slices``: a window every
``roi * (1 - overlap)`` voxels, the last one flush with the far edge, so every window lies inside the scan and
every voxel is covered). A scan smaller than the window along an axis is padded symmetrically along it, as MONAI
does. Each window's logits are then aggregated into the scan's logits:

- ``'mean'``: the mean of the window logits (the usual multi-crop test-time average);
- ``'max'``: the per-class maximum over windows (multiple-instance max pooling: "is it anywhere in the scan"),
  Wang et al. 2018, "Revisiting multiple instance neural networks", https://arxiv.org/abs/1610.02501;
- ``'attention'``: a weighted mean whose weights are a softmax over windows of each window's top logit, so
  confident windows dominate (a parameter-free form of attention MIL pooling, Ilse et al. 2018,
  https://arxiv.org/abs/1802.04712); it moves from ``'mean'`` to ``'max'`` as ``temperature`` goes to 0.

Example:
    >>> out = sliding_window_logits(model, scan[None], roi_size=(32, 64, 64), overlap=0.25, aggregate="mean")
    >>> out.logits.shape, out.window_logits.shape      # (1, classes), (1, windows, classes)

:func:`predict_inputs` runs this over a list of files (e.g. from :func:`vit3d.data.inputs.discover_inputs`) and
returns one row per input, with the reason in ``error`` for an input that could not be read.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from vit3d.errors import ConfigError
from vit3d.layers import check_choice, to_ntuple

__all__ = ["Aggregate", "Prediction", "SlidingWindowClassifier", "WindowLogits", "aggregate_logits", "crop_windows",
           "model_input_size", "pad_to_window", "predict_inputs", "sliding_window_logits", "window_batches",
           "window_slices"]

Aggregate = Literal["mean", "max", "attention"]
AGGREGATES = ("mean", "max", "attention")


@dataclass
class WindowLogits:
    """Logits of a batch of scans classified window by window.

    Attributes:
        logits: ``(B, classes)``, the aggregate.
        window_logits: ``(B, windows, classes)``, one row per window, in :attr:`windows` order.
        windows: the windows as spatial slices into the (padded) scan.
        weights: ``(B, windows)`` weights of the mean for ``'mean'`` and ``'attention'``; ``None`` for ``'max'``.
        pad: ``(before, after)`` voxels of padding per spatial axis (non-zero only where the scan is smaller than
            the window).
    """

    logits: torch.Tensor
    window_logits: torch.Tensor
    windows: list[tuple[slice, ...]]
    weights: torch.Tensor | None
    pad: tuple[tuple[int, int], ...] = field(default_factory=tuple)


def model_input_size(model: nn.Module) -> tuple[int, ...]:
    """The spatial input size a vit3d model was built for (``model.img_size`` or ``patch_embed.img_size``)."""
    size = getattr(model, "img_size", None)
    if size is None:
        size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if size is None:
        raise ConfigError(f"{type(model).__name__} has no img_size; pass roi_size=(D, H, W) explicitly")
    return tuple(int(s) for s in size)


def _scan_interval(image_size: Sequence[int], roi_size: Sequence[int], overlap: Sequence[float]) -> tuple[int, ...]:
    # The step rule of MONAI's sliding_window_inference: one window when the axis fits exactly, else
    # roi * (1 - overlap) voxels, at least 1.
    out = []
    for img, roi, ov in zip(image_size, roi_size, overlap, strict=True):
        out.append(int(roi) if roi == img else max(int(roi * (1 - ov)), 1))
    return tuple(out)


def window_slices(image_size: Sequence[int], roi_size: Sequence[int], overlap: float | Sequence[float] = 0.25
                  ) -> list[tuple[slice, ...]]:
    """The sliding windows over a scan of ``image_size`` (each axis at least ``roi_size``), as spatial slices.

    Args:
        image_size: spatial size of the (padded) scan.
        roi_size: window size, the model's input size.
        overlap: fraction of a window shared with its neighbour, per axis or one for all, in ``[0, 1)``.
    """
    from monai.data.utils import dense_patch_slices

    n = len(image_size)
    roi = to_ntuple(roi_size, n, "roi_size")
    ov = (float(overlap),) * n if isinstance(overlap, (int, float)) else tuple(float(o) for o in overlap)
    if len(ov) != n or not all(0.0 <= o < 1.0 for o in ov):
        raise ConfigError(f"overlap {overlap} must be {n} fractions in [0, 1), e.g. 0.25")
    small = [(i, s, r) for i, (s, r) in enumerate(zip(image_size, roi, strict=True)) if s < r]
    if small:
        raise ConfigError(f"scan size {tuple(image_size)} is smaller than the window {roi} along axes "
                         f"{[i for i, _, _ in small]}; pad it first (sliding_window_logits does)")
    return [tuple(s) for s in dense_patch_slices(tuple(image_size), roi, _scan_interval(image_size, roi, ov))]


def pad_to_window(image: torch.Tensor, roi: Sequence[int], value: float
                  ) -> tuple[torch.Tensor, tuple[tuple[int, int], ...]]:
    """Pad ``(B, C, *spatial)`` symmetrically to at least ``roi`` along each axis."""
    pads = []
    for s, r in zip(image.shape[2:], roi, strict=True):
        extra = max(int(r) - int(s), 0)
        pads.append((extra // 2, extra - extra // 2))
    if any(p for pair in pads for p in pair):
        flat = [p for pair in reversed(pads) for p in pair]  # F.pad wants the last axis first
        image = F.pad(image, flat, mode="constant", value=value)
    return image, tuple(pads)


def window_batches(windows: Sequence[tuple[slice, ...]], batch_size: int) -> Iterator[list[tuple[slice, ...]]]:
    for start in range(0, len(windows), batch_size):
        yield list(windows[start:start + batch_size])


def crop_windows(image: torch.Tensor, windows: Sequence[tuple[slice, ...]]) -> torch.Tensor:
    """``(B, C, *spatial)`` -> ``(len(windows) * B, C, *roi)``, window-major."""
    return torch.cat([image[(slice(None), slice(None), *w)] for w in windows], dim=0)


def aggregate_logits(window_logits: torch.Tensor, aggregate: Aggregate = "mean", *, temperature: float = 1.0
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Aggregate ``(B, windows, classes)`` logits into ``(B, classes)`` and the weights used (None for max)."""
    check_choice("aggregate", aggregate, AGGREGATES)
    if window_logits.ndim != 3:
        raise ConfigError(f"window logits of shape {tuple(window_logits.shape)} are not (B, windows, classes)")
    z = window_logits.float()
    if aggregate == "max":
        return z.amax(dim=1), None
    if aggregate == "mean":
        weights = torch.full(z.shape[:2], 1.0 / z.shape[1], dtype=z.dtype, device=z.device)
    else:
        if not temperature > 0:
            raise ConfigError(f"temperature {temperature} must be > 0")
        weights = (z.amax(dim=2) / temperature).softmax(dim=1)
    return torch.einsum("bw,bwk->bk", weights, z), weights


@torch.no_grad()
def sliding_window_logits(model: nn.Module, image: torch.Tensor, roi_size: int | Sequence[int] | None = None, *,
                          overlap: float | Sequence[float] = 0.25, aggregate: Aggregate = "mean",
                          batch_size: int = 4, pad_value: float = 0.0, temperature: float = 1.0) -> WindowLogits:
    """Classify scans of any size ``>= 1`` voxel by overlapping windows of the model's input size.

    Args:
        model: a classifier ``(N, C, *roi_size) -> (N, classes)``; put it in eval mode first.
        image: ``(B, C, *spatial)`` or one ``(C, *spatial)`` scan, preprocessed as in training (spacing,
            intensities) but not cropped (``fov='whole'`` in the volume presets).
        roi_size: the window, default the model's ``img_size``.
        overlap: share of a window overlapped by the next one, in ``[0, 1)``.
        aggregate: ``'mean'``, ``'max'`` or ``'attention'`` (see the module docstring).
        batch_size: windows per forward pass (per scan in the batch).
        pad_value: value of the padding where a scan is smaller than the window (the preset's background).
        temperature: softmax temperature of ``'attention'``.

    Returns:
        :class:`WindowLogits`.
    """
    check_choice("aggregate", aggregate, AGGREGATES)
    dims = getattr(model, "spatial_dims", None)
    x = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)
    if x.ndim == (dims + 1 if dims else 4):
        x = x[None]
    roi = model_input_size(model) if roi_size is None else to_ntuple(roi_size, x.ndim - 2, "roi_size")
    return _sliding(model, x, roi, overlap, aggregate, batch_size, pad_value, temperature)


def _sliding(model: nn.Module, x: torch.Tensor, roi: Sequence[int], overlap: float | Sequence[float],
             aggregate: Aggregate, batch_size: int, pad_value: float, temperature: float) -> WindowLogits:
    if x.ndim - 2 != len(roi):
        raise ConfigError(f"image of shape {tuple(x.shape)} is not (B, C, *spatial) with {len(roi)} spatial dims "
                         f"for windows of {tuple(roi)}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    device = next(model.parameters()).device
    x, pad = pad_to_window(x.float(), roi, pad_value)
    windows = window_slices(x.shape[2:], roi, overlap)
    chunks = []
    for group in window_batches(windows, batch_size):
        out = model(crop_windows(x, group).to(device)).float()  # (len(group) * B, classes), window-major
        chunks.append(out.reshape(len(group), x.shape[0], -1).transpose(0, 1))
    window_logits = torch.cat(chunks, dim=1)
    logits, weights = aggregate_logits(window_logits, aggregate, temperature=temperature)
    return WindowLogits(logits=logits, window_logits=window_logits, windows=windows, weights=weights, pad=pad)


class SlidingWindowClassifier(nn.Module):
    """``model`` applied to inputs of any size by sliding windows: ``forward(x)`` returns the aggregated logits.

    A drop-in for evaluation (``test`` / ``predict`` on whole scans preprocessed with ``fov='whole'``): an input
    of exactly the window size is one plain forward pass. It adds no parameters; ``model`` is its only child, so
    it trains, moves and saves as ``model`` does (gradients flow through every window).

    Args:
        model: the classifier built for ``roi_size`` inputs.
        roi_size: the window (default the model's ``img_size``).
        overlap, aggregate, batch_size, pad_value, temperature: as in :func:`sliding_window_logits`.
    """

    def __init__(self, model: nn.Module, *, roi_size: int | Sequence[int] | None = None,
                 overlap: float | Sequence[float] = 0.25, aggregate: Aggregate = "mean", batch_size: int = 4,
                 pad_value: float = 0.0, temperature: float = 1.0) -> None:
        super().__init__()
        check_choice("aggregate", aggregate, AGGREGATES)
        self.model = model
        dims = int(getattr(model, "spatial_dims", 3))
        self.roi_size = model_input_size(model) if roi_size is None else to_ntuple(roi_size, dims, "roi_size")
        self.overlap, self.aggregate, self.batch_size = overlap, aggregate, int(batch_size)
        self.pad_value, self.temperature = float(pad_value), float(temperature)
        window_slices(self.roi_size, self.roi_size, overlap)  # validates overlap now

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial)`` -> ``(B, classes)``."""
        if tuple(x.shape[2:]) == self.roi_size:
            return self.model(x)
        return _sliding(self.model, x, self.roi_size, self.overlap, self.aggregate, self.batch_size,
                        self.pad_value, self.temperature).logits


@dataclass
class Prediction:
    """One input's prediction: the file, the class, every class's probability, or why it failed.

    Attributes:
        path: the input (a file or a DICOM series folder).
        label: the arg-max class name (``""`` when the input failed).
        probabilities: ``{class: probability}`` (empty when the input failed).
        windows: how many windows were classified.
        error: the reason the input could not be used, else ``""``.
    """

    path: str
    label: str = ""
    probabilities: dict[str, float] = field(default_factory=dict)
    windows: int = 0
    error: str = ""

    def row(self, classes: Sequence[str]) -> dict[str, Any]:
        """A predictions-CSV row: ``path, label, prob_<class>..., error``."""
        out: dict[str, Any] = {"path": self.path, "label": self.label}
        out.update({f"prob_{c}": self.probabilities.get(c, "") for c in classes})
        out["error"] = self.error
        return out


def predict_inputs(model: nn.Module, inputs: Sequence[str | os.PathLike], preprocess: Callable[[str], Any], *,
                   classes: Sequence[str], roi_size: int | Sequence[int] | None = None, overlap: float = 0.25,
                   aggregate: Aggregate = "mean", batch_size: int = 4) -> list[Prediction]:
    """Classify each input by sliding windows: one :class:`Prediction` per input, failed inputs included.

    Args:
        model: the classifier in eval mode.
        inputs: files and DICOM series folders (e.g. ``discover_inputs(folder)``).
        preprocess: ``path -> sample`` (a dict with ``image`` ``(C, *spatial)``, or the tensor itself), e.g.
            ``VolumeDataset([], preset=..., spacing=..., fov='whole').load_one``.
        classes: class names in logit order.
        roi_size, overlap, aggregate, batch_size: as in :func:`sliding_window_logits`.

    Returns:
        ``len(inputs)`` predictions in input order. An input whose file cannot be read or used (a
        :class:`vit3d.data.common.SampleError` or a :class:`vit3d.errors.UserError`) gets ``error`` set; any other
        exception is a bug and propagates.
    """
    from vit3d.data.common import SampleError
    from vit3d.errors import UserError

    out = []
    for path in inputs:
        try:
            sample = preprocess(str(path))
        except (SampleError, UserError) as err:
            out.append(Prediction(str(path), error=str(getattr(err, "reason", None) or err)))
            continue
        image = sample["image"] if isinstance(sample, Mapping) else sample
        res = sliding_window_logits(model, image, roi_size, overlap=overlap, aggregate=aggregate,
                                    batch_size=batch_size)
        probs = res.logits.softmax(-1)[0]
        if probs.numel() != len(classes):
            raise ConfigError(f"the model gives {probs.numel()} logits but {len(classes)} classes were named")
        top = int(probs.argmax())
        out.append(Prediction(str(path), label=str(classes[top]),
                              probabilities=dict(zip(map(str, classes), probs.tolist(), strict=True)),
                              windows=len(res.windows)))
    return out
