"""Paste restored faces back into the photo with a feathered mask, background upsamplers, and drawing.

The mask is built in crop space (1 inside, a smooth ramp over the outer ``feather`` fraction of the
crop) and carried into the photo by the same inverse warp as the face, so it follows the face's
rotation and scale and is exactly 0 outside the crop: those pixels are copied unchanged.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from daefr.errors import ConfigError
from daefr.inference import optional
from daefr.inference.alignment import compose_upscale

PASTE_MODES = ("direct", "residual")


class BackgroundUpsampler(ABC):
    """Base class of ``upsamplers`` components: ``(H, W, 3) uint8 -> (round(H*s), round(W*s), 3) uint8``."""

    @abstractmethod
    def upsample(self, image: np.ndarray, scale: float) -> np.ndarray:
        """The image resized by ``scale``."""

    def __call__(self, image: np.ndarray, scale: float) -> np.ndarray:
        """Upsample ``image`` (H, W, 3) uint8 by ``scale`` (> 0; a copy when 1)."""
        if scale <= 0:
            raise ConfigError(f"upscale must be positive, got {scale}")
        if scale == 1:
            return image.copy()
        return self.upsample(image, scale)


def _output_size(shape: tuple[int, ...], scale: float) -> tuple[int, int]:
    return max(1, int(round(shape[1] * scale))), max(1, int(round(shape[0] * scale)))


class BicubicUpsampler(BackgroundUpsampler):
    """Plain bicubic interpolation (OpenCV)."""

    def upsample(self, image: np.ndarray, scale: float) -> np.ndarray:
        """(H, W, 3) uint8 -> (round(H*s), round(W*s), 3) uint8 by bicubic interpolation."""
        cv2 = optional.cv2()
        return cv2.resize(image, _output_size(image.shape, scale), interpolation=cv2.INTER_CUBIC)  # type: ignore[no-any-return]


class LanczosUpsampler(BackgroundUpsampler):
    """Plain Lanczos (8x8) interpolation (OpenCV); a little sharper than bicubic."""

    def upsample(self, image: np.ndarray, scale: float) -> np.ndarray:
        """(H, W, 3) uint8 -> (round(H*s), round(W*s), 3) uint8 by Lanczos interpolation."""
        cv2 = optional.cv2()
        return cv2.resize(image, _output_size(image.shape, scale), interpolation=cv2.INTER_LANCZOS4)  # type: ignore[no-any-return]


def feather_mask(size: int, feather: float = 0.1) -> np.ndarray:
    """(size, size) float32 crop-space mask: 1 in the middle, smoothstep to 0 over the outer ``feather``."""
    if not 0 < feather <= 0.5:
        raise ConfigError(f"feather must be in (0, 0.5], got {feather}")
    centres = np.arange(size, dtype=np.float64) + 0.5
    edge = np.minimum(centres, size - centres)  # distance of each pixel centre to the crop edge
    dist = np.minimum(edge[:, None], edge[None, :])
    t = np.clip(dist / (feather * size), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def _warp_back(crop: np.ndarray, affine: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Sample a crop at every output pixel through ``affine`` (output->crop); 0 outside the crop."""
    cv2 = optional.cv2()
    return cv2.warpAffine(  # type: ignore[no-any-return]
        crop, affine, (out_hw[1], out_hw[0]),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )


def paste_mask(
    affine: np.ndarray, crop_size: int, out_hw: tuple[int, int], upscale: float = 1.0, feather: float = 0.1
) -> np.ndarray:
    """(H, W) float32 soft mask in [0, 1] of one face in an output of size ``out_hw`` (upscaled photo)."""
    mask = _warp_back(feather_mask(crop_size, feather), compose_upscale(affine, upscale), out_hw)
    return np.clip(mask, 0.0, 1.0)


@dataclass
class PastedFace:
    """A restored face to paste back into the photo.

    A face to paste: ``restored`` (S, S, 3) uint8, the image->crop ``affine``, and for the residual
    mode the ``cropped`` (S, S, 3) uint8 input crop.
    """

    restored: np.ndarray
    affine: np.ndarray
    cropped: np.ndarray | None = None


def paste_faces(
    canvas: np.ndarray,
    faces: Sequence[PastedFace],
    upscale: float = 1.0,
    feather: float = 0.1,
    mode: str = "direct",
) -> np.ndarray:
    """Blend restored faces into ``canvas`` (the photo already resized by ``upscale``), (H, W, 3) uint8.

    ``mode="direct"`` pastes the restored face (the official pipeline's behaviour); ``"residual"`` adds
    the inverse-warped change ``restored - cropped`` to the photo, so only what the network changed is
    resampled (a restorer that returns its input leaves the photo exactly as it was).
    """
    if mode not in PASTE_MODES:
        raise ConfigError(f"paste mode must be one of {PASTE_MODES}, got {mode!r}")
    out = canvas.astype(np.float32)
    hw = (canvas.shape[0], canvas.shape[1])
    for face in faces:
        size = face.restored.shape[0]
        to_crop = compose_upscale(face.affine, upscale)
        mask = np.clip(_warp_back(feather_mask(size, feather), to_crop, hw), 0.0, 1.0)[..., None]
        if mode == "direct":
            content = _warp_back(face.restored.astype(np.float32), to_crop, hw)
            out = out * (1.0 - mask) + content * mask
        else:
            if face.cropped is None:
                raise ConfigError("residual paste needs the cropped input face of every restored face")
            delta = face.restored.astype(np.float32) - face.cropped.astype(np.float32)
            out = out + _warp_back(delta, to_crop, hw) * mask
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def draw_boxes(image: np.ndarray, boxes: Sequence[np.ndarray], scale: float = 1.0) -> np.ndarray:
    """A copy of ``image`` with each (x0, y0, x1, y1) box (in unscaled coordinates) drawn in green."""
    cv2 = optional.cv2()
    out = np.ascontiguousarray(image.copy())
    thickness = max(1, int(round(min(image.shape[:2]) / 300)))
    for box in boxes:
        x0, y0, x1, y1 = (int(round(v * scale)) for v in box)
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), (0, 255, 0), thickness)
    return out


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """``left`` resized (bicubic) to the height of ``right``, then both side by side, (H, W1 + W2, 3)."""
    cv2 = optional.cv2()
    if left.shape[0] != right.shape[0]:
        scale = right.shape[0] / left.shape[0]
        left = cv2.resize(left, _output_size(left.shape, scale), interpolation=cv2.INTER_CUBIC)
        left = left[: right.shape[0]]
    return np.concatenate([left, right], axis=1)
