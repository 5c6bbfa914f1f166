"""``vit3d models``: list registered models, or show one model's config and parameter count.

Models are built on the ``meta`` device, so even large ones cost no memory.

Examples:
    vit3d models                 # every registered model
    vit3d models "vit_*_3d"      # those matching a pattern
    vit3d models vit_base_patch16_3d
"""

from __future__ import annotations

import difflib
import json
import sys
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from vit3d import VisionTransformer, create_model, list_models
from vit3d.errors import ConfigError
from vit3d.models import is_model

from . import CommandParser

__all__ = ["describe_model", "main"]


def _build(name: str) -> nn.Module:
    """The model on the meta device; on CPU if its constructor needs real values."""
    try:
        with torch.device("meta"):
            return create_model(name)
    except (RuntimeError, NotImplementedError):
        return create_model(name)


def describe_model(name: str) -> dict[str, Any]:
    """Config (constructor keywords where the model is a VisionTransformer) and parameter count of ``name``."""
    model = _build(name)
    if isinstance(model, VisionTransformer):
        from vit3d.weights import vit_config

        config = vit_config(model)
    else:
        skip = ("training", "grad_checkpointing", "model_name")  # state, not architecture
        config = {k: v for k, v in vars(model).items()
                  if not k.startswith("_") and k not in skip and isinstance(v, int | float | str | tuple | bool)}
    return {"name": name, "class": type(model).__name__, "params": sum(p.numel() for p in model.parameters()),
            "config": config}


def _fmt(value: Any) -> str:
    if isinstance(value, tuple | list):
        return "x".join(str(v) for v in value)
    return str(value)


def main(argv: list[str]) -> int:
    p = CommandParser(prog="vit3d models", description=__doc__.split("\n\n")[0])
    p.add_argument("name", nargs="?", default=None, help="a model name (details) or a shell pattern (filter)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 140, soft_wrap=False)

    if args.name and not any(c in args.name for c in "*?["):
        if not is_model(args.name):
            close = difflib.get_close_matches(args.name, list_models(), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown model {args.name!r}{hint}", fix="run `vit3d models` to list them")
        info = describe_model(args.name)
        if args.json:
            print(json.dumps(info, default=list, indent=2))
            return 0
        table = Table(title=info["name"], caption=f"{info['class']}, {info['params']:,} parameters")
        table.add_column("keyword")
        table.add_column("value")
        for key, value in info["config"].items():
            table.add_row(key, _fmt(value))
        console.print(table)
        print(f"parameters: {info['params']:,}")
        return 0

    names = list_models(args.name or "*")
    if not names:
        raise ConfigError(f"no model matches {args.name!r}", fix="run `vit3d models` to list them")
    rows = [describe_model(n) for n in names]
    if args.json:
        print(json.dumps(rows, default=list, indent=2))
        return 0
    table = Table(title=f"{len(rows)} registered models")
    for col in ("name", "family", "dims", "img_size", "patch", "embed_dim", "depth", "heads", "params (M)"):
        table.add_column(col, justify="left" if col == "name" else "right", no_wrap=True)
    for info in rows:
        c = info["config"]
        table.add_row(info["name"], info["class"], _fmt(c.get("spatial_dims", "")), _fmt(c.get("img_size", "")),
                      _fmt(c.get("patch_size", "")), _fmt(c.get("embed_dim", "")), _fmt(c.get("depth", "")),
                      _fmt(c.get("num_heads", "")), f"{info['params'] / 1e6:.1f}")
    console.print(table)
    return 0
