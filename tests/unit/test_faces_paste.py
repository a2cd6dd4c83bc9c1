"""Paste-back: feathered mask, exact copy outside the face, residual identity, upsamplers."""

from __future__ import annotations

import numpy as np
import pytest

from daefr.errors import ConfigError
from daefr.inference.alignment import align_face, face_template
from daefr.inference.paste import (
    BicubicUpsampler,
    LanczosUpsampler,
    PastedFace,
    draw_boxes,
    feather_mask,
    paste_faces,
    paste_mask,
    side_by_side,
)
from daefr.registry import REGISTRY

pytest.importorskip("cv2")


@pytest.fixture()
def photo() -> np.ndarray:
    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, size=(12, 16, 3)).astype(np.uint8)
    import cv2

    return cv2.resize(base, (160, 120), interpolation=cv2.INTER_CUBIC)  # smooth-ish, with texture


def _face(photo: np.ndarray, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    points5 = face_template(512) / 512 * 50 + np.array([50.0, 30.0])
    return align_face(photo, points5, size)


def test_feather_mask_shape_and_ramp() -> None:
    mask = feather_mask(64, 0.1)
    assert mask.shape == (64, 64) and mask.dtype == np.float32
    assert mask[32, 32] == 1.0 and mask[0, 0] < 0.05 and mask[0, 32] < 0.05
    assert np.all(np.diff(mask[32, :32]) >= 0)  # rises monotonically towards the centre
    np.testing.assert_allclose(mask, mask.T)
    with pytest.raises(ConfigError):
        feather_mask(64, 0.0)


def test_direct_paste_copies_outside_and_blends_inside(photo: np.ndarray) -> None:
    crop, affine = _face(photo)
    white = np.full_like(crop, 255)
    out = paste_faces(photo, [PastedFace(white, affine)])
    mask = paste_mask(affine, 64, photo.shape[:2])
    assert np.array_equal(out[mask == 0], photo[mask == 0])  # untouched outside the face region
    assert (mask == 0).sum() > 0.3 * mask.size and (mask >= 0.999).sum() > 500
    assert np.all(out[mask >= 0.999] == 255)  # fully replaced in the middle
    soft = (mask > 0.2) & (mask < 0.8)
    expected = photo[soft].astype(np.float32) * (1 - mask[soft, None]) + 255 * mask[soft, None]
    assert np.abs(out[soft] - expected).max() <= 1.0  # blended by the mask in the feather


def test_residual_paste_of_identity_reproduces_the_photo(photo: np.ndarray) -> None:
    crop, affine = _face(photo)
    out = paste_faces(photo, [PastedFace(crop, affine, crop)], mode="residual")
    assert np.array_equal(out, photo)
    brighter = np.clip(crop.astype(int) + 40, 0, 255).astype(np.uint8)
    changed = paste_faces(photo, [PastedFace(brighter, affine, crop)], mode="residual")
    mask = paste_mask(affine, 64, photo.shape[:2])
    assert changed[mask >= 0.999].astype(int).mean() > photo[mask >= 0.999].astype(int).mean() + 20
    with pytest.raises(ConfigError, match="cropped"):
        paste_faces(photo, [PastedFace(crop, affine)], mode="residual")


def test_direct_identity_differs_only_by_resampling(photo: np.ndarray) -> None:
    crop, affine = _face(photo, 128)
    out = paste_faces(photo, [PastedFace(crop, affine)])
    diff = np.abs(out.astype(int) - photo.astype(int))
    assert diff.mean() < 1.5  # bilinear there and back: a slight blur, no shift


def test_paste_with_upscale(photo: np.ndarray) -> None:
    crop, affine = _face(photo)
    canvas = BicubicUpsampler()(photo, 2)
    assert canvas.shape == (240, 320, 3)
    out = paste_faces(canvas, [PastedFace(crop, affine, crop)], upscale=2, mode="residual")
    mask = paste_mask(affine, 64, canvas.shape[:2], upscale=2)
    assert np.array_equal(out[mask == 0], canvas[mask == 0])
    # crop-resolution content warped onto the 2x grid differs from the bicubic canvas only slightly
    assert np.abs(out.astype(int) - canvas.astype(int)).mean() < 2.0
    # the mask covers the same photo area at 2x: its area grows 4x
    small = paste_mask(affine, 64, photo.shape[:2])
    assert mask.sum() == pytest.approx(4 * small.sum(), rel=0.02)


def test_upsamplers_are_registered_and_resize() -> None:
    image = np.random.default_rng(0).integers(0, 256, (10, 7, 3)).astype(np.uint8)
    for name, cls in (("bicubic", BicubicUpsampler), ("lanczos", LanczosUpsampler)):
        up = REGISTRY.build("upsamplers", name)
        assert isinstance(up, cls)
        assert up(image, 3).shape == (30, 21, 3)
        assert np.array_equal(up(image, 1), image)
    with pytest.raises(ConfigError):
        BicubicUpsampler()(image, 0)


def test_draw_boxes_and_side_by_side() -> None:
    image = np.zeros((50, 60, 3), np.uint8)
    boxed = draw_boxes(image, [np.array([10.0, 10.0, 20.0, 30.0])], scale=1.0)
    assert boxed[10, 15, 1] == 255 and boxed[20, 15, 1] == 0 and image.max() == 0
    both = side_by_side(image, np.ones((100, 90, 3), np.uint8))
    assert both.shape == (100, 120 + 90, 3)
