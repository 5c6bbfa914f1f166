"""Small argument helpers shared by every layer and model: size normalisation and option checks."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

from torch import nn

# The convolution of each number of spatial dims (patch embedding, CCT tokenizer).
CONV: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def to_ntuple(value: int | Sequence[int], n: int, name: str = "value") -> tuple[int, ...]:
    """Return ``value`` as a tuple of ``n`` ints, broadcasting a scalar.

    Raises:
        ValueError: if ``value`` is a sequence whose length is not ``n``, or holds a non-positive entry.
    """
    if isinstance(value, int):
        out = (value,) * n
    else:
        out = tuple(int(v) for v in value)
        if len(out) != n:
            raise ValueError(f"{name} {tuple(value)} has {len(out)} entries but {n} spatial dims were asked for; "
                             f"give {n} sizes or a single int")
    if any(v <= 0 for v in out):
        raise ValueError(f"{name} {out} must be positive along every axis")
    return out


def infer_spatial_dims(*sizes: int | Sequence[int] | None, default: int = 2) -> int:
    """Number of spatial dims implied by the first sequence among ``sizes`` (``default`` if all are ints)."""
    lengths = {len(s) for s in sizes if s is not None and not isinstance(s, int)}
    if len(lengths) > 1:
        raise ValueError(f"sizes {[s for s in sizes if s is not None]} disagree on the number of spatial dims; "
                         "give sequences of the same length or pass spatial_dims")
    return lengths.pop() if lengths else default


def check_choice(name: str, value: object, choices: Iterable[object]) -> None:
    """Raise a ValueError that lists the valid choices (and the nearest one) when ``value`` is not among them."""
    choices = list(choices)
    if value in choices:
        return
    hint = ""
    if isinstance(value, str):
        close = difflib.get_close_matches(value, [str(c) for c in choices], n=1)
        if close:
            hint = f"; did you mean {close[0]!r}?"
    raise ValueError(f"{name}={value!r} is not one of {choices}{hint}")


def check_input_shape(shape: Sequence[int], spatial_dims: int, in_chans: int) -> None:
    """Raise a ValueError when ``shape`` is not ``(B, in_chans, *spatial)`` with ``spatial_dims`` spatial axes."""
    if len(shape) != spatial_dims + 2:
        raise ValueError(f"expected input of shape (B, C, {', '.join('DHW'[-spatial_dims:])}) with "
                         f"{spatial_dims + 2} dims, got {tuple(shape)}")
    if shape[1] != in_chans:
        raise ValueError(f"input has {shape[1]} channels but the model was built with in_chans={in_chans}; "
                         "change in_chans or the input's channels")


def check_keywords(owner: str, given: Iterable[str], valid: Sequence[str]) -> None:
    """Raise a ValueError naming every keyword of ``given`` not in ``valid``, with the nearest valid one."""
    unknown = [k for k in given if k not in valid]
    if not unknown:
        return
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, list(valid), n=1)
        hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise ValueError(f"{owner} got unknown keyword(s) {', '.join(hints)}; valid keywords: {', '.join(valid)}")


def check_divisible(size: Sequence[int], patch: Sequence[int], size_name: str = "img_size",
                    patch_name: str = "patch_size") -> None:
    """Raise a ValueError naming the first axis along which ``size`` is not a multiple of ``patch``."""
    for axis, (s, p) in enumerate(zip(size, patch, strict=True)):
        if s % p:
            raise ValueError(f"{size_name} {tuple(size)} is not divisible by {patch_name} {tuple(patch)} "
                             f"along axis {axis} ({s} % {p} = {s % p}); choose sizes that are multiples "
                             f"of the patch, e.g. {tuple(max(p_, (s_ // p_) * p_) for s_, p_ in zip(size, patch, strict=True))}")
