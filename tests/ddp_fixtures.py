"""Test fixtures imported by the DDP subprocesses (PYTHONPATH=tests): a tiny module and probe callbacks.

``TinyAutoencoder`` is a test fixture only (a two-convolution autoencoder with BatchNorm) so that the DDP
mechanics are tested even without a real stage; ``SaveRankWeights`` and ``DieOnRank`` work with any
LightningModule, including the real stages.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn


class TinyAutoencoder(LightningModule):
    """Test fixture: (B, 3, H, W) in [-1, 1] -> reconstruction; L1 loss, SGD."""

    def __init__(self, channels: int = 8, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
            nn.Conv2d(channels, 3, 3, padding=1), nn.Tanh(),
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = (self.net(batch["hq"]) - batch["hq"]).abs().mean()
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        loss = (self.net(batch["hq"]) - batch["hq"]).abs().mean()
        self.log("val/loss", loss, sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class SaveRankWeights(Callback):
    """Every rank writes its parameters at the start and end of fit, and its view of the world."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        torch.save(_parameters(pl_module), self.dirpath / f"initial-rank{trainer.global_rank}.pt")

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        rank = trainer.global_rank
        torch.save(_parameters(pl_module), self.dirpath / f"weights-rank{rank}.pt")
        info = {"rank": rank, "world_size": trainer.world_size, "global_step": trainer.global_step,
                "node_rank": trainer.node_rank, "num_nodes": trainer.num_nodes,
                "strategy": type(trainer.strategy).__name__, "pid": os.getpid(),
                "sync_batchnorm_layers": sum(isinstance(m, nn.SyncBatchNorm) for m in pl_module.modules()),
                "device": str(pl_module.device)}
        (self.dirpath / f"info-rank{rank}.json").write_text(json.dumps(info))


def _parameters(module: LightningModule) -> dict[str, torch.Tensor]:
    # parameters only: buffers such as BatchNorm running statistics are per rank unless synced
    return {name: p.detach().cpu().clone() for name, p in module.named_parameters()}


class DieOnRank(Callback):
    """Kills the process of global rank ``rank`` at training batch ``batch_idx`` (simulates a crash)."""

    def __init__(self, rank: int = 1, batch_idx: int = 2) -> None:
        self.rank, self.batch_idx = rank, batch_idx

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if trainer.global_rank == self.rank and batch_idx == self.batch_idx:
            os._exit(17)


class KillJobAtStep(Callback):
    """SIGKILLs the whole job (this process group: every rank and data worker) at global step ``step``.

    Runs on rank 0 at the start of the batch, after the checkpoint of the previous step was written,
    like a node that is pre-empted without warning.
    """

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if trainer.global_rank == 0 and trainer.global_step == self.step:
            import signal

            os.killpg(os.getpgid(0), signal.SIGKILL)
