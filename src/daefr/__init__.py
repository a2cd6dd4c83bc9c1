"""daefr: DAEFR (Dual Associated Encoder for Face Restoration) as a PyTorch Lightning framework."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# Public names imported on first use, so `import daefr` stays light (no torch import).
_LAZY = {
    "load_restorer": "daefr.interop.restorer_io:load_restorer",
    "Restorer": "daefr.inference.restorer:Restorer",
    "RestoreResult": "daefr.inference.restorer:RestoreResult",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name].split(":")
        return getattr(importlib.import_module(module_name), attr)
    raise AttributeError(f"module 'daefr' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
