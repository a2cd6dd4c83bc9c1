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
from torch import Tensor, nn
from torchmetrics import Metric
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


class CodeUsage(Metric):
    """Code-index counts over an evaluation epoch (summed across processes): perplexity and codes in use.

    ``update(indices)`` takes int64 indices of any shape; ``compute()`` gives ``{"perplexity",
    "codes_in_use", "usage_fraction"}`` of the counts of every process (torchmetrics ``sum`` reduction).
    """

    full_state_update = False
    counts: Tensor

    def __init__(self, n_embed: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n_embed = int(n_embed)
        self.add_state("counts", default=torch.zeros(self.n_embed, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, indices: Tensor) -> None:
        """Add a batch of int64 indices (any shape)."""
        self.counts += torch.bincount(indices.detach().reshape(-1), minlength=self.n_embed).to(self.counts.device)

    def compute(self) -> dict[str, Tensor]:
        """Perplexity ``exp(-sum p log(p + 1e-10))``, codes in use and their fraction, as float64 scalars."""
        counts = self.counts.to(torch.float64)
        total = counts.sum()
        if float(total) == 0:
            zero = torch.zeros((), dtype=torch.float64, device=counts.device)
            return {"perplexity": zero, "codes_in_use": zero, "usage_fraction": zero}
        p = counts / total
        used = (counts > 0).sum().to(torch.float64)
        return {"perplexity": torch.exp(-(p * torch.log(p + 1e-10)).sum()), "codes_in_use": used,
                "usage_fraction": used / self.n_embed}


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
            write_png(path, array)
            written.append(str(path))
    return written


def write_png(path: Path, array: Any) -> None:
    """Write an (H, W, 3) uint8 array as a PNG, atomically (temporary file + rename)."""
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
