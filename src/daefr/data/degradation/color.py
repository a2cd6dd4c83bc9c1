"""Colour steps after resizing back: gray and GFPGAN's torchvision-style colour jitter.

Colour steps after resizing back, through ``kornia.enhance`` / ``kornia.color``: gray and GFPGAN's
torchvision-style colour jitter.

The torchvision-style jitter (GFPGAN's ``color_jitter_pt``) applies brightness, contrast, saturation
and hue in a random order per sample, each clipped to [0, 1], with torchvision's semantics:

- brightness ``f``: ``f * x`` (``kornia.enhance.adjust_brightness_accumulative``);
- contrast ``f``: blend with the mean of the image's gray level
  (``adjust_contrast_with_mean_subtraction``);
- saturation ``f``: blend with the gray image (``adjust_saturation_with_gray_subtraction``);
- hue ``h`` in turns (torchvision's ``[-0.5, 0.5]``): HSV hue rotation by ``2 pi h`` radians
  (``kornia.enhance.adjust_hue``).

(kornia's plain ``adjust_brightness`` is additive and ``adjust_saturation`` scales HSV saturation,
which is not what torchvision does, hence the variants above.)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

JITTER_OPS: tuple[str, ...] = ("brightness", "contrast", "saturation", "hue")
"""The four jitter operations; ``jitter_order[i]`` lists indices into this tuple in application order."""

JITTER_KEYS: tuple[str, ...] = ("jitter_pt", "jitter_order", *JITTER_OPS)
"""Per-sample parameters of the torchvision-style jitter."""


def to_gray(img: Tensor, mask: Tensor) -> Tensor:
    """Replace samples where ``mask`` ``(B,)`` is true by their luma (0.299 R + 0.587 G + 0.114 B) x 3."""
    from kornia.color import rgb_to_grayscale

    luma = rgb_to_grayscale(img).expand_as(img)
    return torch.where(mask.to(img.device)[:, None, None, None], luma, img)


def adjust(img: Tensor, op: int, factor: Tensor) -> Tensor:
    """Apply jitter operation ``JITTER_OPS[op]`` with per-sample ``factor`` ``(B,)`` to ``(B, 3, H, W)`` in [0, 1]."""
    from kornia import enhance

    f = factor.to(device=img.device, dtype=img.dtype)
    if op == 0:
        return enhance.adjust_brightness_accumulative(img, f)
    if op == 1:
        return enhance.adjust_contrast_with_mean_subtraction(img, f)
    if op == 2:
        return enhance.adjust_saturation_with_gray_subtraction(img, f)
    if op == 3:
        return enhance.adjust_hue(img, f * (2.0 * math.pi)).clamp(0.0, 1.0)
    raise ValueError(f"jitter operation index must be 0-3, got {op}")


def color_jitter_pt(img: Tensor, params: dict[str, Tensor]) -> Tensor:
    """GFPGAN's torchvision-style jitter of the samples with ``params["jitter_pt"]`` set, in their own order.

    ``img`` ``(B, 3, H, W)`` float32 in [0, 1]; CPU ``params`` as in :data:`JITTER_KEYS`. Samples doing
    the same operation at the same step run as one batch (at most 16 batched calls, none per image).
    """
    on = params["jitter_pt"].cpu()
    if not bool(on.any()):
        return img
    order = params["jitter_order"].cpu()
    out = img.clone()
    for step in range(len(JITTER_OPS)):
        for op, name in enumerate(JITTER_OPS):
            idx = torch.nonzero(on & (order[:, step] == op)).flatten()
            if idx.numel() == 0:
                continue
            sel = idx.to(img.device)
            part = adjust(out.index_select(0, sel), op, params[name].cpu()[idx])
            out.index_copy_(0, sel, part)
    return out
