"""Turn exceptions into the one-line reasons daefr shows users (batch summaries, load errors)."""

from __future__ import annotations

import re

from daefr.errors import DaefrError

__all__ = ["one_line_reason", "refused_pickle_global"]

_MAX_LEN = 300
# Header/footer lines torch's weights-only loader wraps around the real reason.
_NOISE = (
    re.compile(r"^Weights only load failed"),
    re.compile(r"^Check the documentation of torch\.load"),
    re.compile(r"WeightsUnpickler error:$"),
)
_REFUSED = (
    re.compile(r"Unsupported global: GLOBAL (\S+) was not an allowed global"),
    re.compile(r"Trying to load unsupported GLOBAL (\S+) whose module"),
)


def refused_pickle_global(exc: BaseException | str) -> str | None:
    """The ``module.name`` global that torch's weights-only unpickler refused, if that was the failure."""
    text = str(exc)
    for pattern in _REFUSED:
        match = pattern.search(text)
        if match:
            return match.group(1).rstrip(".")
    return None


def one_line_reason(exc: BaseException) -> str:
    """The most specific single line of ``exc``'s message, prefixed by its type unless it is a DaefrError.

    Header lines that torch's weights-only loader puts around the real reason are skipped. Long lines
    are cut to 300 characters.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    meaningful = [line for line in lines if not any(p.search(line) for p in _NOISE)]
    text = (meaningful or lines or [""])[0]
    if isinstance(exc, DaefrError):
        reason = text or type(exc).__name__
    elif isinstance(exc, OSError) and exc.strerror:
        reason = f"{type(exc).__name__}: {exc.strerror}"
    else:
        reason = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return reason if len(reason) <= _MAX_LEN else reason[: _MAX_LEN - 3] + "..."
