"""Compare a state dict against what a module expects, and say what does not fit in one line."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["describe_mismatch"]


def _shape(value: Any) -> tuple[int, ...] | None:
    shape = getattr(value, "shape", None)
    return tuple(int(s) for s in shape) if shape is not None else None


def describe_mismatch(expected: Mapping[str, Any], given: Mapping[str, Any], examples: int = 2) -> str | None:
    """``None`` when ``given`` has exactly ``expected``'s keys and shapes, else a one-line summary.

    Values are tensors (or anything with ``.shape``); only keys and shapes are compared.
    """
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    reshaped = [k for k in expected if k in given and _shape(expected[k]) != _shape(given[k])]
    parts: list[str] = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:examples])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:examples])})")
    if reshaped:
        shown = ", ".join(f"{k} {_shape(given[k])} vs {_shape(expected[k])}" for k in reshaped[:examples])
        parts.append(f"{len(reshaped)} tensors with other shapes (e.g. {shown})")
    return "; ".join(parts) if parts else None
