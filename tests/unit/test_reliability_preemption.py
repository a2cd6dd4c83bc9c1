"""Issue 15: pre-emption. The shipped cluster config installs PreemptionCheckpoint; once it is built,
SIGUSR1 never kills the process without a checkpoint (before fit starts, or after the last batch)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from daefr.cli import main
from daefr.config_files import load_composed
from daefr.stages.preemption import PreemptionCheckpoint

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def callback() -> Iterator[PreemptionCheckpoint]:
    previous = signal.getsignal(signal.SIGUSR1)
    made = PreemptionCheckpoint()
    yield made
    made._restore_handlers()
    signal.signal(signal.SIGUSR1, previous)


def test_sigusr1_before_fit_starts_only_sets_the_flag(callback: PreemptionCheckpoint) -> None:
    os.kill(os.getpid(), signal.SIGUSR1)  # with the default action this would end the test process
    assert callback._requested == signal.SIGUSR1


class _Tiny(LightningModule):
    """One linear layer; SIGUSR1 arrives at the end of the epoch, after the last training batch."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.layer(batch[0]).pow(2).mean()

    def on_train_epoch_end(self) -> None:
        os.kill(os.getpid(), signal.SIGUSR1)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_signal_after_the_last_batch_is_saved_at_train_end(callback: PreemptionCheckpoint, tmp_path: Path) -> None:
    data = DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=2)
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=0, save_last=False)
    trainer = Trainer(max_steps=2, limit_val_batches=0, callbacks=[saver, callback], logger=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(_Tiny(), data)
    assert callback.saved_path == tmp_path / "ckpt" / "last.ckpt" and callback.saved_path.is_file()
    assert torch.load(callback.saved_path, weights_only=True)["global_step"] == 2


def test_cluster_config_appends_the_preemption_callback(capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    code = main(["fit", "--config", str(REPO / "configs" / "tiny" / "hq_codebook.yaml"),
                 "--config", str(REPO / "configs" / "cluster" / "ddp_gpu.yaml"), "--print_config"])
    assert code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    paths = [c["class_path"] for c in config["trainer"]["callbacks"]]
    stage = load_composed(REPO / "configs" / "tiny" / "hq_codebook.yaml")  # the stage over configs/tiny/base.yaml
    assert paths[-1] == "daefr.stages.preemption.PreemptionCheckpoint"
    assert paths[:-1] == [c["class_path"] for c in stage["trainer"]["callbacks"]]  # the stage's kept
