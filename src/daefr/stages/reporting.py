"""Validation metrics, codebook-usage tracking and image panels for the stages' loggers.

Panels are logged to every attached logger: W&B (``log_image``), TensorBoard (``add_image``) and, for
any other logger with a ``log_dir`` (e.g. CSV), as PNG files in ``<log_dir>/images/``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule
from torch import nn
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> float32 in [0, 1] (clamped)."""
    return ((x.detach().float() + 1.0) / 2.0).clamp(0.0, 1.0)


class ImageQuality(nn.Module):
    """PSNR/SSIM (torchmetrics, data range 1) between predictions and targets given in [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.psnr = PeakSignalNoiseRatio(data_range=1.0)
        self.ssim = StructuralSimilarityIndexMeasure(data_range=1.0)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Accumulate one batch; tensors (B, 3, H, W) in [-1, 1]."""
        p, t = to_unit(pred), to_unit(target)
        if p.shape[-2:] != t.shape[-2:]:
            p = torch.nn.functional.interpolate(p, size=t.shape[-2:], mode="bilinear", align_corners=False)
        self.psnr.update(p, t)
        self.ssim.update(p, t)

    def compute(self) -> dict[str, torch.Tensor]:
        """``{"psnr": ..., "ssim": ...}`` over everything accumulated since the last reset."""
        ssim = self.ssim.compute()
        return {"psnr": self.psnr.compute(), "ssim": ssim[0] if isinstance(ssim, tuple) else ssim}

    def reset(self) -> None:
        """Forget the accumulated batches."""
        self.psnr.reset()
        self.ssim.reset()


class CodeUsage:
    """Counts code indices over a validation epoch: perplexity and number of codes in use."""

    def __init__(self, n_embed: int) -> None:
        self.n_embed = int(n_embed)
        self.counts = torch.zeros(self.n_embed, dtype=torch.float64)

    def update(self, indices: torch.Tensor) -> None:
        """Add a batch of int64 indices (any shape)."""
        self.counts += torch.bincount(indices.detach().reshape(-1).cpu(), minlength=self.n_embed).double()

    def compute(self) -> dict[str, float]:
        """``{"perplexity", "codes_in_use", "usage_fraction"}`` of the accumulated counts."""
        total = float(self.counts.sum())
        if total == 0:
            return {"perplexity": 0.0, "codes_in_use": 0.0, "usage_fraction": 0.0}
        p = self.counts / total
        perplexity = float(torch.exp(-(p * torch.log(p + 1e-10)).sum()))
        used = float((self.counts > 0).sum())
        return {"perplexity": perplexity, "codes_in_use": used, "usage_fraction": used / self.n_embed}

    def reset(self) -> None:
        """Forget the counts."""
        self.counts.zero_()


def make_panel(columns: Sequence[torch.Tensor], max_rows: int) -> torch.Tensor:
    """Grid (3, rows*H, cols*W) in [0, 1]: one row per sample, one column per image kind ([-1, 1] inputs)."""
    rows = []
    size = columns[0].shape[-2:]
    for i in range(min(max_rows, columns[0].shape[0])):
        cells = []
        for col in columns:
            img = to_unit(col[i : i + 1])
            if img.shape[-2:] != size:
                img = torch.nn.functional.interpolate(img, size=size, mode="nearest")
            cells.append(img[0].cpu())
        rows.append(torch.cat(cells, dim=2))
    return torch.cat(rows, dim=1)


def log_panel(module: LightningModule, key: str, panel: torch.Tensor, caption: str) -> list[str]:
    """Send a (3, H, W) [0, 1] panel to every logger of the trainer; returns the PNG paths written."""
    written: list[str] = []
    trainer = module._trainer
    if trainer is None:
        return written
    step = int(trainer.global_step)
    array = (panel.permute(1, 2, 0).numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
    for logger in trainer.loggers:
        kind = type(logger).__name__
        if kind == "WandbLogger":
            logger.log_image(key=key, images=[array], caption=[caption], step=step)  # type: ignore[attr-defined]
        elif kind == "TensorBoardLogger":
            logger.experiment.add_image(key, panel, step)  # type: ignore[attr-defined]
        elif getattr(logger, "log_dir", None):
            folder = Path(str(logger.log_dir)) / "images"
            path = folder / f"{key.replace('/', '_')}_step{step:07d}.png"
            _write_png(path, array)
            written.append(str(path))
    return written


def _write_png(path: Path, array: Any) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".png.tmp")
    os.close(fd)
    try:
        Image.fromarray(array).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
