"""Plugin registry: built-in components by lazy import string, third-party ones by entry points.

Entry-point group names are ``daefr.<group>``; a plugin package declares for example::

    [project.entry-points."daefr.encoders"]
    my_encoder = "my_pkg.encoders:MyEncoder"

Specs accepted by :func:`build`: ``"name"``, ``{"name": ..., **kwargs}`` or
``{"class_path": "pkg.mod.Class", "init_args": {...}}``.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as metadata
import inspect
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from daefr.builtins import BUILTINS
from daefr.errors import ConfigError, PluginLoadError, UnknownComponentError

GROUPS: tuple[str, ...] = tuple(BUILTINS)
ENTRY_POINT_PREFIX = "daefr."
DISABLE_ENV = "DAEFR_DISABLE_PLUGIN_AUTOLOAD"
BUILTIN_SOURCE = "daefr (built-in)"


@dataclass(frozen=True)
class ComponentEntry:
    """One registered component; ``target`` is ``"module:attr"`` and is imported only by :meth:`load`."""

    group: str
    name: str
    target: str
    source: str
    version: str
    description: str
    builtin: bool = field(default=False, compare=False)

    def load(self) -> Callable[..., Any]:
        """Import and return the component class or factory."""
        module_name, _, attr = self.target.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in attr.split(".") if attr else []:
                obj = getattr(obj, part)
        except Exception as exc:  # a broken plugin must break only itself
            where = "the built-in table" if self.builtin else f"distribution {self.source!r}"
            raise PluginLoadError(
                f"component {self.group}/{self.name} from {where} failed to import {self.target!r}: "
                f"{type(exc).__name__}: {exc}. Reinstall or fix that package, or disable it."
            ) from exc
        return obj  # type: ignore[no-any-return]


class Registry:
    """All component groups; one process-wide instance lives in :data:`REGISTRY`."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, ComponentEntry]] | None = None
        self._extra: dict[str, dict[str, ComponentEntry]] = {g: {} for g in GROUPS}

    # ----- discovery -------------------------------------------------------------------------
    def _discover(self) -> dict[str, dict[str, ComponentEntry]]:
        table: dict[str, dict[str, ComponentEntry]] = {}
        version = _own_version()
        for group in GROUPS:
            table[group] = {
                name: ComponentEntry(group, name, target, BUILTIN_SOURCE, version, desc, builtin=True)
                for name, (target, desc) in BUILTINS[group].items()
            }
        if os.environ.get(DISABLE_ENV, "").strip() not in ("", "0", "false", "False"):
            return table
        for group in GROUPS:
            for entry in _plugin_entries(group):
                self._add(table[group], entry)
        return table

    @staticmethod
    def _add(slot: dict[str, ComponentEntry], entry: ComponentEntry) -> None:
        current = slot.get(entry.name)
        if current is None:
            slot[entry.name] = entry
            return
        if current.target == entry.target:
            return  # same target registered twice: nothing to do
        winner, loser = (current, entry) if current.builtin or not entry.builtin else (entry, current)
        warnings.warn(
            f"{entry.group}/{entry.name} is registered twice: {winner.target!r} from {winner.source} "
            f"and {loser.target!r} from {loser.source}; using the one from {winner.source}.",
            RuntimeWarning,
            stacklevel=4,
        )
        slot[entry.name] = winner

    def _table(self) -> dict[str, dict[str, ComponentEntry]]:
        if self._entries is None:
            self._entries = self._discover()
            for group, extra in self._extra.items():
                for entry in extra.values():
                    self._add(self._entries[group], entry)
        return self._entries

    def refresh(self) -> None:
        """Forget discovered entries (after installing a plugin or changing the environment)."""
        self._entries = None

    # ----- registration ----------------------------------------------------------------------
    def register(self, group: str, name: str, target: str | Callable[..., Any], description: str = "") -> None:
        """Register a component at run time (tests, notebooks); ``target`` is an object or ``"mod:attr"``."""
        _check_group(group)
        if not isinstance(target, str):
            target = f"{target.__module__}:{target.__qualname__}"
        entry = ComponentEntry(group, name, target, "runtime", "", description or "")
        self._extra[group][name] = entry
        if self._entries is not None:
            self._add(self._entries[group], entry)

    # ----- lookup ----------------------------------------------------------------------------
    def entries(self, group: str | None = None) -> list[ComponentEntry]:
        """Every entry of one group (or of all groups), sorted; nothing is imported."""
        groups = GROUPS if group is None else (_check_group(group),)
        table = self._table()
        return [table[g][n] for g in groups for n in sorted(table[g])]

    def entry(self, group: str, name: str) -> ComponentEntry:
        """The entry called ``name``; an unknown name lists what exists and suggests close matches."""
        slot = self._table()[_check_group(group)]
        if name in slot:
            return slot[name]
        available = sorted(slot)
        close = difflib.get_close_matches(name, available, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        listing = ", ".join(available) if available else "(none)"
        raise UnknownComponentError(
            f"no component {name!r} in group {group!r}.{hint} Available: {listing}. "
            f"See `daefr list {group}`."
        )

    def get(self, group: str, name: str) -> Callable[..., Any]:
        """The imported class or factory registered as ``group/name``."""
        return self.entry(group, name).load()

    def build(self, group: str, spec: Any, **defaults: Any) -> Any:
        """Instantiate a component from a spec; ``defaults`` fill arguments the spec leaves out."""
        factory, kwargs, label = self._resolve(group, spec)
        merged = {**defaults, **kwargs}
        check_kwargs(factory, merged, label)
        return factory(**merged)

    def _resolve(self, group: str, spec: Any) -> tuple[Callable[..., Any], dict[str, Any], str]:
        if isinstance(spec, str):
            return self.get(group, spec), {}, f"{group}/{spec}"
        if isinstance(spec, Mapping):
            spec = dict(spec)
            if "class_path" in spec:
                path = spec.pop("class_path")
                init_args = dict(spec.pop("init_args", None) or {})
                if spec:
                    raise ConfigError(f"unexpected keys {sorted(spec)} beside class_path {path!r}; "
                                      "put constructor arguments under init_args")
                return import_object(path), init_args, path
            if "name" not in spec:
                raise ConfigError(
                    f"a {group} spec needs a 'name' (one of `daefr list {group}`) or a 'class_path'; "
                    f"got keys {sorted(spec)}"
                )
            name = spec.pop("name")
            return self.get(group, str(name)), spec, f"{group}/{name}"
        raise ConfigError(
            f"cannot build a {group} component from {type(spec).__name__} {spec!r}: use a name, "
            "{name: ..., **kwargs} or {class_path: ..., init_args: ...}"
        )


def check_kwargs(factory: Callable[..., Any], kwargs: Mapping[str, Any], label: str) -> None:
    """Reject keyword arguments that ``factory`` does not accept, suggesting close names."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return
    params = sig.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key in kwargs:
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=2, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(
                f"{label} got an unknown argument {key!r}.{hint} Accepted: {', '.join(accepted) or '(none)'}."
            )


def import_object(path: str) -> Callable[..., Any]:
    """Import ``"pkg.mod.Class"`` or ``"pkg.mod:Class"``."""
    if ":" in path:
        module_name, attr = path.split(":", 1)
    else:
        module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ConfigError(f"class_path {path!r} must be a full dotted path such as 'pkg.module.Class'")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise PluginLoadError(f"cannot import class_path {path!r}: {exc}") from exc
    return obj  # type: ignore[no-any-return]


def describe(group: str, name: str) -> str:
    """Human-readable signature, defaults and docstring of ``group/name`` (for ``daefr info``)."""
    entry = REGISTRY.entry(group, name)
    obj = entry.load()
    sig = _signature(obj)
    doc = inspect.getdoc(obj) or "(no docstring)"
    lines = [
        f"{group}/{name}",
        f"  target:  {entry.target}",
        f"  source:  {entry.source} {entry.version}".rstrip(),
        f"  call:    {getattr(obj, '__name__', name)}{sig}",
    ]
    try:
        params = inspect.signature(obj).parameters
        defaults = [(n, p.default) for n, p in params.items() if p.default is not inspect.Parameter.empty]
    except (TypeError, ValueError):
        defaults = []
    if defaults:
        lines.append("  defaults:")
        lines += [f"    {n} = {d!r}" for n, d in defaults]
    lines.append("")
    lines += ["  " + line for line in doc.splitlines()]
    return "\n".join(lines)


def _signature(obj: Callable[..., Any]) -> str:
    """Signature text with string annotations resolved where possible."""
    for eval_str in (True, False):
        try:
            return str(inspect.signature(obj, eval_str=eval_str))
        except Exception:  # unresolvable annotations: fall back to the raw strings
            continue
    return "(...)"


def _check_group(group: str) -> str:
    if group not in BUILTINS:
        close = difflib.get_close_matches(group, GROUPS, n=2, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownComponentError(f"no registry group {group!r}.{hint} Groups: {', '.join(GROUPS)}.")
    return group


def _own_version() -> str:
    try:
        return metadata.version("daefr")
    except metadata.PackageNotFoundError:
        return "source"


def _plugin_entries(group: str) -> list[ComponentEntry]:
    found: list[ComponentEntry] = []
    for ep in metadata.entry_points(group=ENTRY_POINT_PREFIX + group):
        dist = getattr(ep, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else "unknown distribution"
        dist_version = dist.version if dist is not None else ""
        summary = (dist.metadata.get("Summary") or "") if dist is not None else ""
        found.append(ComponentEntry(group, ep.name, ep.value.replace(" ", ""), dist_name, dist_version, summary))
    # deterministic resolution among plugins: by distribution name, then target
    return sorted(found, key=lambda e: (e.name, e.source, e.target))


REGISTRY = Registry()
register = REGISTRY.register
build = REGISTRY.build
get = REGISTRY.get
entries = REGISTRY.entries
