"""Provenance of an evaluation report: which model, which command, which daefr, when and where.

:func:`collect_provenance` records what the running process knows (daefr version, UTC date, machine,
command line) and completes a caller's mapping: a ``weights`` path gets its ``weights_sha256`` and,
for a daefr ``.safetensors`` restorer, the ``architecture`` recorded in the file and its parameter
count (read from the header; the tensors are not loaded).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from daefr.utils.io import file_sha256

#: Keys shown first in the reports, in this order; any other key follows alphabetically.
ORDER = ("weights", "weights_sha256", "weights_bytes", "architecture", "parameters", "command", "daefr_version",
         "date", "machine", "python", "torch", "device")


def describe_weights(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``weights`` facts: sha256 and size, plus architecture and parameter count of a daefr restorer file."""
    file = Path(path)
    if not file.is_file():
        what = "a folder, not a file" if file.is_dir() else "file not found when the report was written"
        return {"weights": str(path), "weights_sha256": None, "weights_note": what}
    facts: dict[str, Any] = {"weights": str(path), "weights_sha256": file_sha256(file),
                             "weights_bytes": file.stat().st_size}
    if file.suffix == ".safetensors":
        facts.update(_safetensors_facts(file))
    return facts


def _safetensors_facts(file: Path) -> dict[str, Any]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="np") as handle:
            meta = handle.metadata() or {}
            count = 0
            for key in handle.keys():
                shape = handle.get_slice(key).get_shape()
                size = 1
                for dim in shape:
                    size *= int(dim)
                count += size
    except (SafetensorError, OSError, ValueError) as exc:
        return {"weights_note": f"not a readable safetensors file ({exc})"}
    facts: dict[str, Any] = {"parameters": count}
    if "arch" in meta:
        try:
            facts["architecture"] = json.loads(meta["arch"])
        except json.JSONDecodeError:
            facts["architecture"] = meta["arch"]
    return facts


def machine() -> str:
    """Host name, operating system and CPU architecture."""
    return f"{platform.node() or 'unknown host'} ({platform.system()} {platform.release()}, {platform.machine()})"


def collect_provenance(given: Mapping[str, Any] | None = None, device: str | None = None) -> dict[str, Any]:
    """The writer's own facts, overridden by ``given``; a ``weights`` path in ``given`` is described.

    ``given`` may hold any entries (``weights``, ``architecture``, ``command``, ``model`` ...; values that
    are not JSON become strings); ``command`` may be a string or an argument list. ``device`` (the metrics' torch device) names the
    GPU when it is a CUDA device.
    """
    from daefr import __version__

    facts: dict[str, Any] = {
        "weights": None,  # the model is known only to the caller
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else None,
        "daefr_version": __version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "python": platform.python_version(),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        facts["torch"] = str(getattr(torch, "__version__", "unknown"))
        if device and device.startswith("cuda") and torch.cuda.is_available():
            facts["device"] = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
        elif device:
            facts["device"] = device
    given = dict(given or {})
    if isinstance(given.get("command"), (list, tuple)):
        given["command"] = shlex.join(str(a) for a in given["command"])
    weights = given.get("weights")
    if weights is not None:
        facts.update({k: v for k, v in describe_weights(weights).items() if k not in given})
    facts.update(given)
    # plain JSON values only (a Path or another object becomes its string), so every report can hold it
    plain: dict[str, Any] = json.loads(json.dumps(facts, default=str))
    return plain


def ordered_items(provenance: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Provenance entries in display order (:data:`ORDER` first)."""
    first = [(k, provenance[k]) for k in ORDER if k in provenance]
    return first + sorted((k, v) for k, v in provenance.items() if k not in ORDER)
