"""Per-image CPU reference of the classic blind-face degradation (numpy + OpenCV), tests/benchmarks only.

Written from the published description of the official (BasicSR-style) pipeline: ``cv2.filter2D``
blur with a random mixed kernel, ``cv2.resize`` INTER_LINEAR down to ``int(w // scale)``, Gaussian
noise with clipping, ``cv2.imencode``/``imdecode`` JPEG of the 8-bit image, INTER_LINEAR back to the
original size, optional colour shift / gray, rounding to 8-bit levels. Images are float32 HWC RGB in
[0, 1]; OpenCV's JPEG codec gets BGR, as it expects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")


def ref_kernel(kernel_type: str, size: int, sigma_x: float, sigma_y: float, theta: float,
               beta: float = 1.0) -> np.ndarray:
    """One ``size x size`` float32 kernel summing to 1 (covariance ``R diag(sx^2, sy^2) R^T``)."""
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    cov = rot @ np.diag([sigma_x**2, sigma_y**2]) @ rot.T
    inv = np.linalg.inv(cov)
    ax = np.arange(-(size // 2), size // 2 + 1, dtype=np.float64)
    xx, yy = np.meshgrid(ax, ax)  # xx varies along columns
    xy = np.stack([xx, yy], axis=-1)
    q = np.einsum("hwi,ij,hwj->hw", xy, inv, xy)
    if kernel_type.startswith("generalized"):
        k = np.exp(-0.5 * q**beta)
    elif kernel_type.startswith("plateau"):
        k = 1.0 / (q**beta + 1.0)
    else:
        k = np.exp(-0.5 * q)
    return (k / k.sum()).astype(np.float32)


def ref_blur(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``cv2.filter2D`` with the default reflect-101 border."""
    return cv2.filter2D(img, -1, kernel)


def ref_lq_size(h: int, w: int, scale: float) -> tuple[int, int]:
    """``(int(h // scale), int(w // scale))``, at least 1."""
    return max(1, int(h // scale)), max(1, int(w // scale))


def ref_resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """``cv2.resize`` INTER_LINEAR to ``(height, width)``."""
    out = cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
    return out if out.ndim == 3 else out[:, :, None]


def ref_noise(img: np.ndarray, noise: np.ndarray, sigma: float) -> np.ndarray:
    """``clip(img + sigma * noise, 0, 1)``; ``sigma`` in [0, 1] units, ``noise`` standard normal HWC."""
    return np.clip(img + sigma * noise, 0.0, 1.0).astype(np.float32)


def ref_jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """OpenCV JPEG round trip of an RGB float image, converted to 8 bits as OpenCV would."""
    bgr = np.ascontiguousarray(np.clip(img, 0.0, 1.0)[:, :, ::-1]) * 255.0
    # what cv2.imencode does to a float image itself (convertTo: round half to even, saturate)
    bgr8 = np.clip(np.rint(bgr), 0, 255).astype(np.uint8)
    ok, enc = cv2.imencode(".jpg", bgr8, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    assert ok
    return (cv2.imdecode(enc, cv2.IMREAD_COLOR)[:, :, ::-1].astype(np.float32) / 255.0).copy()


def ref_quantize(img: np.ndarray) -> np.ndarray:
    """Round to 8-bit levels after clipping."""
    return (np.clip((img * 255.0).round(), 0, 255) / 255.0).astype(np.float32)


@dataclass
class RefParams:
    """Parameters of one image's degradation."""

    kernel: np.ndarray
    scale: float
    noise_sigma: float  # 8-bit units
    quality: int | None  # None: no JPEG
    noise: np.ndarray | None = None  # standard normal at the LQ size; drawn from rng when None
    color_shift: np.ndarray | None = None  # (3,) in [0, 1] units
    gray: bool = False


def ref_degrade(img: np.ndarray, p: RefParams, rng: np.random.Generator | None = None) -> np.ndarray:
    """The full per-image chain on HWC RGB float32 in [0, 1]."""
    h, w = img.shape[:2]
    x = ref_blur(img, p.kernel)
    lh, lw = ref_lq_size(h, w, p.scale)
    x = ref_resize(x, lh, lw)
    noise = p.noise
    if noise is None:
        noise = (rng or np.random.default_rng()).standard_normal(x.shape).astype(np.float32)
    x = ref_noise(x, noise, p.noise_sigma / 255.0)
    if p.quality is not None:
        x = ref_jpeg(x, p.quality)
    x = ref_resize(x, h, w)
    if p.color_shift is not None:
        x = np.clip(x + p.color_shift[None, None, :], 0.0, 1.0)
    if p.gray:
        x = np.repeat(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)[:, :, None], 3, axis=2)
    return ref_quantize(x)


def ref_random_params(rng: np.random.Generator, h: int, w: int, sigma=(0.1, 10.0), scale=(0.8, 8.0),
                      noise=(0.0, 20.0), jpeg=(60.0, 100.0), size: int = 41) -> RefParams:
    """Draw one image's parameters the way the official per-image dataset does (iso/aniso 50/50)."""
    theta = rng.uniform(-math.pi, math.pi)
    sx = rng.uniform(*sigma)
    if rng.uniform() < 0.5:
        kernel = ref_kernel("iso", size, sx, sx, 0.0)
    else:
        kernel = ref_kernel("aniso", size, sx, rng.uniform(*sigma), theta)
    return RefParams(kernel, float(rng.uniform(*scale)), float(rng.uniform(*noise)), int(rng.uniform(*jpeg)))


# ----- torchvision-style colour jitter (GFPGAN's color_jitter_pt), from torchvision's documented semantics -----
_TV_GRAY = np.array([0.2989, 0.587, 0.114], dtype=np.float32)  # torchvision's rgb_to_grayscale weights


def ref_adjust(img: np.ndarray, op: str, factor: float) -> np.ndarray:
    """One torchvision ``adjust_*`` on HWC RGB float32 in [0, 1]; hue ``factor`` in turns, via OpenCV's HSV."""
    gray = img @ _TV_GRAY
    if op == "brightness":
        out = factor * img
    elif op == "contrast":
        out = factor * img + (1.0 - factor) * float(gray.mean())
    elif op == "saturation":
        out = factor * img + (1.0 - factor) * gray[:, :, None]
    elif op == "hue":
        hsv = cv2.cvtColor(np.ascontiguousarray(img, dtype=np.float32), cv2.COLOR_RGB2HSV)
        hsv[:, :, 0] = np.mod(hsv[:, :, 0] + 360.0 * factor, 360.0)
        out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    else:
        raise ValueError(op)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def ref_color_jitter_pt(img: np.ndarray, order: list[str], factors: dict[str, float]) -> np.ndarray:
    """The four adjustments in ``order`` with ``factors`` (GFPGAN's ``color_jitter_pt``)."""
    for op in order:
        img = ref_adjust(img, op, factors[op])
    return img
