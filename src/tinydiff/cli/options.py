"""Option types shared by the commands: fixed choices, registry names, finite numbers.

A wrong value is a usage error (exit 2) named by Click, before any work. Registry names
(``--schedule``, ``--sampler``) are checked against the registries, plugins included, only when
the option is given, so ``--help`` stays free of torch; ``--help`` and shell completion list the
built-in names.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Literal

import typer

Device = Literal["auto", "cpu", "cuda", "mps"]
Conditioning = Literal["text", "none"]
Spacing = Literal["uniform", "trailing", "logsnr", "karras"]  # tinydiff.samplers.SPACINGS, without importing torch

# what the built-in plugins register (tests/test_plugins.py checks these against the registries)
BUILTIN_NAMES = {"schedule": ["linear", "cosine", "sigmoid"], "sampler": ["ddpm", "ddim", "dpm++"]}


def registry_name(kind: str) -> Callable[[str], str]:
    """A ``parser=`` for an option naming a registered ``schedule`` or ``sampler``: unknown names are usage errors."""

    def parse(value: str) -> str:
        from ..errors import TinyDiffError
        from .output import importing_torch

        if not isinstance(value, str):  # Click passes defaults through parsers too
            return value
        with importing_torch():
            from ..plugins import registry

        try:
            registry(kind).get(value)
        except TinyDiffError as exc:
            raise typer.BadParameter(str(exc)) from None
        return value

    return parse


def complete_names(kind: str) -> Callable[[str], list[str]]:
    """Shell completion of a registry option: the built-in names (plugins' names are not loaded to complete)."""

    def complete(incomplete: str) -> list[str]:
        return [name for name in BUILTIN_NAMES[kind] if name.startswith(incomplete)]

    return complete


def names_help(kind: str) -> str:
    return ", ".join(BUILTIN_NAMES[kind]) + " or a plugin's (`tinydiff plugins --all`)"


def finite_float(value: Any) -> Any:
    """A ``parser=`` for a float option: NaN and infinity are usage errors."""
    if value is None or isinstance(value, float):
        number = value
    else:
        try:
            number = float(value)
        except ValueError:
            raise typer.BadParameter(f"{value!r} is not a number") from None
    if number is not None and not math.isfinite(number):
        raise typer.BadParameter(f"{value!r} is not a finite number")
    return number
