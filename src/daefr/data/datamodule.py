"""``FaceDataModule``: shards or folders -> batches of faces, distributed-aware, LQ synthesised on device.

Usable from YAML as ``data: {class_path: daefr.data.FaceDataModule, init_args: {...}}``. Each of
``train`` / ``val`` / ``test`` is a source: a local path or brace pattern of shards, ``pipe:CMD``, an
fsspec URL, a folder written by ``daefr shard``, a plain image folder, a folder with ``lq/`` + ``gt/``,
or a ``datasets`` registry spec such as ``{name: folder, root: faces/, cache_in_memory: true}``.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torchdata.stateful_dataloader import StatefulDataLoader

from daefr.data.dataset import SPLIT_NAMES, STATS_KEY, CorruptDataError, FaceDataset
from daefr.data.sources import Source, resolve_source
from daefr.data.split import SPLITS, stream_seed
from daefr.errors import ConfigError

log = logging.getLogger(__name__)
# FaceDataset's length is exact per rank (each worker knows its share), so Lightning's generic caution
# about IterableDataset lengths with several workers does not apply.
warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined", category=UserWarning)
# torchdata 0.11 calls a torch API that torch 2.13 marks deprecated, at every iteration (not ours to fix)
warnings.filterwarnings("ignore", message=r"'set_vital' is deprecated", category=UserWarning)

SourceSpec = str | list[str] | dict[str, Any] | None


class EpochDataLoader(StatefulDataLoader):
    """A resumable DataLoader that tells its :class:`FaceDataset` the rank, world size and epoch at every pass.

    Workers are started (and get their copy of the dataset) when iteration starts, so setting the
    epoch here reseeds shuffling and resampling for each epoch; workers are never persistent.
    ``state_dict`` / ``load_state_dict`` (``torchdata``'s ``StatefulDataLoader``, saved by Lightning in
    every checkpoint) hold the position inside the epoch: each worker's dataset position plus which
    worker yields next, so a resumed run continues with exactly the batches of an uninterrupted one.
    """

    def __init__(self, dataset: FaceDataset, *args: Any, context: Callable[[], tuple[int, int, int]] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(dataset, *args, **kwargs)
        self._context = context

    def __iter__(self) -> Any:
        dataset = self.dataset
        if self._context is not None and isinstance(dataset, FaceDataset):
            rank, world_size, epoch = self._context()
            dataset.set_context(rank, world_size, epoch, self.num_workers)
        return super().__iter__()

    def state_dict(self) -> dict[str, Any]:
        """The loader position; empty once the epoch's last batch is out (the next pass starts afresh)."""
        state: dict[str, Any] = super().state_dict()
        try:
            complete = int(state.get("_num_yielded", 0)) >= len(self)
        except TypeError:  # length unknown
            complete = False
        return {} if complete else state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the loader's position; an empty state (a run saved without one) is ignored."""
        if state_dict:
            super().load_state_dict(state_dict)


