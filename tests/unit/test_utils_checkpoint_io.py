"""AtomicCheckpointIO: write-then-rename saves, one-line CheckpointError on bad files, safe loading."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from daefr.errors import CheckpointError
from daefr.utils.checkpoint_io import AtomicCheckpointIO


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


def test_save_load_roundtrip_and_failed_save_keeps_old(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "ckpts" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 2}, path)
    loaded = io.load_checkpoint(path)
    assert loaded["epoch"] == 2 and torch.equal(loaded["state_dict"]["w"], torch.ones(3))

    class Unpicklable:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "bad": Unpicklable()}, path)
    assert io.load_checkpoint(path)["epoch"] == 2  # the previous checkpoint is intact
    assert _leftovers(path.parent) == []
    with pytest.raises(TypeError, match="storage_options"):
        io.save_checkpoint({}, path, storage_options={"x": 1})


@pytest.mark.parametrize("kind", ["truncated", "zero", "garbage", "missing", "directory", "not_dict"])
def test_bad_checkpoint_gives_one_line_error(tmp_path: Path, kind: str) -> None:
    io = AtomicCheckpointIO()
    good = tmp_path / "good.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.randn(32, 32)}}, good)
    path = tmp_path / f"{kind}.ckpt"
    if kind == "truncated":
        path.write_bytes(good.read_bytes()[:-100])
    elif kind == "zero":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(os.urandom(2048))
    elif kind == "directory":
        path.mkdir()
    elif kind == "not_dict":
        torch.save([1, 2], path)
    with pytest.raises(CheckpointError) as info:
        io.load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    assert info.value.__cause__ is None


def test_malicious_checkpoint_refused(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, (f"touch '{marker}'",))

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "x": Evil()}, path)
    with pytest.raises(CheckpointError, match="refused") as info:
        AtomicCheckpointIO().load_checkpoint(path)
    assert "system" in str(info.value)
    assert not marker.exists()


def test_trainer_saves_through_plugin_and_resume_from_corrupt_fails_clearly(tmp_path: Path) -> None:
    import lightning.pytorch as pl
    from lightning.pytorch.demos.boring_classes import BoringModel

    class HModel(BoringModel):
        def __init__(self, lr: float = 0.1) -> None:
            super().__init__()
            self.save_hyperparameters()

    def trainer(steps: int) -> pl.Trainer:
        return pl.Trainer(
            default_root_dir=tmp_path, max_steps=steps, limit_val_batches=0, logger=False,
            enable_progress_bar=False, enable_model_summary=False, plugins=[AtomicCheckpointIO()],
            accelerator="cpu", devices=1,
        )

    torch.manual_seed(0)
    first = trainer(2)
    first.fit(HModel())
    ckpts = sorted((tmp_path / "checkpoints").glob("*.ckpt"))
    assert len(ckpts) == 1 and _leftovers(ckpts[0].parent) == []
    loaded = AtomicCheckpointIO().load_checkpoint(ckpts[0])  # weights-only load of our own checkpoint
    assert loaded["global_step"] == 2 and loaded["hyper_parameters"]["lr"] == 0.1
    # resume continues from it
    second = trainer(3)
    second.fit(HModel(), ckpt_path=ckpts[0])
    assert second.global_step == 3
    # a truncated checkpoint: one clear error naming the file
    bad = tmp_path / "cut.ckpt"
    bad.write_bytes(ckpts[0].read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cut.ckpt"):
        trainer(4).fit(HModel(), ckpt_path=bad)
