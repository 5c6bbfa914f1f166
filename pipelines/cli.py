"""The ``vit3d`` command: one entry point that dispatches to its subcommands.

``fit | validate | test | predict`` run through LightningCLI (``pipelines.train``); the others are thin argparse
front-ends over library functions (``pipelines.commands.*``). Every subcommand is callable from a test as
``main([...argv...])``.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from typing import Any

from vit3d.errors import ConfigError, UserError, format_user_error

# name -> (module exposing main(argv), takes the subcommand name in argv, one-line summary)
COMMANDS: dict[str, tuple[str, bool, str]] = {
    "fit": ("pipelines.train", True, "train a classifier from YAML configs (LightningCLI)"),
    "validate": ("pipelines.train", True, "evaluate a checkpoint on the validation split"),
    "test": ("pipelines.train", True, "evaluate a checkpoint on the test split (multi-view averaging for clips)"),
    "predict": ("pipelines.train", True, "predict new files and write a CSV of labels and probabilities"),
    "pretrain": ("pipelines.pretrain", False, "masked-autoencoder pretraining on unlabelled volumes or clips"),
    "inflate": ("pipelines.commands.inflate", False, "turn a 2D ViT checkpoint into a 3D vit3d safetensors file"),
    "adapt": ("pipelines.commands.adapt", False, "change frames, tubelet, size, channels, classes of a 3D checkpoint"),
    "models": ("pipelines.commands.models", False, "list registered models, or show one model's config"),
    "explain": ("pipelines.commands.explain", False, "attention maps / rollout for a volume or clip"),
    "bench": ("pipelines.commands.bench", False, "time a model's training steps, or the loader workers data needs"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: vit3d <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, _, summary) in COMMANDS.items()]
    lines += ["", "Run `vit3d <command> --help` for a command's options. `--debug` (or VIT3D_DEBUG=1) shows the",
              "traceback of an error that is otherwise printed as one line."]
    return "\n".join(lines)


# Import name of an optional package -> the extra that installs it.
_EXTRAS = {"lightning": "train", "torchmetrics": "train", "jsonargparse": "train", "rich": "train",
           "tensorboard": "train", "yaml": "train", "monai": "medical", "nibabel": "medical", "torchio": "medical",
           "pydicom": "medical", "SimpleITK": "medical", "av": "video", "decord": "video",
           "huggingface_hub": "hub"}


def _import_command(name: str, module_name: str) -> Any:
    """Import a command's module; a missing optional package is a user error naming the extra to install."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        package = (err.name or "").split(".")[0]
        if package not in _EXTRAS:
            raise
        raise ConfigError(f"`vit3d {name}` needs the optional package {package!r}, which is not installed",
                          fix=f"pip install 'vit3d[{_EXTRAS[package]}]'") from err


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vit3d`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        import vit3d

        print(f"vit3d {vit3d.__version__}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        print(f"vit3d: unknown command {name!r}.{hint}\n\n{_usage()}", file=sys.stderr)
        return 2
    debug = "--debug" in argv or os.environ.get("VIT3D_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    module_name, takes_name, _ = COMMANDS[name]
    try:
        module = _import_command(name, module_name)
        result = module.main(argv if takes_name else argv[1:])
    except UserError as err:
        if debug:
            raise
        print(format_user_error(name, err), file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
