"""Compare a state dict against what a module expects, and say what does not fit in one line."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["StateDictDiff", "compare_state_dicts", "describe_mismatch"]


def _shape(value: Any) -> tuple[int, ...] | None:
    shape = getattr(value, "shape", None)
    return tuple(int(s) for s in shape) if shape is not None else None


@dataclass(frozen=True)
class StateDictDiff:
    """Keys ``missing`` from / ``unexpected`` in the given state dict, and keys whose shapes differ (``reshaped``)."""

    missing: list[str]
    unexpected: list[str]
    reshaped: list[str]
    expected_shapes: dict[str, tuple[int, ...] | None]
    given_shapes: dict[str, tuple[int, ...] | None]

    @property
    def ok(self) -> bool:
        """Same keys and shapes."""
        return not (self.missing or self.unexpected or self.reshaped)

    def summary(self, examples: int = 2) -> str | None:
        """``None`` when :attr:`ok`, else one line with counts and up to ``examples`` keys of each kind."""
        parts: list[str] = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing keys (e.g. {', '.join(self.missing[:examples])})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected keys (e.g. {', '.join(self.unexpected[:examples])})")
        if self.reshaped:
            shown = ", ".join(f"{k} {self.given_shapes[k]} vs {self.expected_shapes[k]}"
                              for k in self.reshaped[:examples])
            parts.append(f"{len(self.reshaped)} tensors with other shapes (e.g. {shown})")
        return "; ".join(parts) if parts else None


def compare_state_dicts(expected: Mapping[str, Any], given: Mapping[str, Any]) -> StateDictDiff:
    """Compare keys and shapes of ``given`` with ``expected`` (values: tensors or anything with ``.shape``)."""
    reshaped = [k for k in expected if k in given and _shape(expected[k]) != _shape(given[k])]
    return StateDictDiff(
        missing=[k for k in expected if k not in given],
        unexpected=[k for k in given if k not in expected],
        reshaped=reshaped,
        expected_shapes={k: _shape(expected[k]) for k in reshaped},
        given_shapes={k: _shape(given[k]) for k in reshaped},
    )


def describe_mismatch(expected: Mapping[str, Any], given: Mapping[str, Any], examples: int = 2) -> str | None:
    """``None`` when ``given`` has exactly ``expected``'s keys and shapes, else a one-line summary.

    Values are tensors (or anything with ``.shape``); only keys and shapes are compared.
    """
    return compare_state_dicts(expected, given).summary(examples)
