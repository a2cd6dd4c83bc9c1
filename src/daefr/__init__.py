"""daefr: DAEFR (Dual Associated Encoder for Face Restoration) as a PyTorch Lightning framework."""

from __future__ import annotations

from daefr.utils.lazy import lazy_getattr

__version__ = "0.1.0"

# Public names imported on first use, so `import daefr` stays light (no torch import).
_LAZY = {
    "load_restorer": "daefr.interop.restorer_io:load_restorer",
    "Restorer": "daefr.inference.restorer:Restorer",
    "RestoreResult": "daefr.inference.restorer:RestoreResult",
}


__getattr__ = lazy_getattr("daefr", _LAZY)

__all__ = ["__version__", *_LAZY]
