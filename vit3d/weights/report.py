"""What loading or inflating a checkpoint did to it: a :class:`LoadReport`, and the :class:`Checkpoint` triple."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import torch

Shape = tuple[int, ...]


@dataclass
class LoadReport:
    """Every change between the file's tensors and the model's state dict, for the user to read.

    Attributes:
        source: path (or description) of the checkpoint.
        format: detected or requested format name.
        renamed: ``(source key, canonical key)`` pairs; fused or split tensors count as renames.
        resampled: ``(key, old shape, new shape, how)``: position grids, inflated kernels, adapted channels.
        reinitialised: ``(key, shape, why)``: tensors the model starts fresh (new head, temporal table).
        dropped: ``(key, shape, why)``: tensors in the file that the model does not use.
        notes: assumptions and differences in behaviour (e.g. an inferred head count, a dropped Tanh).
        assumed: config keys set by convention because the file does not store them (``num_heads``); a named
            preset's value replaces such a guess.
    """

    source: str = ""
    format: str = ""
    renamed: list[tuple[str, str]] = field(default_factory=list)
    resampled: list[tuple[str, Shape, Shape, str]] = field(default_factory=list)
    reinitialised: list[tuple[str, Shape, str]] = field(default_factory=list)
    dropped: list[tuple[str, Shape, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    assumed: list[str] = field(default_factory=list)

    def rename(self, old: str, new: str) -> None:
        if old != new:
            self.renamed.append((old, new))

    def copy(self) -> LoadReport:
        return LoadReport(self.source, self.format, list(self.renamed), list(self.resampled),
                          list(self.reinitialised), list(self.dropped), list(self.notes), list(self.assumed))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        lines = [f"load report: {self.source or '<state dict>'} (format: {self.format or 'unknown'})"]
        renamed = Counter((_pattern(a), _pattern(b)) for a, b in self.renamed)
        sections = [
            ("renamed", [f"{a} -> {b}" + (f"  ({n} tensors)" if n > 1 else "") for (a, b), n in renamed.items()]),
            ("resampled", [f"{k}: {list(a)} -> {list(b)} ({how})" for k, a, b, how in self.resampled]),
            ("re-initialised", [f"{k}: {list(s)} ({why})" for k, s, why in self.reinitialised]),
            ("dropped", [f"{k}: {list(s)} ({why})" for k, s, why in self.dropped]),
            ("notes", self.notes),
        ]
        for title, items in sections:
            lines.append(f"  {title}: {len(items) if items else 'none'}")
            lines += [f"    {item}" for item in items]
        return "\n".join(lines)


def _pattern(key: str) -> str:
    """Collapse block indices and weight/bias pairs so a 12-block rename prints once:
    ``blocks.3.norm1.weight`` -> ``blocks.{i}.norm1.{weight,bias}``."""
    key = re.sub(r"(?<=[._/])\d+(?=[._/]|$)", "{i}", key)
    return re.sub(r"([./_])(weight|bias|kernel|scale)$", r"\1{weight,bias}", key)


class Checkpoint(NamedTuple):
    """A canonical (timm-named) state dict, the :class:`vit3d.VisionTransformer` keywords that fit it, and the
    report of how it was obtained. Unpacks as ``state_dict, config, report = checkpoint``."""

    state_dict: dict[str, torch.Tensor]
    config: dict[str, Any]
    report: LoadReport


def shape(t: torch.Tensor) -> Shape:
    return tuple(int(s) for s in t.shape)
