"""The Restorer API with stand-in networks: batching across photos, aligned mode, precision, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from daefr.errors import ConfigError, ImageReadError
from daefr.inference.alignment import apply_affine, face_template
from daefr.inference.detection import DetectedFace, FaceDetector
from daefr.inference.restorer import Restorer, RestoreResult, as_rgb_uint8, select_device

pytest.importorskip("cv2")


class Negate(nn.Module):
    """(B, 3, H, W) in [-1, 1] -> its photographic negative; records the batch sizes it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        return -x


class FixedFaces(FaceDetector):
    """Finds ``count`` faces of 40 px side in a row, whatever the photo."""

    def __init__(self, counts: dict[int, int]) -> None:
        self.counts = counts  # photo width -> number of faces

    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        faces = []
        for i in range(self.counts.get(image.shape[1], 0)):
            points = face_template(512) / 512 * 40 + np.array([10.0 + 50 * i, 10.0])
            faces.append(DetectedFace(np.array([10.0 + 50 * i, 10.0, 50.0 + 50 * i, 50.0]), 1.0, points))
        return faces


def _photo(width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (60, width, 3)).astype(np.uint8)


def test_faces_are_batched_across_photos_and_results_keep_order() -> None:
    net = Negate()
    restorer = Restorer(net, face_size=32, batch_size=4, detector=FixedFaces({100: 2, 101: 1, 160: 3}))
    photos = [("a", _photo(100)), ("b", _photo(101)), ("c", _photo(160))]
    results = list(restorer.restore_many(photos))
    assert [key for key, _ in results] == ["a", "b", "c"]
    assert net.batches == [4, 2]  # 6 faces in full batches, not one call per photo
    counts = []
    for _, result in results:
        assert isinstance(result, RestoreResult)
        counts.append(len(result.faces))
        for face in result.faces:
            assert face.cropped.shape == face.restored.shape == (32, 32, 3)
            assert np.abs(face.restored.astype(int) - (255 - face.cropped.astype(int))).max() <= 1
            np.testing.assert_allclose(apply_affine(face.affine, face.landmarks), face_template(32), atol=1e-6)
    assert counts == [2, 1, 3]
    assert results[0][1].restored_image.shape == (60, 100, 3)


def test_photo_without_faces_comes_back_unchanged() -> None:
    restorer = Restorer(Negate(), face_size=32, detector=FixedFaces({}))
    photo = _photo(70)
    result = restorer.restore(photo)
    assert result.faces == [] and result.faces_found == 0
    assert np.array_equal(result.restored_image, photo)
    assert restorer.restore(photo, upscale=2).restored_image.shape == (120, 140, 3)


def test_selection_options_reach_the_detector_output() -> None:
    restorer = Restorer(Negate(), face_size=32, detector=FixedFaces({160: 3}))
    result = restorer.restore(_photo(160), max_faces=1, draw_box=True)
    assert result.faces_found == 3 and len(result.faces) == 1
    assert len(restorer.restore(_photo(160), min_face_size=41).faces) == 0


def test_aligned_mode_resizes_to_the_model_size() -> None:
    restorer = Restorer(Negate(), face_size=48, detector="this detector is never built")
    crop = _photo(90)  # 60 x 90 crop: resized to 48 x 48
    result = restorer.restore(crop, aligned=True)
    assert result.aligned and result.restored_image.shape == (48, 48, 3)
    assert len(result.faces) == 1 and result.faces[0].cropped.shape == (48, 48, 3)
    assert np.abs(result.restored_image.astype(int) - (255 - result.faces[0].cropped.astype(int))).max() <= 1


def test_bad_items_fail_alone_with_return_exceptions() -> None:
    restorer = Restorer(Negate(), face_size=32, detector=FixedFaces({100: 1}))
    items = [("good", _photo(100)), ("float", np.zeros((8, 8, 3), np.float32)), ("good2", _photo(100, 1))]
    out = dict(restorer.restore_many(items, return_exceptions=True))
    assert isinstance(out["float"], ImageReadError) and "uint8" in str(out["float"])
    assert isinstance(out["good"], RestoreResult) and isinstance(out["good2"], RestoreResult)
    with pytest.raises(ImageReadError):
        restorer.restore(np.zeros((8, 8, 3), np.float32))


def test_as_rgb_uint8_accepts_gray_and_alpha() -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert as_rgb_uint8(gray).shape == (3, 4, 3) and np.array_equal(as_rgb_uint8(gray)[..., 2], gray)
    rgba = np.zeros((3, 4, 4), np.uint8)
    assert as_rgb_uint8(rgba).shape == (3, 4, 3)
    with pytest.raises(ImageReadError, match="shape"):
        as_rgb_uint8(np.zeros((3, 4, 5), np.uint8))


def test_reduced_precision_runs_close_to_fp32() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.Tanh())
    crops = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3)).astype(np.uint8)
    ref = Restorer(net, face_size=16).restore_faces(crops).astype(int)
    for precision in ("bf16", "fp16"):
        low = Restorer(net, face_size=16, precision=precision).restore_faces(crops).astype(int)
        assert np.abs(low - ref).max() <= 6, precision
    with pytest.raises(ConfigError, match="precision"):
        Restorer(net, precision="int8")


def test_network_with_wrong_output_is_reported() -> None:
    class Shrink(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[..., :-1]

    with pytest.raises(ConfigError, match="must return a tensor shaped"):
        Restorer(Shrink(), face_size=8).restore_faces(np.zeros((1, 8, 8, 3), np.uint8))


def test_device_selection() -> None:
    assert select_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert select_device("auto").type == expected
    with pytest.raises(ConfigError, match="device"):
        select_device("tpu:7")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            select_device("cuda")


def test_restore_reads_paths_and_reports_bad_files(tmp_path: Path) -> None:
    from PIL import Image

    good = tmp_path / "face.png"
    Image.fromarray(_photo(100)).save(good)
    bad = tmp_path / "bad.png"
    bad.write_text("no pixels here")
    restorer = Restorer(Negate(), face_size=32, detector=FixedFaces({100: 1}))
    assert len(restorer.restore(good).faces) == 1
    out = dict(restorer.restore_many([("bad", bad), ("good", str(good))], return_exceptions=True))
    assert isinstance(out["bad"], ImageReadError) and "not an image" in str(out["bad"])
    assert isinstance(out["good"], RestoreResult)


def test_a_failing_network_batch_fails_only_its_photos() -> None:
    class FailOnSecondCall(Negate):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if len(self.batches) == 1:
                self.batches.append(-1)
                raise RuntimeError("out of memory")
            return super().forward(x)

    restorer = Restorer(FailOnSecondCall(), face_size=32, batch_size=2, detector=FixedFaces({100: 2}))
    photos = [(k, _photo(100, i)) for i, k in enumerate("abc")]
    out = dict(restorer.restore_many(photos, return_exceptions=True))
    assert isinstance(out["a"], RestoreResult)
    assert isinstance(out["b"], RuntimeError) and "out of memory" in str(out["b"])
    assert isinstance(out["c"], RestoreResult)
    with pytest.raises(RuntimeError):
        list(Restorer(FailOnSecondCall(), face_size=32, batch_size=2, detector=FixedFaces({100: 2}))
             .restore_many(photos))
