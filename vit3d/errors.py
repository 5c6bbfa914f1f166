"""Errors a user can cause, as typed exceptions that every ``vit3d`` command prints as one line.

A :class:`UserError` carries what went wrong, the file it concerns (when there is one) and how to fix it; the
``vit3d`` dispatcher (:mod:`pipelines.cli`) prints it as::

    vit3d <command>: error: <what> (<file>); <fix>

and exits with status 2. Anything else that escapes a command is a bug and keeps its traceback. ``--debug`` (or
``VIT3D_DEBUG=1``) shows the traceback of user errors too.

The subclasses also derive from the built-in exception a caller would catch without knowing vit3d
(``ValueError``, ``FileNotFoundError``, ``MemoryError``), so library code stays usable with plain ``except``.
"""

from __future__ import annotations

import os

__all__ = [
    "CheckpointError",
    "ConfigError",
    "InputError",
    "MissingInputError",
    "ResourceLimitError",
    "UserError",
    "format_user_error",
]


class UserError(Exception):
    """A failure the user can fix: ``what`` happened, to ``file``, and the ``fix``.

    Args:
        what: what is wrong, as a sentence fragment without a trailing full stop.
        file: the file or folder concerned, if any.
        fix: what to do about it, if known.
    """

    def __init__(self, what: str, *, file: str | os.PathLike | None = None, fix: str | None = None) -> None:
        self.what = str(what)
        self.file = None if file is None else str(file)
        self.fix = fix
        super().__init__(self._text())

    def _text(self) -> str:
        text = self.what
        if self.file is not None:
            text += f" ({self.file})"
        if self.fix:
            text += f"; {self.fix}"
        return text

    def __str__(self) -> str:
        return self._text()

    def __reduce__(self) -> tuple:
        # Keyword-only constructor: rebuild through a helper so the error survives DataLoader workers (pickling).
        return (_rebuild, (type(self), self.what, self.file, self.fix))


def _rebuild(cls: type[UserError], what: str, file: str | None, fix: str | None) -> UserError:
    err = cls.__new__(cls)
    UserError.__init__(err, what, file=file, fix=fix)
    return err


class ConfigError(UserError, ValueError):
    """A config value or command-line option that cannot work, found before any work starts."""


class InputError(UserError, ValueError):
    """An input file (volume, clip, table) that cannot be used."""


class MissingInputError(InputError, FileNotFoundError):
    """An input file or folder that does not exist."""


class ResourceLimitError(InputError, MemoryError):
    """An input whose declared size exceeds a limit, refused before anything is allocated."""


class CheckpointError(UserError, ValueError):
    """A weights file or training checkpoint that cannot be loaded (corrupt, unsafe, out of range, mismatched)."""


def format_user_error(command: str, err: BaseException) -> str:
    """The one-line message for ``err`` raised by ``vit3d <command>`` (newlines folded into spaces)."""
    text = " ".join(str(err).split()) if isinstance(err, UserError) else f"{type(err).__name__}: {err}"
    return f"vit3d {command}: error: {text}"
