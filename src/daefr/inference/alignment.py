"""FFHQ-style face alignment: similarity transform from 5 landmarks to the 512x512 template, warp, inverse.

Coordinates are (x, y) in pixels with pixel centres at integers (OpenCV's convention). An affine
``M`` is a (2, 3) float64 array mapping image coordinates to crop coordinates: ``crop_xy = M @ [x, y, 1]``.
"""

from __future__ import annotations

import numpy as np

from daefr.inference import optional

TEMPLATE_SIZE = 512
# The 5-point FFHQ template for 512x512 crops (left eye, right eye, nose tip, left and right mouth
# corners, "left" meaning image-left), the standard used by the GFPGAN/CodeFormer/DAEFR pipelines.
FFHQ_TEMPLATE_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.1936],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    dtype=np.float64,
)


def face_template(size: int = TEMPLATE_SIZE) -> np.ndarray:
    """The FFHQ 5-point template scaled to a ``size`` x ``size`` crop, (5, 2) float64."""
    if size <= 0:
        raise ValueError(f"face size must be positive, got {size}")
    scale = size / TEMPLATE_SIZE
    # scale about pixel edges (not centres) so that the template covers the same area at any size
    return (FFHQ_TEMPLATE_512 + 0.5) * scale - 0.5


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) mapping src to dst.

    ``src`` and ``dst`` are (N, 2) point sets with N >= 2; returns the (2, 3) affine (Umeyama's method).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"need two (N, 2) point sets with N >= 2, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s_c, d_c = src - mu_s, dst - mu_d
    var_s = float((s_c**2).sum(axis=1).mean())
    if var_s <= 1e-12:
        raise ValueError("the source points coincide; a similarity transform is undefined")
    cov = d_c.T @ s_c / src.shape[0]
    u, sigma, vt = np.linalg.svd(cov)
    sign = np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0
    fix = np.diag([1.0, sign])
    rot = u @ fix @ vt
    scale = float((sigma * np.diag(fix)).sum()) / var_s
    shift = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, shift[:, None]])


def apply_affine(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (N, 2) points through a (2, 3) affine; returns (N, 2) float64."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return pts @ affine[:, :2].T + affine[:, 2]


def invert_affine(affine: np.ndarray) -> np.ndarray:
    """The inverse of a (2, 3) affine, as a (2, 3) affine."""
    full = np.vstack([np.asarray(affine, dtype=np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def compose_upscale(affine: np.ndarray, upscale: float) -> np.ndarray:
    """Affine from the pixels of an image resized by ``upscale`` to the crop of ``affine``.

    A resize by ``u`` maps output pixel ``p`` to source ``(p + 0.5) / u - 0.5`` (pixel-area alignment,
    as ``cv2.resize`` does); composing it keeps the paste-back aligned to the sub-pixel.
    """
    u = float(upscale)
    to_source = np.array([[1.0 / u, 0.0, 0.5 / u - 0.5], [0.0, 1.0 / u, 0.5 / u - 0.5], [0.0, 0.0, 1.0]])
    full = np.vstack([np.asarray(affine, dtype=np.float64), [0.0, 0.0, 1.0]])
    return (full @ to_source)[:2]


def alignment_affine(points5: np.ndarray, size: int = TEMPLATE_SIZE) -> np.ndarray:
    """The (2, 3) similarity taking a face's 5 landmarks (template order) onto the FFHQ template."""
    return estimate_similarity(np.asarray(points5, dtype=np.float64).reshape(5, 2), face_template(size))


def warp_face(image: np.ndarray, affine: np.ndarray, size: int, border: str = "reflect") -> np.ndarray:
    """Crop ``(size, size, C)`` from an (H, W, C) image through ``affine`` (bilinear).

    ``border``: ``"reflect"`` mirrors the photo where the crop leaves it (no hard edges for the network),
    ``"constant"`` fills with black.
    """
    cv2 = optional.cv2()
    modes = {"reflect": cv2.BORDER_REFLECT_101, "constant": cv2.BORDER_CONSTANT}
    if border not in modes:
        raise ValueError(f"border must be one of {sorted(modes)}, got {border!r}")
    return cv2.warpAffine(  # type: ignore[no-any-return]
        image, np.asarray(affine, dtype=np.float64), (int(size), int(size)),
        flags=cv2.INTER_LINEAR, borderMode=modes[border], borderValue=0,
    )


def align_face(
    image: np.ndarray, points5: np.ndarray, size: int = TEMPLATE_SIZE, border: str = "reflect"
) -> tuple[np.ndarray, np.ndarray]:
    """Aligned ``(size, size, 3)`` crop of one face and the (2, 3) image->crop affine."""
    affine = alignment_affine(points5, size)
    return warp_face(image, affine, size, border), affine
