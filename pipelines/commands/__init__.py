"""Subcommands of ``vit3d`` that are not LightningCLI runs; each module exposes ``main(argv) -> int``."""

from __future__ import annotations

import argparse
from typing import NoReturn

from vit3d.errors import ConfigError

__all__ = ["CommandParser"]


class CommandParser(argparse.ArgumentParser):
    """``argparse`` for the ``vit3d`` subcommands: a usage error is a :class:`vit3d.errors.ConfigError`, which the
    dispatcher prints as one line (exit 2), like every other user error, instead of argparse's usage block."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message, fix=f"run `{self.prog} --help` for the options")
