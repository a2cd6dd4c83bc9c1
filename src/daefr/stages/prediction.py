"""``daefr predict``: write what a stage's ``predict_step`` restored as one PNG per input image."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from daefr.errors import ConfigError
from daefr.stages.reporting import to_unit, write_png


class RestoredImageWriter(BasePredictionWriter):
    """Callback writing ``prediction["restored"]`` (B, 3, H, W) in [-1, 1] as ``<output_dir>/<key>.png``.

    Args:
        output_dir: folder of the restored images; refused when it already holds files, unless ``overwrite``.
        overwrite: write into a non-empty folder (files of the same name are replaced).
    """

    def __init__(self, output_dir: str, overwrite: bool = False) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.overwrite = bool(overwrite)

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Create ``output_dir``; a non-empty one is refused unless ``overwrite``."""
        if self.output_dir.is_dir() and any(self.output_dir.iterdir()) and not self.overwrite:
            raise ConfigError(f"{self.output_dir} is not empty; choose an empty folder or set overwrite: true")
        self.output_dir.mkdir(parents=True, exist_ok=True)

    def write_on_batch_end(self, trainer: Trainer, pl_module: LightningModule, prediction: Any,
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int,
                           dataloader_idx: int) -> None:
        """Write each restored image of the batch as ``<output_dir>/<key>.png`` (``/`` in keys -> ``__``)."""
        restored = prediction["restored"]
        keys = prediction.get("key") or [f"{batch_idx:06d}_{i:03d}" for i in range(restored.shape[0])]
        pixels = (to_unit(restored).permute(0, 2, 3, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
        for key, image in zip(keys, pixels, strict=True):
            name = str(key).replace("/", "__").replace("\\", "__") or f"{batch_idx:06d}"
            write_png(self.output_dir / f"{name}.png", image)
