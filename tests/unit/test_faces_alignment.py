"""Alignment maths: similarity estimation, template, inverse, upscale composition, warp round trip."""

from __future__ import annotations

import numpy as np
import pytest

from daefr.inference.alignment import (
    FFHQ_TEMPLATE_512,
    align_face,
    alignment_affine,
    apply_affine,
    compose_upscale,
    estimate_similarity,
    face_template,
    invert_affine,
    warp_face,
)

cv2 = pytest.importorskip("cv2")


def _similarity(angle: float, scale: float, tx: float, ty: float) -> np.ndarray:
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    return np.array([[c, -s, tx], [s, c, ty]])


def test_estimate_similarity_recovers_a_known_transform() -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, size=(5, 2))
    truth = _similarity(0.3, 2.5, 40.0, -12.0)
    est = estimate_similarity(src, apply_affine(truth, src))
    np.testing.assert_allclose(est, truth, atol=1e-9)


def test_estimate_similarity_never_reflects() -> None:
    src = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [7.0, 3.0]])
    mirrored = src * np.array([-1.0, 1.0])
    est = estimate_similarity(src, mirrored)
    assert np.linalg.det(est[:, :2]) > 0  # rotation + scale only


def test_estimate_similarity_rejects_degenerate_points() -> None:
    with pytest.raises(ValueError, match="coincide"):
        estimate_similarity(np.ones((5, 2)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="point sets"):
        estimate_similarity(np.ones((5, 2)), np.zeros((4, 2)))


def test_template_scales_with_face_size() -> None:
    np.testing.assert_allclose(face_template(512), FFHQ_TEMPLATE_512)
    small = face_template(64)
    # the eye distance shrinks by 8x and the template stays centred the same way
    np.testing.assert_allclose(np.diff(small[:2, 0]), np.diff(FFHQ_TEMPLATE_512[:2, 0]) / 8)
    assert np.all((small > 0) & (small < 64))
    np.testing.assert_allclose(apply_affine(alignment_affine(FFHQ_TEMPLATE_512, 512), FFHQ_TEMPLATE_512),
                               FFHQ_TEMPLATE_512, atol=1e-9)


def test_invert_affine_round_trip() -> None:
    affine = _similarity(-0.7, 0.4, 3.0, 99.0)
    pts = np.random.default_rng(1).uniform(-50, 50, size=(10, 2))
    np.testing.assert_allclose(apply_affine(invert_affine(affine), apply_affine(affine, pts)), pts, atol=1e-9)


def test_compose_upscale_matches_cv2_resize_pixel_grid() -> None:
    """A dot at photo pixel p sits at 2p + 0.5 after a 2x cv2.resize; composing must agree."""
    affine = _similarity(0.2, 1.7, 5.0, 8.0)
    photo_xy = np.array([[10.0, 20.0]])
    up_xy = (photo_xy + 0.5) * 2 - 0.5
    np.testing.assert_allclose(apply_affine(compose_upscale(affine, 2), up_xy), apply_affine(affine, photo_xy))


def _blob_image(h: int, w: int, centre: tuple[float, float]) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    blob = np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (2 * 3.0**2))
    return np.repeat((blob * 255).round().astype(np.uint8)[..., None], 3, axis=2)


def _centroid(channel: np.ndarray) -> np.ndarray:
    weights = channel.astype(np.float64)
    weights = np.where(weights > weights.max() * 0.2, weights, 0.0)
    yy, xx = np.mgrid[0 : channel.shape[0], 0 : channel.shape[1]]
    return np.array([(xx * weights).sum(), (yy * weights).sum()]) / weights.sum()


def test_warp_and_inverse_warp_round_trip_within_one_pixel() -> None:
    """A dot warped into the crop lands where the affine says; warped back, it returns within 1 px."""
    centre = (70.3, 55.8)
    photo = _blob_image(120, 150, centre)
    points5 = FFHQ_TEMPLATE_512 / 512 * 60 + np.array([40.0, 30.0])  # a small face
    crop, affine = align_face(photo, points5, 128)
    assert crop.shape == (128, 128, 3)
    expected = apply_affine(affine, np.array([centre]))[0]
    assert np.linalg.norm(_centroid(crop[..., 0]) - expected) < 1.0
    back = cv2.warpAffine(crop, affine, (150, 120), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    assert np.linalg.norm(_centroid(back[..., 0]) - np.array(centre)) < 1.0


def test_warp_face_border_modes() -> None:
    photo = np.full((20, 20, 3), 200, np.uint8)
    shift = np.array([[1.0, 0.0, 30.0], [0.0, 1.0, 0.0]])  # crop mostly outside the photo
    assert warp_face(photo, shift, 64, border="constant")[:, :20].max() == 0
    assert warp_face(photo, shift, 64, border="reflect").min() == 200
    with pytest.raises(ValueError, match="border"):
        warp_face(photo, shift, 64, border="wrap")
