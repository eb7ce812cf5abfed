"""The ``tinydiff`` command line: a thin Typer layer over the Python API.

Commands import torch inside their bodies, so ``tinydiff --help`` and
``tinydiff --version`` never pay for it.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

import typer

from .. import __version__
from .output import err_console, error_line, exit_now, fast_exit_allowed
from .compare import compare_command
from .eval import eval_command
from .inspect import inspect_command
from .plugins import plugins_command
from .sample import sample_command
from .sweep import sweep_command
from .train import train_command

app = typer.Typer(
    name="tinydiff",
    help="Denoising diffusion models from scratch: train, sample and inspect DDPMs on MNIST.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion, --show-completion (bash, zsh, fish, PowerShell)
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tinydiff {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Denoising diffusion models from scratch: train, sample and inspect DDPMs on MNIST."""


app.command("train")(train_command)
app.command("sample")(sample_command)
app.command("inspect")(inspect_command)
app.command("plugins")(plugins_command)
app.command("eval")(eval_command)
app.command("sweep")(sweep_command)
app.command("compare")(compare_command)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: expected errors print one line on stderr and exit non-zero.

    Bugs keep their traceback; set ``TINYDIFF_DEBUG=1`` to see one for any error.
    """
    command = typer.main.get_command(app)
    debug = os.environ.get("TINYDIFF_DEBUG") == "1"
    try:
        code = command.main(args=argv, prog_name="tinydiff", standalone_mode=False)
    except typer.Abort:
        error_line("aborted")
        code = 1
    except KeyboardInterrupt:
        err_console.print("interrupted", style="yellow")
        code = 130
    except Exception as exc:
        # Click's usage errors (typer vendors Click in newer releases, so match by shape, not class)
        if debug or not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":
            typer.echo(exc.format_message())
            code = 0
        else:
            ctx = getattr(exc, "ctx", None)
            where = f"tinydiff {ctx.info_name}" if ctx is not None and ctx.parent is not None else "tinydiff"
            message = exc.format_message().replace("Value error, ", "")  # how pydantic-backed choices phrase it
            error_line(f"{message.rstrip('.')}; see '{where} --help'")
            code = exc.exit_code
    code = code if isinstance(code, int) else 0
    if argv is None and fast_exit_allowed():  # the process's own entry (not a caller's main(args)): skip torch's teardown
        exit_now(code)
    sys.exit(code)
