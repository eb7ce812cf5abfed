"""The plugin manager and the registries it fills.

Built-in components are plugins too (``DEFAULT_PLUGINS``), registered first and
through the same hooks a third party uses. Then every entry point of group
``tinydiff`` is loaded on its own: one that fails to import or to register
becomes a warning and a row in ``tinydiff plugins``, and the rest keep working.
``TINYDIFF_DISABLE_PLUGINS=a,b`` skips plugins by entry-point or distribution name.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import warnings
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable

import pluggy

from . import __version__, hookspecs
from .errors import TinyDiffError

DEFAULT_PLUGINS = ("tinydiff.schedules", "tinydiff.samplers", "tinydiff.nn.blocks", "tinydiff.nn.text", "tinydiff.trackers")
ENTRY_POINT_GROUP = "tinydiff"

# kind -> (hook name, how the kind is spelled in messages)
KINDS: dict[str, tuple[str, str]] = {
    "schedule": ("tinydiff_register_schedules", "schedule"),
    "block": ("tinydiff_register_blocks", "block"),
    "text_encoder": ("tinydiff_register_text_encoders", "text encoder"),
    "sampler": ("tinydiff_register_samplers", "sampler"),
    "tracker": ("tinydiff_register_trackers", "tracker"),
}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.+-]*$")


class PluginWarning(UserWarning):
    """A plugin could not be loaded or registered; the rest of TinyDiff keeps working."""


@dataclass
class Component:
    """One registered thing: what it is called, the object, and which plugin gave it."""

    kind: str
    name: str
    obj: Any
    plugin: str


@dataclass
class PluginInfo:
    """A row of ``tinydiff plugins``."""

    name: str
    version: str
    builtin: bool
    distribution: str | None = None
    registered: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None
    disabled: bool = False


class Registry:
    """Components of one kind by name; unknown names answer with the choices."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.components: dict[str, Component] = {}

    def names(self) -> list[str]:
        return sorted(self.components)

    def __contains__(self, name: object) -> bool:
        return name in self.components

    def get(self, name: str) -> Any:
        """Return the registered object, or raise ``unknown <kind> 'x'; available: ...``."""
        if name in self.components:
            return self.components[name].obj
        raise TinyDiffError(unknown_name_message(KINDS[self.kind][1], name, self.names()))


def unknown_name_message(what: str, name: str, choices: list[str]) -> str:
    """``unknown schedule 'cosin'; available: cosine, linear (did you mean 'cosine'?)``."""
    message = f"unknown {what} {name!r}; available: {', '.join(choices) or '(none)'}"
    close = difflib.get_close_matches(str(name), choices, n=1, cutoff=0.6)
    if close:
        message += f" (did you mean {close[0]!r}?)"
    return message


def _describe(exc: BaseException) -> str:
    """``ValueError: bad`` or, for a plugin that calls ``sys.exit(7)``, ``called sys.exit(7)``."""
    if isinstance(exc, SystemExit):
        return f"called sys.exit({exc.code!r})"
    return f"{type(exc).__name__}: {exc}"


def plugin_of(kind: str, name: str) -> str:
    """The plugin that registered ``name`` (``tinydiff.samplers`` for a built-in)."""
    comp = registry(kind).components.get(name)
    return comp.plugin if comp is not None else "?"


def _check_component(kind: str, name: Any, obj: Any) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise TinyDiffError(
            f"{KINDS[kind][1]} name {name!r} is not valid: use lowercase letters, digits, '_', '-', '.', '+'"
        )
    if kind in ("schedule", "sampler") and not callable(obj):
        raise TinyDiffError(f"{KINDS[kind][1]} {name!r} must be a function, got {type(obj).__name__}")
    if kind == "tracker" and not callable(obj):
        raise TinyDiffError(f"tracker {name!r} must be a class (or a function making a tracker), got {type(obj).__name__}")
    if kind == "text_encoder" and not isinstance(obj, type):
        raise TinyDiffError(f"text encoder {name!r} must be a class, got {type(obj).__name__}")
    if kind == "block":
        import torch.nn as nn

        if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
            raise TinyDiffError(f"block {name!r} must be an nn.Module subclass, got {obj!r}")


