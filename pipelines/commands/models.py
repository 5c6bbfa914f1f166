"""``vit3d models``: list registered models, or show one model's config and parameter count.

Models are built on the ``meta`` device, so even large ones cost no memory.

Examples:
    vit3d models                 # every registered model
    vit3d models "vit_*_3d"      # those matching a pattern
    vit3d models vit_base_patch16_3d
    vit3d models --pretrained    # pretrained tags: name.tag, source, classes, what happens on load
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from vit3d import create_model, list_models
from vit3d.models import is_model, list_pretrained, pretrained_tag

__all__ = ["describe_model", "main"]


def _build(name: str) -> nn.Module:
    """The model on the meta device; on CPU if its constructor needs real values."""
    try:
        with torch.device("meta"):
            return create_model(name)
    except (RuntimeError, NotImplementedError):
        return create_model(name)


def describe_pretrained(pattern: str = "*") -> list[dict[str, Any]]:
    """One row per pretrained tag matching ``pattern``: ``name.tag``, default or not, source, classes, summary and
    what loading does."""
    rows = []
    for full in list_pretrained(pattern):
        name, _, tag = full.partition(".")
        cfg = pretrained_tag(full)[1]
        rows.append({"name": full, "default": pretrained_tag(name)[0] == tag, "source": cfg.source,
                     "num_classes": cfg.num_classes, "summary": cfg.summary, "on_load": cfg.on_load})
    return rows


def describe_model(name: str) -> dict[str, Any]:
    """Constructor keywords (:func:`vit3d.weights.model_config`) and parameter count of ``name``."""
    from vit3d.weights import model_config

    model = _build(name)
    tags = [full.partition(".")[2] for full in list_pretrained(name)]
    return {"name": name, "class": type(model).__name__, "params": sum(p.numel() for p in model.parameters()),
            "config": model_config(model), "pretrained": tags}


def _fmt(value: Any) -> str:
    if isinstance(value, tuple | list):
        return "x".join(str(v) for v in value)
    return str(value)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="vit3d models", description=__doc__.split("\n\n")[0])
    p.add_argument("name", nargs="?", default=None, help="a model name (details) or a shell pattern (filter)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--pretrained", action="store_true",
                   help="list pretrained tags (name.tag) with their source and what loading them does")
    args = p.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 140, soft_wrap=False)

    if args.pretrained:
        rows = describe_pretrained(args.name or "*")
        if not rows:
            print(f"vit3d models: no pretrained tag matches {args.name!r}; run `vit3d models --pretrained`",
                  file=sys.stderr)
            return 2
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        table = Table(title=f"{len(rows)} pretrained tags (create_model(name.tag, pretrained=True); * = default)",
                      show_lines=False)
        for col in ("name.tag", "classes", "source", "on load"):
            table.add_column(col, no_wrap=col != "on load", overflow="fold")
        for r in rows:
            table.add_row(r["name"] + (" *" if r["default"] else ""), str(r["num_classes"]),
                          r["source"].removeprefix("hf-hub:"), r["on_load"])
        console.print(table)
        return 0

    if args.name and not any(c in args.name for c in "*?["):
        if not is_model(args.name):
            close = difflib.get_close_matches(args.name, list_models(), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else "; run `vit3d models` to list them"
            print(f"vit3d models: unknown model {args.name!r}{hint}", file=sys.stderr)
            return 2
        info = describe_model(args.name)
        if args.json:
            print(json.dumps(info, default=list, indent=2))
            return 0
        table = Table(title=info["name"], caption=f"{info['class']}, {info['params']:,} parameters")
        table.add_column("keyword")
        table.add_column("value")
        for key, value in info["config"].items():
            table.add_row(key, _fmt(value))
        table.add_row("pretrained tags", ", ".join(info["pretrained"]) or "none (see `vit3d models --pretrained`)")
        console.print(table)
        print(f"parameters: {info['params']:,}")
        return 0

    names = list_models(args.name or "*")
    if not names:
        print(f"vit3d models: no model matches {args.name!r}; run `vit3d models` to list them", file=sys.stderr)
        return 2
    rows = [describe_model(n) for n in names]
    if args.json:
        print(json.dumps(rows, default=list, indent=2))
        return 0
    table = Table(title=f"{len(rows)} registered models (tags: pretrained weights, `vit3d models --pretrained`)")
    cols = ("name", "family", "dims", "img_size", "patch", "embed_dim", "depth", "heads", "params (M)", "tags")
    for col in cols:
        table.add_column(col, justify="left" if col == "name" else "right", no_wrap=True)
    for info in rows:
        c = info["config"]
        table.add_row(info["name"], info["class"], _fmt(c.get("spatial_dims", "")), _fmt(c.get("img_size", "")),
                      _fmt(c.get("patch_size", "")), _fmt(c.get("embed_dim", "")), _fmt(c.get("depth", "")),
                      _fmt(c.get("num_heads", "")), f"{info['params'] / 1e6:.1f}", str(len(info["pretrained"])))
    console.print(table)
    return 0
