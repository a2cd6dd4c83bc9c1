"""Glue for data modules and stages: degrade a batch held in [-1, 1] (``on_after_batch_transfer``)."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import torch
from torch import Tensor, nn

from daefr.data.degradation.pipeline import DegradationOutput


def degrade_batch(
    degradation: nn.Module, hq: Tensor, generator: torch.Generator | None = None
) -> tuple[Tensor, dict[str, Tensor]]:
    """Degrade ``hq`` ``(B, 3, H, W)`` in [-1, 1]; returns ``(lq in [-1, 1], per-sample params)``.

    The HQ images are left alone; use :func:`apply_to_batch` for degradations with ``gt_gray``.
    """
    out: DegradationOutput = degradation((hq.detach() + 1.0) * 0.5, generator=generator)
    return out.lq * 2.0 - 1.0, out.params


def apply_to_batch(
    batch: MutableMapping[str, Any],
    degradation: nn.Module | None,
    generator: torch.Generator | None = None,
) -> MutableMapping[str, Any]:
    """Set ``batch["lq"]`` (and ``batch["degradation_params"]``) from ``batch["hq"]`` in [-1, 1].

    A degradation that changes the HQ images too (``gt_gray=True``: its output has ``hq``) also
    replaces ``batch["hq"]``. With ``degradation=None`` the batch must already hold precomputed
    ``"lq"`` images and is returned unchanged (test sets with real or stored LQ images).
    """
    if degradation is None:
        if "lq" not in batch:
            raise KeyError("degradation is off but the batch has no precomputed 'lq' images; "
                           "enable a degradation or provide LQ images")
        return batch
    if "hq" not in batch:
        raise KeyError(f"cannot degrade: the batch has no 'hq' images (keys: {sorted(batch)})")
    hq = batch["hq"]
    out: DegradationOutput = degradation((hq.detach() + 1.0) * 0.5, generator=generator)
    batch["lq"], batch["degradation_params"] = out.lq * 2.0 - 1.0, out.params
    gray_hq = getattr(out, "hq", None)
    if gray_hq is not None:
        batch["hq"] = gray_hq * 2.0 - 1.0
    return batch
