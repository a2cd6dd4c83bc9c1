"""Batched, device-agnostic blind-face degradation (blur, downscale, noise, JPEG, resize back)."""

from daefr.data.degradation.base import DegradationChain, DegradationOp
from daefr.data.degradation.batch import apply_to_batch, degrade_batch
from daefr.data.degradation.jpeg import jpeg_compress
from daefr.data.degradation.kernels import KERNEL_TYPES, mixed_kernels
from daefr.data.degradation.pipeline import PARAM_KEYS, Degradation, DegradationOutput, apply_degradation
from daefr.data.degradation.presets import PRESETS, codeformer, daefr_large, daefr_small, gfpgan, preset

__all__ = [
    "KERNEL_TYPES",
    "PARAM_KEYS",
    "PRESETS",
    "Degradation",
    "DegradationChain",
    "DegradationOp",
    "DegradationOutput",
    "apply_degradation",
    "apply_to_batch",
    "codeformer",
    "daefr_large",
    "daefr_small",
    "degrade_batch",
    "gfpgan",
    "jpeg_compress",
    "mixed_kernels",
    "preset",
]
