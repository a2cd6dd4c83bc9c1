"""ArcFace identity distance (Deg) with random networks in the arcface-pytorch file layout; dlib LMD."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from daefr.errors import CheckpointError, WeightsNotFoundError
from daefr.metrics.arcface import (
    ArcFaceResNet,
    arcface_input,
    identity_degree,
    identity_embedding,
    load_arcface,
)
from daefr.testing.weights import write_random_arcface_weights

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _face(seed: int, size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.stack([np.sin(6 * xx + seed) , np.cos(5 * yy - seed), np.sin(3 * (xx + yy))], -1)
    return np.clip(127 + 100 * base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def arcface_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_arcface_weights(tmp_path_factory.mktemp("arcface") / "resnet18_110.pth")


def test_file_layout_and_loading(arcface_file: Path, tmp_path: Path) -> None:
    sd = torch.load(arcface_file, weights_only=True)
    assert all(k.startswith("module.") for k in sd)  # saved from DataParallel like the published file
    assert "module.layer4.1.bn2.running_var" in sd and "module.fc5.weight" in sd and "module.bn5.weight" in sd
    model = load_arcface(arcface_file)
    assert not model.training
    assert torch.equal(model.fc5.weight, sd["module.fc5.weight"])
    plain = write_random_arcface_weights(tmp_path / "arcface_resnet18.pth", dataparallel_prefix=False)
    assert torch.equal(load_arcface(plain).conv1.weight, model.conv1.weight)


def test_real_shapes_match_resnet_face18() -> None:
    shapes = {k: tuple(v.shape) for k, v in ArcFaceResNet().state_dict().items()}
    assert shapes["conv1.weight"] == (64, 1, 3, 3)
    assert shapes["layer2.0.downsample.0.weight"] == (128, 64, 1, 1)
    assert shapes["layer1.0.conv1.weight"] == (64, 64, 3, 3) and "layer1.0.downsample.0.weight" not in shapes
    assert shapes["fc5.weight"] == (512, 512 * 8 * 8) and shapes["prelu.weight"] == (1,)
    assert sum(1 for k in shapes if k.endswith("conv2.weight")) == 8  # 4 stages x 2 IR blocks


def test_protocol_input_is_grey_mirror_pair_in_unit_range() -> None:
    img = _face(0, 64)
    x = arcface_input(img)
    assert x.shape == (2, 1, 128, 128)
    assert torch.equal(x[1], torch.flip(x[0], dims=[-1]))
    assert x.min() >= -1 and x.max() <= 1
    grey = arcface_input(np.repeat(np.full((128, 128, 1), 255, np.uint8), 3, axis=2))
    assert torch.allclose(grey, torch.ones_like(grey))


def test_identity_degree(arcface_file: Path) -> None:
    model = load_arcface(arcface_file)
    a, b = _face(1), _face(2)
    assert identity_degree(model, a, a) == pytest.approx(0.0, abs=1e-3)
    d_ab = identity_degree(model, a, b)
    assert 0.0 < d_ab <= 180.0
    assert identity_degree(model, b, a) == pytest.approx(d_ab, abs=1e-6)
    ea, eb = identity_embedding(model, a), identity_embedding(model, b)
    assert ea.shape == (64,)  # image + mirror, 32 each
    cos = ea @ eb / np.linalg.norm(ea) / np.linalg.norm(eb)
    assert d_ab == pytest.approx(math.degrees(math.acos(cos)), abs=1e-6)


def test_arcface_missing_and_wrong_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAEFR_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match=r"resnet18_110\.pth"):
        load_arcface()
    torch.save({"module.conv1.weight": torch.zeros(4, 1, 3, 3)}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="not an ArcFace ResNet file"):
        load_arcface(tmp_path / "bad.pth")


@pytest.fixture(scope="module")
def landmark_detector():  # type: ignore[no-untyped-def]
    from daefr.metrics.landmarks import LANDMARK_FILE, LandmarkDetector, packaged_dlib_model

    if packaged_dlib_model(LANDMARK_FILE) is None:
        pytest.skip("face-recognition-models is not installed (it ships the dlib 68-point model)")
    pytest.importorskip("dlib")
    return LandmarkDetector()


def test_landmark_distance_on_a_real_face(landmark_detector, shared_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    # located without importing face_recognition_models (its import needs pkg_resources)
    assert "face_recognition_models" not in sys.modules
    photo = sorted((shared_dir / "data" / "faces" / "hq512").glob("*.jpg"))[0]
    face = np.asarray(Image.open(photo).convert("RGB").resize((128, 128), Image.Resampling.BICUBIC))
    marks = landmark_detector.landmarks(face)
    assert marks.shape == (68, 2)
    assert landmark_detector.distance(face, face) == 0.0
    shifted = np.roll(face, 3, axis=1)  # content moves 3 px right: landmarks should follow
    assert 2.0 < landmark_detector.distance(shifted, face) < 4.5
    with pytest.raises(ValueError, match="sizes differ"):
        landmark_detector.distance(face[:64], face)


def test_landmark_model_missing_path(tmp_path: Path) -> None:
    from daefr.metrics.landmarks import LandmarkDetector

    with pytest.raises(WeightsNotFoundError, match="shape_predictor_68_face_landmarks"):
        LandmarkDetector(tmp_path / "shape_predictor_68_face_landmarks.dat")


@pytest.fixture(scope="module")
def dlib_identity():  # type: ignore[no-untyped-def]
    from daefr.metrics.dlib_identity import DESCRIPTOR_FILE, DlibIdentity
    from daefr.metrics.landmarks import packaged_dlib_model

    pytest.importorskip("dlib")
    if packaged_dlib_model(DESCRIPTOR_FILE) is None:
        pytest.skip("face-recognition-models is not installed (it ships the dlib face descriptor)")
    return DlibIdentity()


def _lfw_faces(shared_dir: Path, n: int, size: int = 64) -> list[np.ndarray]:
    from PIL import Image

    files = sorted((shared_dir / "data" / "faces" / "val_lfw").glob("*.jpg"))[:n]
    return [np.asarray(Image.open(f).convert("RGB").crop((50, 50, 200, 200)).resize((size, size), Image.Resampling.BICUBIC))
            for f in files]


def test_dlib_identity_separates_people_and_ranks_degradation(dlib_identity, shared_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    faces = _lfw_faces(shared_dir, 5)
    me = faces[0]
    assert dlib_identity.similarity(me, me) == pytest.approx(1.0, abs=1e-6)
    others = [dlib_identity.similarity(face, me) for face in faces[1:]]

    def down_up(factor: int) -> np.ndarray:
        small = Image.fromarray(me).resize((64 // factor, 64 // factor), Image.Resampling.BICUBIC)
        return np.asarray(small.resize((64, 64), Image.Resampling.BICUBIC))

    mild, strong = dlib_identity.similarity(down_up(2), me), dlib_identity.similarity(down_up(4), me)
    assert 1.0 > mild > strong > max(others), (mild, strong, others)
    with pytest.raises(ValueError, match="sizes differ"):
        dlib_identity.similarity(me[:32], me)


def test_dlib_identity_in_the_metric_suite(dlib_identity, shared_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    from daefr.metrics.suite import MetricsConfig, evaluate_folders

    faces = _lfw_faces(shared_dir, 2)
    (tmp_path / "gt").mkdir()
    (tmp_path / "out").mkdir()
    for i, face in enumerate(faces):
        Image.fromarray(face).save(tmp_path / "gt" / f"{i}.png")
    Image.fromarray(faces[0]).save(tmp_path / "out" / "0.png")  # identical
    Image.fromarray(faces[0]).save(tmp_path / "out" / "1.png")  # another person's face
    result = evaluate_folders(tmp_path / "out", tmp_path / "gt", config=MetricsConfig(metrics=("ids",)))
    values = {row["name"] if "name" in row else row["file"]: row["ids"] for row in result.rows}
    ordered = [values[k] for k in sorted(values)]
    assert ordered[0] == pytest.approx(1.0, abs=1e-6) and ordered[1] < 0.9


def test_dlib_identity_missing_model(tmp_path: Path) -> None:
    pytest.importorskip("dlib")
    from daefr.metrics.dlib_identity import DlibIdentity

    with pytest.raises(WeightsNotFoundError, match="dlib_face_recognition_resnet_model_v1"):
        DlibIdentity(tmp_path / "dlib_face_recognition_resnet_model_v1.dat")
