"""Named degradation settings (the papers' published ranges) as factories returning :class:`Degradation`.

- ``daefr_small``: DAEFR codebook / association stages (GFPGAN-style ranges, kernel size 39 or 41);
- ``daefr_large``: DAEFR restoration stage (wider sigma, scale and JPEG ranges);
- ``codeformer``: CodeFormer stage 2/3 (sigma 1-15, scale 4-30, noise 0-20, JPEG 30-80, kernel 41);
- ``gfpgan``: GFPGAN v1 (``options/train_gfpgan_v1.yml``: sigma 0.1-10, scale 0.8-8, noise 0-20,
  JPEG 60-100, colour shift jitter 0.3 with shift 20, gray 0.01, and the torchvision-style jitter
  ``color_jitter_pt_prob`` 0.3 with GFPGAN's default factors: brightness 0.5-1.5, contrast 0.5-1.5,
  saturation 0-1.5, hue -0.1-0.1, LQ only; ``gt_gray`` is off as in that file, set it to gray the HQ
  image of the gray samples too).

Keyword arguments override any field, e.g. ``daefr_small(jpeg_range=(70, 100))``.
"""

from __future__ import annotations

from typing import Any

from daefr.data.degradation.pipeline import Degradation
from daefr.registry import check_kwargs

PRESETS: dict[str, dict[str, Any]] = {
    "daefr_small": dict(kernel_sizes=(39, 41), sigma_range=(0.1, 10.0), scale_range=(0.8, 8.0),
                        noise_range=(0.0, 20.0), jpeg_range=(60.0, 100.0)),
    "daefr_large": dict(kernel_sizes=(39, 41), sigma_range=(0.1, 15.0), scale_range=(0.8, 30.0),
                        noise_range=(0.0, 20.0), jpeg_range=(30.0, 100.0)),
    "codeformer": dict(kernel_sizes=(41,), sigma_range=(1.0, 15.0), scale_range=(4.0, 30.0),
                       noise_range=(0.0, 20.0), jpeg_range=(30.0, 80.0)),
    "gfpgan": dict(kernel_sizes=(41,), sigma_range=(0.1, 10.0), scale_range=(0.8, 8.0),
                   noise_range=(0.0, 20.0), jpeg_range=(60.0, 100.0), color_jitter_prob=0.3,
                   color_jitter_shift=20.0, gray_prob=0.01, color_jitter_pt_prob=0.3),
}
"""Preset name -> :class:`Degradation` keyword arguments (iso/aniso kernels 50/50 everywhere)."""


def preset(name: str, **overrides: Any) -> Degradation:
    """Build the preset ``name`` with ``overrides`` applied; unknown names raise ValueError."""
    if name not in PRESETS:
        raise ValueError(f"unknown degradation preset {name!r}; choose from {', '.join(PRESETS)}")
    check_kwargs(Degradation, overrides, f"degradations/{name}")
    return Degradation(**{**PRESETS[name], **overrides})


def daefr_small(**overrides: Any) -> Degradation:
    """DAEFR stage 1-2 degradation: sigma 0.1-10, scale 0.8-8, noise 0-20, JPEG 60-100."""
    return preset("daefr_small", **overrides)


def daefr_large(**overrides: Any) -> Degradation:
    """DAEFR stage 3 degradation: sigma 0.1-15, scale 0.8-30, noise 0-20, JPEG 30-100."""
    return preset("daefr_large", **overrides)


def codeformer(**overrides: Any) -> Degradation:
    """CodeFormer stage 2/3 degradation: sigma 1-15, scale 4-30, noise 0-20, JPEG 30-80."""
    return preset("codeformer", **overrides)


def gfpgan(**overrides: Any) -> Degradation:
    """GFPGAN v1 degradation: sigma 0.1-10, scale 0.8-8, noise 0-20, JPEG 60-100, jitters 0.3 + 0.3, gray 0.01."""
    return preset("gfpgan", **overrides)
