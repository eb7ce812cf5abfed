"""Where the command line writes: data to stdout, progress, warnings and errors to stderr."""

from __future__ import annotations

import functools
import os
import warnings
from typing import Any, Callable, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.text import Text

from ..config import format_validation_error
from ..errors import TinyDiffError

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])


def error_line(message: str) -> None:
    """The one red line an expected error gets."""
    err_console.print(Text(f"error: {' '.join(str(message).split())}", style="bold red"))


def warning_line(message: str) -> None:
    err_console.print(Text(f"warning: {' '.join(str(message).split())}", style="yellow"))


def _show_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    warning_line(str(message))


def describe_error(exc: BaseException) -> str:
    """The message of an expected error; OS errors (permissions, a full disk) name the file."""
    if isinstance(exc, ValidationError):
        return format_validation_error(exc)
    if isinstance(exc, OSError) and not isinstance(exc, TinyDiffError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}; check the path and its permissions"
    return str(exc)


def handles_errors(fn: F) -> F:
    """Turn TinyDiffError and pydantic ValidationError into one line and exit 1; show warnings as one line each."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _show_warning
            try:
                return fn(*args, **kwargs)
            except (TinyDiffError, ValidationError, OSError) as exc:
                if os.environ.get("TINYDIFF_DEBUG") == "1":
                    raise
                error_line(describe_error(exc))
                raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]
