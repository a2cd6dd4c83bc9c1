"""A data module that serves one fixed tiny batch, for overfitting tests of the training stages.

``FixedBatchDataModule`` yields the same ``{"hq", "lq", "key"}`` batch ``steps`` times per epoch. HQ
images are smooth random colour fields (seeded); LQ images are a fixed degraded copy (box blur of a 2x
downsampled image plus seeded noise), so the batch is identical in every step and every run.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset


def smooth_faces(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) in [-1, 1]: low-frequency random images (seeded)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g) * 2 - 1
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)


def fixed_degrade(hq: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """A deterministic LQ version of ``hq`` (B, 3, H, W) in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    h, w = hq.shape[-2:]
    small = F.avg_pool2d(hq, 2)
    blurred = F.avg_pool2d(F.pad(small, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    up = F.interpolate(blurred, size=(h, w), mode="bilinear", align_corners=False)
    return (up + 0.05 * torch.randn(up.shape, generator=g)).clamp(-1, 1)


class _Repeat(Dataset):  # type: ignore[type-arg]
    def __init__(self, batch: dict[str, Any], steps: int) -> None:
        self.batch, self.steps = batch, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.batch


def _identity(items: list[dict[str, Any]]) -> dict[str, Any]:
    return items[0]


class FixedBatchDataModule(LightningDataModule):
    """Serves one fixed batch ``steps`` times per epoch (train) and once for validation, test and predict (LQ only).

    Args:
        image_size: side of the square images.
        batch_size: images in the batch.
        steps: batches per training epoch.
        seed: seed of the images.
    """

    def __init__(self, image_size: int = 32, batch_size: int = 4, steps: int = 1000, seed: int = 0) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.steps = steps
        hq = smooth_faces(batch_size, image_size, seed)
        self.batch = {"hq": hq, "lq": fixed_degrade(hq, seed + 1), "key": [f"fixed{i}" for i in range(batch_size)]}

    def train_dataloader(self) -> DataLoader:  # type: ignore[type-arg]
        """The fixed batch, ``steps`` times."""
        return DataLoader(_Repeat(self.batch, self.steps), batch_size=1, collate_fn=_identity)

    def val_dataloader(self) -> DataLoader:  # type: ignore[type-arg]
        """The fixed batch, once."""
        return DataLoader(_Repeat(self.batch, 1), batch_size=1, collate_fn=_identity)

    def test_dataloader(self) -> DataLoader:  # type: ignore[type-arg]
        """The fixed batch, once."""
        return DataLoader(_Repeat(self.batch, 1), batch_size=1, collate_fn=_identity)

    def predict_dataloader(self) -> DataLoader:  # type: ignore[type-arg]
        """The fixed batch's LQ images and keys, once."""
        lq_only = {"lq": self.batch["lq"], "key": self.batch["key"]}
        return DataLoader(_Repeat(lq_only, 1), batch_size=1, collate_fn=_identity)


class _Shuffled(Dataset):  # type: ignore[type-arg]
    def __init__(self, hq: torch.Tensor) -> None:
        self.hq = hq

    def __len__(self) -> int:
        return self.hq.shape[0]

    def __getitem__(self, index: int) -> dict[str, Any]:
        hq = self.hq[index]
        if torch.rand(()) < 0.5:  # random flip and noise from the global RNG (what ResumeState restores)
            hq = hq.flip(-1)
        lq = fixed_degrade(hq[None], seed=index)[0] + 0.05 * torch.randn(hq.shape)
        return {"hq": hq, "lq": lq.clamp(-1, 1), "key": f"img{index}"}


class ShuffledDataModule(LightningDataModule):
    """``n`` fixed images served in a shuffled order with random flips/noise drawn from the global RNG.

    A plain map-style ``DataLoader(shuffle=True)``: its order and augmentations depend only on the global
    RNG state, which makes it the reference case for exact resume with :class:`daefr.stages.ResumeState`.
    """

    def __init__(self, n: int = 8, image_size: int = 16, batch_size: int = 2, seed: int = 0) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.hq = smooth_faces(n, image_size, seed)

    def train_dataloader(self) -> DataLoader:  # type: ignore[type-arg]
        """The images in a shuffled order, with random flips and noise, in batches of ``batch_size``."""
        return DataLoader(_Shuffled(self.hq), batch_size=self.batch_size, shuffle=True, drop_last=True)
