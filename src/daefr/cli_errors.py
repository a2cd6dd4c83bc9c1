"""Turn configuration errors from LightningCLI/jsonargparse into one clear line with a hint.

jsonargparse reports a bad value inside a ``class_path`` block as a nested "Does not validate against any
of the Union subtypes" report that repeats the whole parsed config; our own errors raised while building
a component (unknown component, unknown argument, missing weights, unreadable checkpoint) arrive wrapped
in it. :func:`config_error_message` keeps only the specific reason(s), and adds a "did you mean" for an
unknown option of a class.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re

from daefr.errors import DaefrError

__all__ = ["config_error_message", "daefr_error_in_chain"]

_NOISE = (
    re.compile(r"^Does not validate against any of the Union subtypes"),
    re.compile(r"^Subtypes:"),
    re.compile(r"^Errors:$"),
    re.compile(r"^- Expected a <class 'NoneType'>"),
    re.compile(r"^Given value"),
    re.compile(r"^tip:"),
    re.compile(r"^usage:"),
)
_CLASS_OPTION = re.compile(r"Problem with given class_path '([\w.]+)':\s*Option '(\w+)' is not accepted")


def daefr_error_in_chain(exc: BaseException) -> DaefrError | None:
    """The first :class:`DaefrError` in ``exc``'s cause/context chain (``exc`` included)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, DaefrError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _suggest(class_path: str, option: str) -> str:
    params: list[str] = []
    try:
        module, _, name = class_path.rpartition(".")
        for klass in inspect.getmro(getattr(importlib.import_module(module), name)):  # **kwargs go to bases
            init = vars(klass).get("__init__")
            if init is not None:
                params += [p.name for p in inspect.signature(init).parameters.values()
                           if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    except Exception:  # the hint is optional
        return ""
    close = difflib.get_close_matches(option, params, n=2, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def config_error_message(text: str) -> str:
    """One line from a (possibly nested, multi-line) jsonargparse error message."""
    kept: list[str] = []
    for raw in str(text).splitlines():
        line = raw.strip()
        if not line or any(p.search(line) for p in _NOISE):
            continue
        line = line[2:] if line.startswith("- ") else line
        if kept and kept[-1].endswith(":"):
            kept[-1] = f"{kept[-1]} {line}"
        else:
            kept.append(line)
    message = "; ".join(kept) if kept else str(text).strip()
    match = _CLASS_OPTION.search(message)
    if match:
        message += _suggest(match.group(1), match.group(2))
    return message
