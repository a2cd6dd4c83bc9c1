"""Kornia backends of the degradation steps, and the rule that picks a blur backend.

- blur ``"kornia"``: ``kornia.filters.filter2d`` (direct per-sample correlation, ``reflect`` border,
  which is OpenCV's BORDER_REFLECT_101). Its cost grows with the kernel area, the FFT blur's does not;
- JPEG ``"kornia"``: ``kornia.enhance.jpeg_codec_differentiable`` (differentiable, per-sample quality,
  kornia's own table scaling, rounding and chroma resampling, so it is further from libjpeg than the
  default ``"libjpeg"`` codec, see ``tests/unit/test_degradation_backends.py`` for the measured bound).

``"auto"`` blur picks, per size group, the backend measured faster for the group's kernel size
(:data:`KORNIA_BLUR_MAX_KERNEL`, measured with ``benchmarks/degradation.py --blur-sweep``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from daefr.data.degradation.ops import replicate_outside

BLUR_BACKENDS: tuple[str, ...] = ("auto", "fft", "kornia")
"""Blur backends: ``fft`` (default on every device through ``auto``), ``kornia`` (spatial filter2d)."""

JPEG_BACKENDS: tuple[str, ...] = ("libjpeg", "kornia")
"""JPEG backends: ``libjpeg`` (batched, libjpeg-matching, default) and ``kornia`` (differentiable)."""

KORNIA_BLUR_MAX_KERNEL = 15
"""Largest kernel size for which ``auto`` takes the kornia blur.

Measured with ``benchmarks/degradation.py --blur-sweep`` on the shared 2-core CPU of
benchmarks/RESULTS.md (blur + downscale of 512x512 faces, batch 4, scales 1 and 4): filter2d is
faster up to 15x15 kernels at both scales (e.g. 23 vs 41 ms/img at 3x3, scale 1), the FFT from 21x21
on (17x17 and 19x19 depend on the scale), and filter2d is ~15x slower at the presets' 41x41. No GPU
was available to measure the crossover there; ``auto`` uses the same rule on every device.
"""


def check_backend(name: str, choices: tuple[str, ...], what: str) -> str:
    """``name`` if it is one of ``choices``, else a ValueError naming the choices."""
    if name not in choices:
        raise ValueError(f"unknown {what} backend {name!r}; choose from {', '.join(choices)}")
    return name


def resolve_blur_backend(name: str, kernel_size: int) -> str:
    """The concrete blur backend (``fft`` or ``kornia``) for ``name`` and a ``kernel_size`` x ``kernel_size`` kernel."""
    if name == "auto":
        return "kornia" if kernel_size <= KORNIA_BLUR_MAX_KERNEL else "fft"
    return check_backend(name, BLUR_BACKENDS, "blur")


def kornia_blur(img: Tensor, kernels: Tensor) -> Tensor:
    """Correlate ``img`` ``(B, C, H, W)`` float32 with per-sample ``kernels`` ``(B, K, K)``, reflect-101 border."""
    from kornia.filters import filter2d

    k = kernels.shape[-1]
    if k // 2 >= min(img.shape[-2:]):
        raise ValueError(f"image {tuple(img.shape[-2:])} is too small for a {k}x{k} kernel")
    return filter2d(img.to(torch.float32), kernels.to(device=img.device, dtype=torch.float32),
                    border_type="reflect", behaviour="corr")


def kornia_jpeg(img: Tensor, quality: Tensor, height: Tensor, width: Tensor) -> Tensor:
    """Kornia's differentiable JPEG of ``(B, 3, H, W)`` in [0, 1] with per-sample ``quality`` ``(B,)``.

    Each sample's valid top-left ``(height, width)`` is edge-replicated to the whole canvas first (as
    libjpeg pads to whole blocks), so padding never leaks into a sample. Output float32 in [0, 1],
    not on 8-bit levels (the pipeline rounds once at the end).
    """
    from kornia.enhance import jpeg_codec_differentiable

    x = replicate_outside(img.to(torch.float32), height, width)
    q = quality.to(device=img.device, dtype=torch.float32).clamp(1.0, 100.0)
    return jpeg_codec_differentiable(x, q).clamp(0.0, 1.0)
