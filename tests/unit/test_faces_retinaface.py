"""RetinaFace-ResNet50: facexlib key layout loading, anchors, decoding, NMS, end-to-end shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from daefr.errors import CheckpointError, WeightsNotFoundError
from daefr.inference.detection import DetectedFace
from daefr.inference.retinaface import (
    RetinaFaceDetector,
    RetinaFaceResNet50,
    decode,
    faces_from_outputs,
    nms,
    prior_boxes,
)
from daefr.registry import REGISTRY

pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def facexlib_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random weights saved as the released file is: a plain state dict with DataParallel's ``module.``."""
    generator = torch.Generator().manual_seed(0)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in RetinaFaceResNet50().state_dict().items()}
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            continue  # older files lack these counters
        value = torch.randn(shape, generator=generator) * 0.05
        if key.endswith("running_var"):
            value = value.abs() + 1.0
        # half precision keeps the test file small; loading copies into the float32 parameters
        state[f"module.{key}"] = value.half()
    path = tmp_path_factory.mktemp("retinaface") / "detection_Resnet50_Final.pth"
    torch.save(state, path)
    return path


def test_layout_has_the_facexlib_names_and_size() -> None:
    state = RetinaFaceResNet50().state_dict()
    for key in ("body.conv1.weight", "body.layer4.2.bn3.running_var", "body.layer2.0.downsample.1.weight",
                "fpn.output1.0.weight", "fpn.merge2.1.bias", "ssh3.conv7x7_3.1.weight", "ssh1.conv5X5_1.0.weight",
                "ClassHead.2.conv1x1.weight", "BboxHead.0.conv1x1.bias", "LandmarkHead.1.conv1x1.weight"):
        assert key in state, key
    assert state["LandmarkHead.1.conv1x1.weight"].shape == (20, 256, 1, 1)
    params = sum(v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k)
    assert 27.2e6 < params < 27.4e6  # RetinaFace-R50's published size (~27.3M)


def test_loads_facexlib_weights_through_the_registry(facexlib_file: Path) -> None:
    detector = REGISTRY.build("face_detectors", {"name": "retinaface_resnet50", "weights": str(facexlib_file),
                                                 "threshold": 0.0, "min_short_side": None})
    assert isinstance(detector, RetinaFaceDetector)
    stored = torch.load(facexlib_file, weights_only=True)["module.fpn.merge1.0.weight"].float()
    assert torch.equal(detector.model.state_dict()["fpn.merge1.0.weight"], stored)
    image = np.random.default_rng(0).integers(0, 256, (40, 56, 3)).astype(np.uint8)
    faces = detector(image)  # random weights: any faces, but the pipeline runs end to end
    assert faces and all(isinstance(f, DetectedFace) and f.points5.shape == (5, 2) for f in faces)


def test_wrong_or_missing_weights(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match="detection_Resnet50_Final.pth"):
        RetinaFaceDetector(weights=str(tmp_path / "none.pth"))
    bad = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3)}, bad)
    with pytest.raises(CheckpointError, match="facexlib layout"):
        RetinaFaceDetector(weights=str(bad))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        RetinaFaceDetector(weights=str(junk))


def test_prior_boxes_order_and_count() -> None:
    priors = prior_boxes(64, 96)
    assert priors.shape == (2 * (8 * 12 + 4 * 6 + 2 * 3), 4)
    np.testing.assert_allclose(priors[0], [4 / 96, 4 / 64, 16 / 96, 16 / 64])
    np.testing.assert_allclose(priors[1], [4 / 96, 4 / 64, 32 / 96, 32 / 64])  # second anchor, same place
    np.testing.assert_allclose(priors[2, :2], [12 / 96, 4 / 64])  # next column
    assert prior_boxes(840, 840).shape == (29126, 4)  # the size Pytorch_Retinaface reports for 840x840


def test_decode_zero_offsets_gives_the_anchors() -> None:
    priors = prior_boxes(64, 64)[:4]
    boxes, points = decode(np.zeros((4, 4)), np.zeros((4, 10)), priors, 64, 64)
    np.testing.assert_allclose(boxes[0], [-4, -4, 12, 12])
    np.testing.assert_allclose(points[0], np.full((5, 2), 4.0))
    boxes, _ = decode(np.array([[1.0, 0.0, 0.0, np.log(2) / 0.2]]), np.zeros((1, 10)), priors[:1], 64, 64)
    # x shifted by 0.1 * 16 px, height doubled about the same centre
    np.testing.assert_allclose(boxes[0], [-4 + 1.6, -12, 12 + 1.6, 20], atol=1e-9)


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=float)
    assert nms(boxes, np.array([0.5, 0.9, 0.7]), 0.4) == [1, 2]
    assert nms(boxes, np.array([0.5, 0.9, 0.7]), 0.9) == [1, 2, 0]


def test_outputs_of_one_confident_anchor_become_one_face() -> None:
    n = prior_boxes(64, 64).shape[0]
    conf = np.tile([1.0, 0.0], (n, 1))
    conf[10] = [0.02, 0.98]
    faces = faces_from_outputs(np.zeros((n, 4)), conf, np.zeros((n, 10)), 64, 64, scale=2.0)
    assert len(faces) == 1 and faces[0].score == pytest.approx(0.98)
    cx, cy, w, h = prior_boxes(64, 64)[10] * np.array([64, 64, 64, 64])
    np.testing.assert_allclose(faces[0].box, np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]) / 2)
    np.testing.assert_allclose(faces[0].points5, np.tile([cx / 2, cy / 2], (5, 1)))