class FaceDataModule(LightningDataModule):
    """Face images for training and evaluation: HQ only (LQ made on device) or paired LQ/HQ test sets.

    Batches: ``{"hq": (B, 3, H, W) float32 in [-1, 1], "key": list[str]}`` plus ``"lq"`` (same shape and
    range) for paired data or when ``degradation`` is set.

    Args:
        train, val, test: sources (see module docstring); None leaves that split out.
        predict: a source of low-quality faces to restore (``daefr predict``): its images are served as
            ``{"lq": (B, 3, H, W) in [-1, 1], "key": [...]}``, never degraded.
        image_size: square side of every image; non-matching images are resized and centre-cropped.
        batch_size: per-rank batch size for training; ``eval_batch_size`` for val/test (default: same).
        num_workers: DataLoader worker processes per rank (decoding only).
        shuffle_buffer: training samples held for shuffling (per worker); 0 or 1 turns it off.
        resampled: draw training shards with replacement and run exactly ``epoch_length`` batches per
            rank per epoch (recommended for large shard sets and multi-node); otherwise a finite pass in
            which ranks are cut to the same number of full batches.
        epoch_length: batches per rank per epoch in resampled mode.
        split: "auto" | "shard" | "sample": how finite data is divided over ranks and workers.
        flip: random horizontal flips of training samples.
        degradation: ``degradations`` registry spec (e.g. ``{name: daefr_small}``) applied to HQ-only
            batches on the device in ``on_after_batch_transfer``; None yields HQ only.
        seed: base seed; shuffling, flips, resampling and degradations derive from (seed, epoch, rank).
        max_corrupt_fraction: abort with a clear error when more samples than this fraction are corrupt.
        key_log_dir: if set, every rank appends the keys of its training batches to
            ``keys-rank{R}.txt`` there (for checking how data was split).
    """

    def __init__(
        self,
        train: SourceSpec = None,
        val: SourceSpec = None,
        test: SourceSpec = None,
        predict: SourceSpec = None,
        image_size: int = 512,
        batch_size: int = 4,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        shuffle_buffer: int = 256,
        resampled: bool = False,
        epoch_length: int | None = None,
        split: str = "auto",
        flip: bool = True,
        degradation: str | dict[str, Any] | None = None,
        seed: int = 0,
        max_corrupt_fraction: float = 0.05,
        pin_memory: bool = False,
        key_log_dir: str | None = None,
    ) -> None:
        super().__init__()
        if resampled and not epoch_length:
            raise ConfigError("resampled=True needs epoch_length: the number of batches per rank per epoch")
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if not 0.0 <= max_corrupt_fraction <= 1.0:
            raise ConfigError(f"max_corrupt_fraction must be in [0, 1], got {max_corrupt_fraction}")
        self.save_hyperparameters()
        self.specs = {"train": train, "val": val, "test": test, "predict": predict}
        self.image_size, self.batch_size = image_size, batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers, self.shuffle_buffer = num_workers, shuffle_buffer
        self.resampled, self.epoch_length, self.split, self.flip = resampled, epoch_length, split, flip
        self.degradation_spec, self.seed = degradation, seed
        self.max_corrupt_fraction, self.pin_memory = max_corrupt_fraction, pin_memory
        self.key_log_dir = key_log_dir
        self.datasets: dict[str, FaceDataset] = {}
        self._degradation: Any = None
        # latest cumulative [tried, corrupt] per (split, worker), reported by the workers in each batch
        self._worker_stats: dict[tuple[str, int], tuple[int, int]] = {}

    # ----- setup ---------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Build the datasets of the splits ``stage`` needs (``fit``: train and val; all when None)."""
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}.get(
            stage or "", tuple(self.specs))
        for name in wanted:
            spec = self.specs[name]
            if spec is None or name in self.datasets:
                continue
            self.datasets[name] = self._make_dataset(name, resolve_source(spec))
        if stage == "fit" and "train" not in self.datasets:
            raise ConfigError("FaceDataModule: fit needs a `train` source (shards, folder or registry spec)")
        if self.degradation_spec is not None and self._degradation is None:
            from daefr.registry import REGISTRY

            self._degradation = REGISTRY.build("degradations", self.degradation_spec)

    def _make_dataset(self, name: str, source: Source) -> FaceDataset:
        train = name == "train"
        return FaceDataset(
            source,
            self.batch_size if train else self.eval_batch_size,
            self.image_size,
            name=name,
            shuffle_buffer=self.shuffle_buffer if train else 0,
            resampled=self.resampled and train,
            epoch_length=self.epoch_length if train else None,
            equalize=train,
            split=self.split,
            flip=self.flip and train,
            seed=self.seed,
            max_corrupt_fraction=self.max_corrupt_fraction,
        )

    def _context(self) -> tuple[int, int, int]:
        trainer = self.trainer
        if trainer is None:
            return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), 0
        return trainer.global_rank, trainer.world_size, trainer.current_epoch

    def _loader(self, name: str) -> EpochDataLoader:
        if name not in self.datasets:
            if self.specs[name] is None:
                raise ConfigError(f"FaceDataModule has no `{name}` source configured")
            self.setup({"train": "fit", "val": "validate", "test": "test", "predict": "predict"}[name])
        dataset = self.datasets[name]
        rank, world_size, epoch = self._context()
        dataset.set_context(rank, world_size, epoch, self.num_workers)
        return EpochDataLoader(
            dataset,
            batch_size=None,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            context=self._context,
        )

    def train_dataloader(self) -> EpochDataLoader:
        """The resumable loader of the ``train`` split (batches of (B, 3, H, W) images)."""
        return self._loader("train")

    def val_dataloader(self) -> EpochDataLoader:
        """The loader of the ``val`` split."""
        return self._loader("val")

    def test_dataloader(self) -> EpochDataLoader:
        """The loader of the ``test`` split."""
        return self._loader("test")

    def predict_dataloader(self) -> EpochDataLoader:
        """The loader of the ``predict`` split (LQ images and their keys)."""
        return self._loader("predict")

    # ----- per-batch work on the device ----------------------------------------------------------
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Record corrupt-sample counts, log keys, and add ``"lq"`` by degrading ``"hq"`` on the device."""
        if not isinstance(batch, dict):
            return batch
        name = self._current_split()
        stats = batch.pop(STATS_KEY, None)
        if stats is not None:
            split_id = int(stats[0])
            name = SPLIT_NAMES[split_id] if 0 <= split_id < len(SPLIT_NAMES) else name
            self._update_stats(name, stats[1:])
        if name == "train" and self.key_log_dir:
            self._log_keys(batch["key"])
        if name == "predict":  # the images to restore are the low-quality inputs themselves
            if "lq" not in batch:
                batch["lq"] = batch.pop("hq")
            return batch
        if self._degradation is not None and "lq" not in batch:
            self._degrade(batch, name)
        return batch

    def _current_split(self) -> str:
        trainer = self.trainer
        if trainer is None or trainer.training:
            return "train"
        if trainer.predicting:
            return "predict"
        return "test" if trainer.testing else "val"

    def _degrade(self, batch: dict[str, Any], name: str) -> None:
        from daefr.data.degradation import apply_to_batch

        hq = batch["hq"]
        self._degradation = self._degradation.to(hq.device)
        epoch = self._context()[2] if name == "train" else 0
        # seeded by the batch's keys: the same validation batch always gets the same degradation
        seed = stream_seed(self.seed, "degrade", name, epoch, *batch["key"])
        generator = torch.Generator(device=hq.device).manual_seed(seed)
        # sets lq and degradation_params (and replaces hq when the degradation has gt_gray)
        apply_to_batch(batch, self._degradation, generator)

    def _update_stats(self, name: str, stats: torch.Tensor) -> None:
        worker, tried, corrupt = (int(v) for v in stats.tolist())
        previous = self._worker_stats.get((name, worker), (0, 0))
        if tried < previous[0]:  # a new pass restarted the worker's counters
            previous = (0, 0)
        self._worker_stats[(name, worker)] = (tried, corrupt)
        if corrupt > previous[1]:
            total_tried, total_corrupt = self.corrupt_counts(name)
            log.warning("%s data: %d of %d samples so far were corrupt and skipped", name, total_corrupt, total_tried)
            self._log_metric(f"data/{name}_corrupt_samples", float(total_corrupt))
            if total_tried >= 50 and total_corrupt / total_tried > self.max_corrupt_fraction:
                raise CorruptDataError(
                    f"{total_corrupt} of {total_tried} {name} samples could not be read, above "
                    f"max_corrupt_fraction={self.max_corrupt_fraction}; fix or re-shard the data"
                )

    def corrupt_counts(self, name: str) -> tuple[int, int]:
        """(samples tried, samples skipped as corrupt) so far in the current pass over ``name``."""
        items = [v for (n, _), v in self._worker_stats.items() if n == name]
        return sum(v[0] for v in items), sum(v[1] for v in items)

    def _log_metric(self, key: str, value: float) -> None:
        trainer = self.trainer
        if trainer is not None and trainer.is_global_zero and trainer.logger is not None:
            trainer.logger.log_metrics({key: value}, step=trainer.global_step)

    def _log_keys(self, keys: list[str]) -> None:
        assert self.key_log_dir is not None
        rank = self._context()[0]
        path = Path(self.key_log_dir) / f"keys-rank{rank}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            handle.write("".join(f"{key}\n" for key in keys))
