"""FaceDataModule / FaceDataset: round trip, distributed splits, resampling, corrupt samples, hooks."""

from __future__ import annotations

import io
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from daefr.data import FaceDataModule
from daefr.data.dataset import STATS_KEY, CorruptDataError, FaceDataset
from daefr.data.shards import ShardOptions, write_shards
from daefr.data.sources import FolderSource, ShardSource, resolve_source
from daefr.errors import ConfigError
from data_helpers import make_image_folder, make_paired_folder, to_pixels


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """(image folder with bad files, shard folder with 4-sample shards, expected pixels per key)."""
    root = tmp_path_factory.mktemp("data")
    expected = make_image_folder(root / "src", n_good=14)
    write_shards(root / "src", root / "shards", ShardOptions(maxcount=4))
    return root / "src", root / "shards", expected


def _keys(loader: Any) -> list[str]:
    return [k for batch in loader for k in batch["key"]]


def _loader(dataset: FaceDataset, workers: int = 0) -> DataLoader:  # type: ignore[type-arg]
    return DataLoader(dataset, batch_size=None, num_workers=workers)


@pytest.mark.parametrize("workers", [0, 2])
def test_round_trip_folder_to_shards_to_datamodule(corpus: Any, workers: int) -> None:
    _, shards, expected = corpus
    dm = FaceDataModule(val=str(shards), image_size=32, batch_size=3, num_workers=workers)
    dm.setup("validate")
    seen: dict[str, np.ndarray] = {}
    for batch in dm.val_dataloader():
        batch = dm.on_after_batch_transfer(batch, 0)
        assert STATS_KEY not in batch
        assert batch["hq"].dtype == torch.float32 and batch["hq"].shape[1:] == (3, 32, 32)
        assert batch["hq"].min() >= -1 and batch["hq"].max() <= 1
        for key, pixels in zip(batch["key"], to_pixels(batch["hq"])):
            assert key not in seen
            seen[key] = pixels
    assert sorted(seen) == sorted(expected)
    for key, pixels in seen.items():
        np.testing.assert_array_equal(pixels, expected[key])
    assert dm.corrupt_counts("val") == (len(expected), 0)


def test_plain_folder_source_skips_bad_files_with_counter(corpus: Any) -> None:
    src, _, expected = corpus
    dataset = FaceDataset(FolderSource(src), 4, 32, name="val", max_corrupt_fraction=0.5)
    batches = list(_loader(dataset))
    assert sorted(k for b in batches for k in b["key"]) == sorted(expected)
    assert batches[-1][STATS_KEY].tolist() == [1, 0, len(expected) + 4, 4]  # folder.jpg and loop.png are not files
    with pytest.raises(CorruptDataError, match=r"4 of 18 samples .* above max_corrupt_fraction=0.1"):
        list(_loader(FaceDataset(FolderSource(src), 4, 32, name="val", max_corrupt_fraction=0.1)))