class PluginHost:
    """Owns the pluggy manager, what each plugin registered, and the registries."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("tinydiff")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self._registries: dict[str, Registry] | None = None

    # -- loading ---------------------------------------------------------
    def load_defaults(self) -> None:
        for module_name in DEFAULT_PLUGINS:
            self.pm.register(importlib.import_module(module_name), name=module_name)
            self.plugins[module_name] = PluginInfo(module_name, __version__, builtin=True, distribution="tinydiff")

    def load_entry_points(self) -> None:
        disabled = {p.strip() for p in os.environ.get("TINYDIFF_DISABLE_PLUGINS", "").split(",") if p.strip()}
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(ep, "dist", None)
            if ep.name in self.plugins:
                known = self.plugins[ep.name]
                if dist is None or known.distribution != dist.name:  # not just the same distribution seen twice
                    warnings.warn(
                        f"plugin {ep.name!r} of {dist.name if dist else 'an unknown distribution'} has the same "
                        f"name as one already loaded (from {known.distribution}); it is skipped",
                        PluginWarning,
                        stacklevel=2,
                    )
                continue
            info = PluginInfo(
                ep.name,
                dist.version if dist else "?",
                builtin=False,
                distribution=dist.name if dist else None,
            )
            self.plugins[ep.name] = info
            if ep.name in disabled or (info.distribution and info.distribution in disabled):
                info.disabled = True
                continue
            try:
                self.pm.register(ep.load(), name=ep.name)
            except (Exception, SystemExit) as exc:  # a broken plugin, even one calling sys.exit, must not take the CLI down
                self._fail(info, f"failed to load: {_describe(exc)}")

    def add(self, plugin: Any, name: str) -> None:
        """Register a plugin object by hand (tests, notebooks); ``remove`` undoes it."""
        self.pm.register(plugin, name=name)
        self.plugins[name] = PluginInfo(name, "-", builtin=False)
        self._registries = None

    def remove(self, name: str) -> None:
        if self.pm.get_plugin(name) is not None:
            self.pm.unregister(name=name)
        self.plugins.pop(name, None)
        self._registries = None

    def _fail(self, info: PluginInfo, error: str) -> None:
        info.error = error
        warnings.warn(f"plugin {info.name!r} {error}; it is skipped", PluginWarning, stacklevel=3)

    # -- registries ------------------------------------------------------
    @property
    def registries(self) -> dict[str, Registry]:
        if self._registries is None:
            self._registries = self._collect()
        return self._registries

    def _collect(self) -> dict[str, Registry]:
        registries = {kind: Registry(kind) for kind in KINDS}
        for info in self.plugins.values():
            info.registered = {}
            plugin = self.pm.get_plugin(info.name)
            if plugin is None or info.error:
                continue
            pending: list[Component] = []
            try:
                for kind, (hook_name, _) in KINDS.items():
                    for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                        if impl.plugin is plugin:
                            impl.function(**{a: self._register_callback(kind, info.name, pending) for a in impl.argnames})
            except (Exception, SystemExit) as exc:  # Ctrl-C (KeyboardInterrupt) still stops the command
                self._fail(info, f"failed to register: {_describe(exc)}")
                continue
            for comp in pending:
                existing = registries[comp.kind].components.get(comp.name)
                if existing is not None:
                    warnings.warn(
                        f"plugin {info.name!r} registers {KINDS[comp.kind][1]} {comp.name!r}, "
                        f"already provided by {existing.plugin!r}; the first one is kept",
                        PluginWarning,
                        stacklevel=2,
                    )
                    continue
                registries[comp.kind].components[comp.name] = comp
                info.registered.setdefault(comp.kind, []).append(comp.name)
        return registries

    @staticmethod
    def _register_callback(kind: str, plugin: str, pending: list[Component]) -> Callable[[str, Any], None]:
        def register(name: str, obj: Any) -> None:
            _check_component(kind, name, obj)
            pending.append(Component(kind, name, obj, plugin))

        return register


_host: PluginHost | None = None


def get_host() -> PluginHost:
    """The process-wide plugin host, loaded on first use."""
    global _host
    if _host is None:
        host = PluginHost()
        host.load_defaults()
        host.load_entry_points()
        _host = host
    return _host


def reset() -> None:
    """Forget the loaded plugins; the next use loads them again (tests use this)."""
    global _host
    _host = None


def registry(kind: str) -> Registry:
    """The registry of ``schedule``, ``block``, ``text_encoder``, ``sampler`` or ``tracker``."""
    return get_host().registries[kind]


def get_schedule(name: str) -> Callable[..., Any]:
    return registry("schedule").get(name)


def get_block(name: str) -> Any:
    return registry("block").get(name)


def get_sampler(name: str) -> Callable[..., Any]:
    return registry("sampler").get(name)


def get_text_encoder(name: str) -> Any:
    return registry("text_encoder").get(name)


def get_tracker(name: str) -> Callable[[], Any]:
    return registry("tracker").get(name)
