"""Pluggy hook specifications: how a plugin adds components to TinyDiff.

Every hook hands the plugin a ``register`` callback, so the host checks names,
catches duplicates and records which distribution supplied what (the pattern of
simonw/llm). Built-in components register through these same hooks.
"""

from __future__ import annotations

from typing import Any, Callable

import pluggy

hookspec = pluggy.HookspecMarker("tinydiff")
hookimpl = pluggy.HookimplMarker("tinydiff")

Register = Callable[[str, Any], None]


@hookspec
def tinydiff_register_schedules(register: Register) -> None:
    """Register noise schedules: ``register(name, fn)``, ``fn(num_timesteps, **options) -> betas`` (float64 ``[T]``)."""


@hookspec
def tinydiff_register_blocks(register: Register) -> None:
    """Register UNet blocks: ``register(name, cls)`` with ``cls`` an ``nn.Module`` subclass."""


@hookspec
def tinydiff_register_text_encoders(register: Register) -> None:
    """Register text encoders: ``register(name, cls)``; ``encode(list[str]) -> tokens, mask, pooled``."""


@hookspec
def tinydiff_register_trackers(register: Register) -> None:
    """Register trackers: ``register(name, cls)``; ``cls()`` has ``start``, ``log``, ``log_image``, ``finish`` (``tinydiff.trackers.Tracker``)."""


@hookspec
def tinydiff_register_samplers(register: Register) -> None:
    """Register samplers: ``register(name, fn)``, ``fn(predict_eps, x_T, schedule, *, steps, generator, callback) -> x_0``."""