@pytest.mark.parametrize("split", ["shard", "sample"])
def test_validation_sees_each_sample_once_across_two_ranks(corpus: Any, split: str) -> None:
    _, shards, expected = corpus
    per_rank = []
    for rank in range(2):
        dataset = FaceDataset(ShardSource(str(shards)), 2, 32, name="val", split=split)
        dataset.set_context(rank, 2, epoch=0, num_workers=2)
        keys = _keys(_loader(dataset, workers=2))
        assert len(keys) == sum(len(b["key"]) for b in _loader(dataset, 0)) or split == "shard"
        per_rank.append(keys)
    assert not set(per_rank[0]) & set(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == sorted(expected)
    if split == "sample":
        assert abs(len(per_rank[0]) - len(per_rank[1])) <= 1


def test_resampled_mode_runs_exactly_epoch_length_and_is_seeded(corpus: Any) -> None:
    _, shards, expected = corpus
    dm = FaceDataModule(train=str(shards), image_size=32, batch_size=3, num_workers=2, resampled=True,
                        epoch_length=5, shuffle_buffer=8)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert len(loader) == 5
    first = [b["key"] for b in loader]
    assert len(first) == 5 and all(len(k) == 3 for k in first)
    assert set(k for b in first for k in b) <= set(expected)
    again = [b["key"] for b in loader]  # no trainer: same epoch 0 -> same stream
    assert again == first
    dataset = dm.datasets["train"]
    dataset.set_context(0, 1, epoch=1, num_workers=2)
    assert [b["key"] for b in _loader(dataset, 2)] != first
    dataset.set_context(1, 2, epoch=0, num_workers=2)
    assert [b["key"] for b in _loader(dataset, 2)] != first


def test_finite_training_equalises_ranks_and_shuffles_per_epoch(corpus: Any) -> None:
    _, shards, expected = corpus
    dataset = FaceDataset(ShardSource(str(shards)), 2, 32, equalize=True, shuffle_buffer=4, flip=True)
    runs: dict[tuple[int, int], list[list[str]]] = {}
    for rank in range(2):
        for epoch in range(2):
            dataset.set_context(rank, 2, epoch, num_workers=1)
            batches = [b["key"] for b in _loader(dataset)]
            assert len(batches) == len(dataset)
            assert all(len(b) == 2 for b in batches)
            runs[(rank, epoch)] = batches
    assert len(runs[(0, 0)]) == len(runs[(1, 0)])
    assert not {k for b in runs[(0, 0)] for k in b} & {k for b in runs[(1, 0)] for k in b}
    assert runs[(0, 0)] != runs[(0, 1)]  # reshuffled each epoch
    assert Counter(k for b in runs[(0, 0)] for k in b).most_common(1)[0][1] == 1


def test_finite_training_too_small_for_the_ranks_is_a_config_error(corpus: Any) -> None:
    _, shards, _ = corpus
    dataset = FaceDataset(ShardSource(str(shards)), 4, 32, equalize=True, split="shard")
    dataset.set_context(0, 4, 0, num_workers=2)  # 4 shards over 8 (rank, worker) slots of 4 samples
    with pytest.raises(ConfigError, match="no full batch of 4 with 4 ranks x 2 workers"):
        len(dataset)


def _write_tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_corrupt_samples_in_shards_are_counted_and_abort_above_fraction(corpus: Any, tmp_path: Path) -> None:
    src, _, _ = corpus
    good = (src / "face000.png").read_bytes()
    members = {f"s{i:02d}.png": good for i in range(18)}
    members.update({"x01.png": b"garbage", "x02.png": good[:50]})
    _write_tar(tmp_path / "mixed.tar", members)
    whole = (tmp_path / "mixed.tar").read_bytes()
    (tmp_path / "truncated.tar").write_bytes(whole[: len(whole) // 2 + 700])

    dm = FaceDataModule(val=str(tmp_path / "mixed.tar"), image_size=32, batch_size=4, max_corrupt_fraction=0.2)
    dm.setup("validate")
    keys = []
    for batch in dm.val_dataloader():
        keys += dm.on_after_batch_transfer(batch, 0)["key"]
    assert len(keys) == 18 and dm.corrupt_counts("val") == (20, 2)

    strict = FaceDataset(ShardSource(str(tmp_path / "mixed.tar")), 4, 32, name="val", max_corrupt_fraction=0.05)
    with pytest.raises(CorruptDataError, match="2 of 20 samples"):
        list(_loader(strict))
    # a truncated shard is one corrupt event, the samples before the cut are kept
    broken = FaceDataset(ShardSource(str(tmp_path / "truncated.tar")), 4, 32, name="val", max_corrupt_fraction=1.0)
    batches = list(_loader(broken))
    assert 0 < sum(len(b["key"]) for b in batches) < 18
    broken.max_corrupt_fraction = 0.0
    with pytest.raises(CorruptDataError, match=r"1 of \d+ samples .*truncated.tar is unreadable or truncated"):
        list(_loader(broken))
    # a shard cut at a member boundary looks complete; the manifest count reveals it
    shard = corpus[1] / "shard-000000.tar"
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "manifest.json").write_text((corpus[1] / "manifest.json").read_text())
    (copy / "shard-000000.tar").write_bytes(shard.read_bytes()[: 2 * 1024 + 2 * 4096])
    short = FaceDataset(ShardSource(str(copy)), 4, 32, name="val")
    short.units = short.units[:1]
    with pytest.raises(CorruptDataError, match="manifest says 4"):
        list(_loader(short))
    # resampled data that is all corrupt aborts instead of looping forever
    bad_only = tmp_path / "bad.tar"
    _write_tar(bad_only, {f"b{i}.png": b"junk" for i in range(5)})
    looping = FaceDataset(ShardSource(str(bad_only)), 2, 32, resampled=True, epoch_length=3)
    with pytest.raises(CorruptDataError):
        list(_loader(looping))


def test_paired_folder_and_paired_shards_give_lq_and_hq(tmp_path: Path) -> None:
    pairs = make_paired_folder(tmp_path / "pairs", n=5)
    write_shards(tmp_path / "pairs", tmp_path / "pshards")
    for spec in (str(tmp_path / "pairs"), str(tmp_path / "pshards"), {"name": "paired_folder", "root": str(tmp_path / "pairs")}):
        dm = FaceDataModule(test=spec, image_size=32, eval_batch_size=2)
        dm.setup("test")
        seen = 0
        for batch in dm.test_dataloader():
            for key, lq, hq in zip(batch["key"], to_pixels(batch["lq"]), to_pixels(batch["hq"])):
                np.testing.assert_array_equal(lq, pairs[key][0])
                np.testing.assert_array_equal(hq, pairs[key][1])
                seen += 1
        assert seen == 5


def test_degradation_hook_adds_seeded_lq_on_device(corpus: Any) -> None:
    src, _, _ = corpus
    spec = {"class_path": "daefr.data.degradation.presets.daefr_small"}
    dm = FaceDataModule(val={"name": "folder", "root": str(src)}, image_size=32, eval_batch_size=4,
                        degradation=spec, max_corrupt_fraction=0.5)
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    out = dm.on_after_batch_transfer({k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()}, 0)
    assert out["lq"].shape == out["hq"].shape and out["lq"].dtype == torch.float32
    assert out["lq"].min() >= -1 and out["lq"].max() <= 1
    assert not torch.equal(out["lq"], out["hq"])
    again = dm.on_after_batch_transfer(dict(batch), 0)
    assert torch.equal(again["lq"], out["lq"])  # validation degradations are fixed per batch


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_degradation_hook_runs_on_the_gpu(corpus: Any) -> None:
    src, _, _ = corpus
    dm = FaceDataModule(val=str(src), image_size=32, eval_batch_size=4, max_corrupt_fraction=0.5,
                        degradation={"class_path": "daefr.data.degradation.presets.daefr_small"})
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    batch = {k: (v.cuda() if torch.is_tensor(v) else v) for k, v in batch.items()}
    out = dm.on_after_batch_transfer(dict(batch), 0)
    assert out["lq"].is_cuda and out["lq"].shape == out["hq"].shape
    again = dm.on_after_batch_transfer(dict(batch), 0)
    assert torch.equal(again["lq"], out["lq"])


def test_source_resolution_and_config_errors(corpus: Any, tmp_path: Path) -> None:
    src, shards, _ = corpus
    assert isinstance(resolve_source(str(src)), FolderSource)
    assert isinstance(resolve_source(str(shards)), ShardSource)
    pattern = resolve_source(str(shards / "shard-{000000..000001}.tar"))
    assert [u.name.rsplit("/", 1)[-1] for u in pattern.units()] == ["shard-000000.tar", "shard-000001.tar"]
    piped = resolve_source(f"pipe:cat {shards / 'shard-000000.tar'}")
    assert len(list(piped.read(piped.units()[0]))) == 4
    with pytest.raises(ConfigError, match="resampled=True needs epoch_length"):
        FaceDataModule(train=str(src), resampled=True)
    with pytest.raises(ConfigError, match="no images"):
        resolve_source(str(tmp_path))
    dm = FaceDataModule(val=str(src))
    with pytest.raises(ConfigError, match="fit needs a `train` source"):
        dm.setup("fit")


def test_fsspec_url_source(corpus: Any) -> None:
    import fsspec

    _, shards, _ = corpus
    fs = fsspec.filesystem("memory")
    fs.pipe("/daefr-test/shard.tar", (shards / "shard-000001.tar").read_bytes())
    source = resolve_source("memory://daefr-test/shard.tar")
    keys = [k for k, _ in source.read(source.units()[0])]
    assert len(keys) == 4
