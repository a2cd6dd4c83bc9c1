"""Lazy imports of the optional face-processing dependencies (OpenCV, dlib) with an install hint."""

from __future__ import annotations

import importlib
from types import ModuleType

from daefr.errors import PluginLoadError

FACES_HINT = "pip install 'daefr[faces]'"

_PURPOSE = {
    "cv2": ("OpenCV", "face alignment and paste-back"),
    "dlib": ("dlib", "the dlib face detectors and landmark models"),
}


def require(module: str) -> ModuleType:
    """Import ``cv2`` or ``dlib``; when missing, raise one line that names ``daefr[faces]``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        label, purpose = _PURPOSE.get(module, (module, "face restoration"))
        raise PluginLoadError(
            f"{label} is needed for {purpose} but cannot be imported ({exc}); install it with: {FACES_HINT}"
        ) from exc


def cv2() -> ModuleType:
    """The ``cv2`` module, or a :class:`PluginLoadError` naming the ``faces`` extra."""
    return require("cv2")


def dlib() -> ModuleType:
    """The ``dlib`` module, or a :class:`PluginLoadError` naming the ``faces`` extra."""
    return require("dlib")
