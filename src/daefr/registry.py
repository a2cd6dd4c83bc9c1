"""Plugin registry: built-in components by lazy import string, third-party ones by entry points.

Entry-point group names are ``daefr.<group>``; a plugin package declares for example::

    [project.entry-points."daefr.encoders"]
    my_encoder = "my_pkg.encoders:MyEncoder"

Specs accepted by :func:`build`: ``"name"``, ``{"name": ..., **kwargs}`` or
``{"class_path": "pkg.mod.Class", "init_args": {...}}``.

Trust: a spec typed by the user (config file, command line, Python) may name any ``class_path``. A spec
read from a model file (restorer metadata, checkpoint hyper-parameters) is data from a stranger: it may
name only registered components (built-ins and installed entry points) and daefr training stages, with
plain values. :func:`check_file_spec` checks such a spec before anything is built, and while
:func:`reading_file` is active every ``class_path`` the registry resolves is held to the same rule.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.metadata as metadata
import inspect
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from daefr.builtins import BUILTINS
from daefr.errors import ConfigError, PluginLoadError, UnknownComponentError, UnsafeFileError

GROUPS: tuple[str, ...] = tuple(BUILTINS)
ENTRY_POINT_PREFIX = "daefr."
DISABLE_ENV = "DAEFR_DISABLE_PLUGIN_AUTOLOAD"
BUILTIN_SOURCE = "daefr (built-in)"
#: Keys whose value names a class to import (jsonargparse and Lightning hyper-parameters).
CLASS_PATH_KEYS = ("class_path", "_class_path")
#: Package whose LightningModule subclasses a checkpoint's hyper-parameters may name.
STAGE_PACKAGE = "daefr.stages"
_PLAIN = (str, int, float, bool, type(None))
# The file whose specs are being built (None: the user's own configuration).
_FILE_SOURCE: ContextVar[str | None] = ContextVar("daefr_registry_file_source", default=None)


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
    def targets(self) -> frozenset[str]:
        """Every registered target of every group, as ``"pkg.mod.Attr"`` (nothing is imported)."""
        return frozenset(_dotted(e.target) for slot in self._table().values() for e in slot.values())

    def is_trusted_class_path(self, path: str) -> bool:
        """True when a file may name ``path``: a registered component or a daefr training stage."""
        dotted = _dotted(str(path))
        return dotted in self.targets() or _is_daefr_stage(dotted)

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
                _guard(str(path), self)
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
    _guard(path, REGISTRY)
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise PluginLoadError(f"cannot import class_path {path!r}: {exc}") from exc
    return obj  # type: ignore[no-any-return]


@contextlib.contextmanager
def reading_file(source: str) -> Iterator[None]:
    """While active, specs come from the file ``source``: only trusted class paths are imported."""
    token = _FILE_SOURCE.set(str(source))
    try:
        yield
    finally:
        _FILE_SOURCE.reset(token)


def check_file_spec(value: Any, source: str, where: str = "") -> None:
    """Refuse a spec read from the file ``source`` unless it is plain data naming trusted classes only.

    Plain data: dicts with string keys, lists, tuples, strings, numbers, booleans and None. Every
    ``class_path`` (or ``_class_path``) must be a registered component or a daefr stage
    (:meth:`Registry.is_trusted_class_path`). Raises :class:`UnsafeFileError` naming the file and the key.
    """
    label = where or "top level"
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise UnsafeFileError(f"{source}: refused: non-string key {key!r} at {label}; "
                                      "a model file may hold only plain values")
            at = f"{where}.{key}" if where else key
            if key in CLASS_PATH_KEYS and not (isinstance(item, str) and REGISTRY.is_trusted_class_path(item)):
                raise UnsafeFileError(
                    f"{source}: refused: {at} names {item!r}, which is neither a registered component nor a "
                    "daefr stage; a model file may name only those (see `daefr list`), so nothing was imported"
                )
            check_file_spec(item, source, at)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_file_spec(item, source, f"{label}[{i}]")
    elif not isinstance(value, _PLAIN):
        raise UnsafeFileError(f"{source}: refused: {label} holds a {type(value).__name__}; a model file's "
                              "settings may hold only plain values")


def _guard(path: str, registry: Registry) -> None:
    source = _FILE_SOURCE.get()
    if source is not None and not (registry.is_trusted_class_path(path) or REGISTRY.is_trusted_class_path(path)):
        raise UnsafeFileError(
            f"{source}: refused: it names class_path {path!r}, which is neither a registered component nor a "
            "daefr stage; a model file may name only those (see `daefr list`), so nothing was imported"
        )


def _dotted(target: str) -> str:
    """``"pkg.mod:Attr"`` or ``"pkg.mod.Attr"`` -> ``"pkg.mod.Attr"``."""
    return target.replace(":", ".")


def _is_daefr_stage(dotted: str) -> bool:
    """True when ``dotted`` is a LightningModule class defined in :data:`STAGE_PACKAGE` (imports only daefr)."""
    module_name, _, attr = dotted.rpartition(".")
    if not (module_name == STAGE_PACKAGE or module_name.startswith(STAGE_PACKAGE + ".")) or not attr.isidentifier():
        return False
    try:
        obj = getattr(importlib.import_module(module_name), attr)
        from lightning.pytorch import LightningModule
    except (ImportError, AttributeError):
        return False
    return isinstance(obj, type) and issubclass(obj, LightningModule) and obj.__module__.startswith(STAGE_PACKAGE)


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
