"""Exact mid-epoch resume of the data stream: StatefulDataLoader state -> the same remaining batches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from daefr.data import FaceDataModule
from daefr.data.shards import ShardOptions, write_shards
from data_helpers import make_image_folder


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("resume")
    make_image_folder(root / "src", n_good=22, bad=False)
    write_shards(root / "src", root / "shards", ShardOptions(maxcount=3))
    # a corrupt shard in the set: its count must survive the resume too
    (root / "shards" / "broken.tar").write_bytes(b"")
    return root


def _module(shards: Path, workers: int, **kwargs: Any) -> FaceDataModule:
    spec = f"{shards / 'shards' / 'shard-{000000..000007}.tar'}::{shards / 'shards' / 'broken.tar'}"
    dm = FaceDataModule(train=spec, image_size=16, batch_size=2, num_workers=workers, shuffle_buffer=5, flip=True,
                        seed=3, max_corrupt_fraction=0.5, **kwargs)
    dm.setup("fit")
    return dm


def _batches(iterator: Any, n: int | None = None) -> list[tuple[list[str], torch.Tensor, list[int]]]:
    out = []
    for i, batch in enumerate(iterator):
        out.append((batch["key"], batch["hq"], batch["data_stats"].tolist()))
        if n is not None and i + 1 == n:
            break
    return out


@pytest.mark.parametrize(("workers", "mode"), [(0, "finite"), (2, "finite"), (2, "resampled")])
def test_loader_state_resumes_the_exact_remaining_batches(shards: Path, workers: int, mode: str) -> None:
    extra = {"resampled": True, "epoch_length": 9} if mode == "resampled" else {}
    full = _batches(_module(shards, workers, **extra).train_dataloader())
    assert len(full) >= 8
    for cut in (1, len(full) // 2 + 1, len(full) - 1):
        loader = _module(shards, workers, **extra).train_dataloader()
        iterator = iter(loader)
        head = _batches(iterator, cut)
        state = loader.state_dict()
        del iterator
        fresh = _module(shards, workers, **extra).train_dataloader()
        fresh.load_state_dict(state)
        tail = _batches(fresh)
        got = head + tail
        assert [k for k, _, _ in got] == [k for k, _, _ in full], f"cut at {cut}"
        assert all(torch.equal(a, b) for (_, a, _), (_, b, _) in zip(got, full))  # same flips, same pixels
        assert [s for _, _, s in got] == [s for _, _, s in full]  # corrupt counters carried over
    assert any(s[3] for _, _, s in full) or mode == "resampled"  # the broken shard was counted


def test_state_of_a_finished_epoch_starts_the_next_afresh(shards: Path) -> None:
    loader = _module(shards, 0).train_dataloader()
    keys = [b["key"] for b in loader]
    assert loader.state_dict() == {}
    fresh = _module(shards, 0).train_dataloader()
    fresh.load_state_dict({})
    assert [b["key"] for b in fresh] == keys


def test_saved_position_of_another_layout_is_not_applied(shards: Path, caplog: pytest.LogCaptureFixture) -> None:
    dataset = _module(shards, 0).datasets["train"]
    dataset.load_state_dict({"layout": [5, 0, 1, 1], "used": 7, "batches": 3, "tried": 7, "corrupt": 0})
    assert dataset._resume is None and "starts from its beginning" in caplog.text
