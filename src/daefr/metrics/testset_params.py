"""Degradation parameters of a ``make-testset`` set, found beside its ``lq/`` or ``gt/`` folder.

``daefr make-testset`` writes ``OUT/params/NAME.json`` for each image (preset, seed and the sampled
parameters). :func:`load_testset_params` looks for ``<lq_dir>/../params`` then ``<gt_dir>/../params``
and reads the records of the given names; a missing record is simply absent, an unreadable one is a
note (the report still renders).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

#: A params file larger than this is not read (make-testset writes well under 2 KiB).
MAX_BYTES = 1 << 20
#: Parameters left out of the compact text and the table (they replay the sample, they do not describe it).
HIDDEN = ("noise_seed",)


def find_params_dir(*folders: str | os.PathLike[str] | None) -> Path | None:
    """The first ``<folder>/../params`` directory among ``folders`` (None entries skipped)."""
    for folder in folders:
        if folder is None:
            continue
        candidate = Path(folder).resolve().parent / "params"
        if candidate.is_dir():
            return candidate
    return None


def load_testset_params(params_dir: Path | None, names: Iterable[str]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """(name -> record, notes) for the names whose ``params_dir/NAME.json`` exists."""
    records: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    if params_dir is None:
        return records, notes
    for name in names:
        file = params_dir / f"{name}.json"
        if not file.is_file():
            continue
        try:
            if file.stat().st_size > MAX_BYTES:
                raise ValueError(f"larger than {MAX_BYTES} bytes")
            record = json.loads(file.read_text(encoding="utf-8"))
            if not isinstance(record, dict) or not isinstance(record.get("params", {}), dict):
                raise ValueError("not a make-testset parameter record (an object with a 'params' object)")
        except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            notes.append(f"{file}: degradation parameters not shown ({type(exc).__name__}: {exc})")
            continue
        records[name] = record
    return records, notes


def flat_params(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record's preset and its scalar/list parameters (seeds left out), in file order."""
    out: dict[str, Any] = {}
    if "preset" in record:
        out["preset"] = record["preset"]
    params = record.get("params", {})
    for key, value in params.items() if isinstance(params, dict) else ():
        if key not in HIDDEN and isinstance(value, (bool, int, float, str, list)):
            out[str(key)] = value
    return out


def format_value(value: Any) -> str:
    """A parameter value in a few characters: 3 significant digits, yes/no, lists comma-joined."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}" if math.isfinite(value) else str(value)
    if isinstance(value, list):
        return "(" + ", ".join(format_value(v) for v in value[:8]) + (", ..." if len(value) > 8 else "") + ")"
    return str(value)


def params_text(record: Mapping[str, Any]) -> str:
    """``key=value`` pairs of :func:`flat_params`, comma-separated."""
    return ", ".join(f"{k}={format_value(v)}" for k, v in flat_params(record).items())


def param_columns(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The union of the records' parameter names, in first-seen order."""
    columns: list[str] = []
    for record in records:
        for key in flat_params(record):
            if key not in columns:
                columns.append(key)
    return columns
