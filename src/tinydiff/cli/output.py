"""Where the command line writes: data to stdout, progress, warnings and errors to stderr."""

from __future__ import annotations

import atexit
import contextlib
import functools
import gc
import os
import sys
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


@contextlib.contextmanager
def importing_torch() -> Any:
    """Import torch (and what needs it) with Python's cyclic garbage collector paused.

    Importing torch creates hundreds of thousands of objects, and the collector rescans them
    again and again while it does: pausing it cut `import torch` from 1.30 s to 1.07 s on a
    2-core CPU (docs/performance.md#command-line-latency). Reference counting still frees
    everything; the collector is back on before any work starts.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def preview_console() -> Console | None:
    """Where the terminal preview is drawn, or None: it is drawn in colour half-blocks, so only on a colour terminal.

    A pipe or a file (``| cat``, ``> out.txt``), ``NO_COLOR`` (https://no-color.org) and ``TERM=dumb``
    get no preview; ``FORCE_COLOR`` draws it anyway, as Rich does. Made when asked, so the
    environment of that moment counts.
    """
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return None
    preview = Console(highlight=False, soft_wrap=True)
    return preview if preview.is_terminal and preview.color_system is not None else None


def stdout_closed() -> None:
    """The reader of stdout went away (``tinydiff ... | head -1``): drop what is left to print, keep going.

    A closed stdout is not a failure of the command: its files are written and its messages still
    go to stderr. Later writes to stdout, and the flush at exit, go to the null device.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError, AttributeError):  # a stdout without a file descriptor (a test's capture)
        pass


def progress_bar(*columns: Any, transient: bool) -> Any:
    """A Rich progress bar on stderr, drawn only on a terminal: in a log file or a pipe it would leave a blank line."""
    from rich.progress import Progress

    return Progress(*columns, console=err_console, transient=transient, disable=not err_console.is_terminal)


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


def _user_facing_filters() -> None:
    """Each warning once per place it comes from, less what Python itself hides from users.

    A library's deprecation notices and a file the garbage collector closes (ResourceWarning,
    which it can finalize in the middle of any command) are for developers, not for the person
    running `tinydiff`: `PYTHONWARNINGS=default tinydiff ...` shows them all.
    """
    warnings.simplefilter("default")
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
        warnings.filterwarnings("ignore", category=category)


def handles_errors(fn: F) -> F:
    """Turn TinyDiffError and pydantic ValidationError into one line and exit 1; show warnings as one line each."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            if not sys.warnoptions:  # -W, PYTHONWARNINGS or -X dev given: the user's filters stand
                _user_facing_filters()
            warnings.showwarning = _show_warning
            try:
                return fn(*args, **kwargs)
            except BrokenPipeError:  # stdout's reader went away: what was asked for is done
                stdout_closed()
                return None
            except (TinyDiffError, ValidationError, OSError) as exc:
                if os.environ.get("TINYDIFF_DEBUG") == "1":
                    raise
                error_line(describe_error(exc))
                raise typer.Exit(getattr(exc, "exit_code", 1) if isinstance(exc, TinyDiffError) else 1) from None

    return wrapper  # type: ignore[return-value]


# Ending a process that has imported torch: the interpreter's teardown of torch's modules takes
# about 0.4 s on a 2-core CPU (`python -c "import torch"`: 1.6 s; with os._exit(0) at the end:
# 1.2 s), a quarter of `tinydiff sample`'s whole time. Commands that hold nothing open once they
# succeed (sample, eval) call allow_fast_exit(); the console-script entry then runs the
# atexit handlers, flushes stdout and stderr, and ends with os._exit (docs/performance.md).
_fast_exit = False


def allow_fast_exit() -> None:
    """This command has closed every file it wrote: the process may skip the interpreter's teardown."""
    global _fast_exit
    _fast_exit = True


def fast_exit_allowed() -> bool:
    return _fast_exit


def exit_now(code: int) -> None:
    """atexit handlers, then flush stdout and stderr, then end the process without the interpreter's teardown."""
    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)
    if run_exitfuncs is not None:
        run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (tinydiff ... | head): nothing more can be delivered
            pass
    os._exit(code)
