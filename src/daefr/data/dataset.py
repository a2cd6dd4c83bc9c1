"""One iterable dataset for every source: split over ranks/workers, decode, shuffle, batch, count corrupt.

Modes:
- ``resampled=True``: each (rank, worker) draws units with replacement (``webdataset.ResampledShards``,
  seeded by (seed, epoch, rank, worker)) and stops after its share of ``epoch_length`` batches, so every
  rank runs exactly ``epoch_length`` steps per epoch whatever the data.
- ``resampled=False``: a finite pass in which every sample belongs to exactly one (rank, worker) (see
  :mod:`daefr.data.split`). With ``equalize=True`` (training) ranks are cut to the same number of full
  batches, and a worker whose stream runs short (corrupt samples) starts over, so DDP never waits on a
  rank that has no batch left. Evaluation uses ``equalize=False``: each sample exactly once.

The per-worker stream is a ``webdataset`` pipeline: units -> raw samples (tar shards through
``webdataset``'s tar iterators) -> ``webdataset.shuffle`` buffer -> decode (corrupt samples skipped and
counted) -> batches. The unit split stays ours (:mod:`daefr.data.split`): webdataset splits whole shards
only, while we also split samples when there are few shards and cut ranks to equal batch counts.

Exact resume: the dataset is *stateful* (``state_dict`` / ``load_state_dict``, the protocol of
``torchdata``'s ``StatefulDataLoader``): each worker reports how many raw samples of its shuffled stream
it has used; a restored worker replays its raw stream and shuffle buffer to that point without decoding
the skipped images (flips are keyed by the position, not drawn from a shared RNG), so it continues with
exactly the batches an uninterrupted run would have produced.

Batches are built inside the workers (use ``DataLoader(batch_size=None)``):
``{"hq": (B, 3, H, W) float32 in [-1, 1], "key": list[str], "lq": same as hq (paired only),
"data_stats": (4,) int64 [split id, worker, samples tried, corrupt samples] (cumulative in that
worker; split id indexes SPLIT_NAMES)}``.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterator
from itertools import islice
from typing import Any

import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from daefr.data.decode import decode_rgb, resize_center_crop, to_tensor_m11
from daefr.data.sources import HQ_FIELDS, LQ_FIELDS, RawSample, Source, SourceReadError, Unit
from daefr.data.split import (
    choose_split,
    equal_batch_quotas,
    slot_counts,
    slot_of,
    split_evenly,
    stream_seed,
    units_for,
)
from daefr.errors import ConfigError, DaefrError, ImageReadError

log = logging.getLogger(__name__)
STATS_KEY = "data_stats"
SPLIT_NAMES = ("train", "val", "test", "predict")


class CorruptDataError(DaefrError):
    """Too many samples of a dataset could not be decoded (above ``max_corrupt_fraction``)."""


class CorruptionTracker:
    """Counts tried / corrupt samples and raises :class:`CorruptDataError` above a fraction."""

    def __init__(self, name: str, max_fraction: float, min_samples: int = 50) -> None:
        self.name, self.max_fraction, self.min_samples = name, max_fraction, min_samples
        self.tried = 0
        self.corrupt = 0
        self.last_reasons: list[str] = []

    def good(self) -> None:
        """Record one sample decoded successfully."""
        self.tried += 1

    def bad(self, reason: str, samples: int = 1) -> None:
        """Record ``samples`` lost samples (a broken shard counts once) and check the threshold."""
        self.tried += samples
        self.corrupt += samples
        self.last_reasons = (self.last_reasons + [reason])[-3:]
        if self.corrupt <= 5 or self.corrupt % 100 == 0:  # the first few, then every 100th
            log.warning("skipping corrupt sample in %s data (%d so far): %s", self.name, self.corrupt, reason)
        if self.tried >= self.min_samples:
            self.check()

    def check(self) -> None:
        """Raise when the corrupt fraction is above the limit (call at the end of a finite pass too)."""
        if self.tried and self.corrupt / self.tried > self.max_fraction:
            raise CorruptDataError(
                f"{self.corrupt} of {self.tried} samples ({100 * self.corrupt / self.tried:.1f}%) in the "
                f"{self.name} data could not be read, above max_corrupt_fraction={self.max_fraction}; "
                f"last: {' | '.join(self.last_reasons)}. Fix or re-shard the data (`daefr shard` "
                "lists bad files), or raise max_corrupt_fraction."
            )


class FaceDataset(IterableDataset[dict[str, Any]]):
    """Batches of faces from a :class:`~daefr.data.sources.Source`, distributed-aware (see module doc)."""

    def __init__(
        self,
        source: Source,
        batch_size: int,
        image_size: int | None = None,
        *,
        name: str = "train",
        shuffle_buffer: int = 0,
        resampled: bool = False,
        epoch_length: int | None = None,
        equalize: bool = False,
        drop_last: bool = False,
        split: str = "auto",
        flip: bool = False,
        seed: int = 0,
        max_corrupt_fraction: float = 0.05,
        corrupt_min_samples: int = 50,
        min_size: int = 16,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if resampled and (epoch_length is None or epoch_length < 1):
            raise ValueError("resampled=True needs epoch_length (batches per rank per epoch) >= 1")
        self.source = source
        self.batch_size, self.image_size, self.name = batch_size, image_size, name
        self.shuffle_buffer, self.resampled, self.epoch_length = shuffle_buffer, resampled, epoch_length
        self.equalize, self.drop_last = equalize, drop_last or equalize
        self.split, self.flip, self.seed = split, flip, seed
        self.max_corrupt_fraction, self.corrupt_min_samples = max_corrupt_fraction, corrupt_min_samples
        self.min_size = min_size
        self.units: list[Unit] = source.units()
        self._unreadable: list[str] = []  # shards found broken while counting their samples
        self.paired = source.paired
        # set by the DataModule (from the Trainer) before each pass; explicit for tests / plain use
        self.rank, self.world_size, self.epoch, self.num_workers = 0, 1, 0, 1
        self._position: dict[str, int] | None = None  # of the pass in progress (see state_dict)
        self._resume: dict[str, int] | None = None  # set by load_state_dict for the next pass

    # ----- planning ------------------------------------------------------------------------------
    def set_context(self, rank: int, world_size: int, epoch: int, num_workers: int) -> None:
        """Where this copy runs: global rank, world size, epoch and DataLoader workers (0 counts as 1)."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.rank, self.world_size, self.epoch = rank, world_size, epoch
        self.num_workers = max(1, num_workers)

    def counts(self) -> list[int]:
        """Samples per unit; shards without a manifest are counted once by reading them.

        A shard that cannot be read (missing, empty, not a tar, truncated) counts the samples before the
        damage; it is skipped (and counted as corrupt when read), or stops with one line if none is readable.
        """
        filled = [u.count if u.count is not None else self._count_unit(u) for u in self.units]
        self.units = [Unit(u.name, n) for u, n in zip(self.units, filled)]
        if self.units and not any(filled) and self._unreadable:
            raise CorruptDataError(
                f"none of the {len(self.units)} {self.name} shards holds a readable sample; "
                f"first problem: {self._unreadable[0]}. Check the paths or re-shard the data (`daefr shard`)"
            )
        return filled

    def _count_unit(self, unit: Unit) -> int:
        from daefr.data.sources import iter_tar_samples, open_shard

        counted = 0
        try:
            with open_shard(unit.name) as stream:
                for _ in iter_tar_samples(stream, unit.name):
                    counted += 1
        except (SourceReadError, OSError, ValueError) as exc:
            reason = str(exc) if isinstance(exc, SourceReadError) else f"cannot open shard {unit.name}: {exc}"
            self._unreadable.append(reason)
            log.warning("%s data: %s; skipped as corrupt (%d readable samples before the damage are used)",
                        self.name, reason, counted)
        return counted

    def _split(self) -> str:
        return choose_split(self.split, len(self.units), self.world_size, self.num_workers)

    def worker_batches(self) -> list[int] | None:
        """Batches each worker of this rank yields per pass (None: not known without reading)."""
        workers = self.num_workers
        if self.resampled:
            assert self.epoch_length is not None
            return split_evenly(self.epoch_length, workers)
        if not self.equalize and any(u.count is None for u in self.units):
            return None
        per_slot = slot_counts(self.counts(), self._split(), self.world_size, workers)
        if self.equalize:
            quotas = equal_batch_quotas(per_slot, self.batch_size)
            if not any(quotas[self.rank]):
                raise ConfigError(
                    f"{self.name} data ({sum(map(sum, per_slot))} samples, {len(self.units)} units) gives some "
                    f"rank no full batch of {self.batch_size} with {self.world_size} ranks x {workers} workers "
                    f"(split={self._split()!r}); use split='sample', a smaller batch, fewer workers or resampled=True"
                )
            return quotas[self.rank]
        round_ = math.floor if self.drop_last else math.ceil
        return [int(round_(n / self.batch_size)) for n in per_slot[self.rank]]

    def __len__(self) -> int:
        """Batches this rank yields per pass; TypeError when unknown (Lightning then counts as it goes)."""
        batches = self.worker_batches()
        if batches is None:
            raise TypeError("length unknown: shards without a manifest and no equalize")
        return sum(batches)

    # ----- resume state (torchdata Stateful protocol) --------------------------------------------------
    def _layout(self) -> list[int]:
        return [self.epoch, self.rank, self.world_size, self.num_workers]

    def state_dict(self) -> dict[str, Any]:
        """Position of this copy's current pass: raw samples used, batches, corrupt counts, run layout."""
        position = self._position or {"used": 0, "batches": 0, "tried": 0, "corrupt": 0}
        return {"layout": self._layout(), **position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the next pass from ``state`` (a :meth:`state_dict` of the same epoch and layout)."""
        if not state or not state.get("used"):
            self._resume = None
            return
        if list(state.get("layout", [])) != self._layout():
            log.warning("%s data: the saved data position is for epoch/rank/world/workers %s, this run is %s; "
                        "this pass starts from its beginning", self.name, state.get("layout"), self._layout())
            self._resume = None
            return
        self._resume = {k: int(state[k]) for k in ("used", "batches", "tried", "corrupt")}

    # ----- iteration -----------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if workers != self.num_workers:
            self.num_workers = workers
        quota = self.worker_batches()
        my_quota = None if quota is None else quota[worker]
        rng = random.Random(stream_seed(self.seed, self.name, self.epoch, self.rank, worker))
        tracker = CorruptionTracker(self.name, self.max_corrupt_fraction, self.corrupt_min_samples)
        if self.resampled:
            raw = self._resampled_raw(worker, tracker)
        elif self.equalize:
            raw = self._cycled_raw(worker, workers, rng, tracker)
        else:
            raw = self._finite_raw(worker, workers, rng if self.shuffle_buffer else None, tracker)
        if self.shuffle_buffer > 1:
            raw = wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng)(raw)
        position = {"used": 0, "batches": 0, "tried": 0, "corrupt": 0}
        resume, self._resume = self._resume, None
        if resume is not None:  # replay the raw stream (no decoding) up to the saved position
            for _ in islice(raw, resume["used"]):
                pass
            position.update(resume)
            tracker.tried, tracker.corrupt = resume["tried"], resume["corrupt"]
        self._position = position
        samples = self._decoded(raw, worker, position, tracker)
        batches = self._batched(samples, worker, tracker)
        if my_quota is not None and (self.resampled or self.equalize):
            batches = islice(batches, max(0, my_quota - position["batches"]))
        for batch in batches:
            position.update(batches=position["batches"] + 1, tried=tracker.tried, corrupt=tracker.corrupt)
            yield batch
        tracker.check()  # the end of this worker's pass (or quota): the corrupt fraction counts whatever the number

    def _finite_raw(
        self, worker: int, workers: int, rng: random.Random | None, tracker: CorruptionTracker
    ) -> Iterator[RawSample]:
        """One pass over this (rank, worker)'s share; unit order shuffled per epoch when ``rng``."""
        split = self._split()
        if split == "shard":
            mine = units_for(len(self.units), self.rank, self.world_size, worker, workers)
            if rng is not None:
                rng.shuffle(mine)
            for i in mine:
                yield from self._read_unit(self.units[i], tracker)
            return
        index = 0
        for unit in self.units:
            # every (rank, worker) walks the raw stream; only its own samples are decoded later
            for sample in self._read_unit(unit, tracker):
                if slot_of(index, self.world_size, workers) == (self.rank, worker):
                    yield sample
                index += 1

    def _cycled_raw(
        self, worker: int, workers: int, rng: random.Random, tracker: CorruptionTracker
    ) -> Iterator[RawSample]:
        """This worker's share again and again (the caller stops at the quota)."""
        while True:
            produced = False
            for sample in self._finite_raw(worker, workers, rng, tracker):
                produced = True
                yield sample
            if not produced:
                tracker.check()
                return

    def _resampled_raw(self, worker: int, tracker: CorruptionTracker) -> Iterator[RawSample]:
        """Units drawn with replacement forever; stops (with a check) if many draws in a row are empty."""
        by_name = {unit.name: unit for unit in self.units}
        seed = stream_seed(self.seed, self.name, "resample", self.epoch, self.rank, worker)
        draws = wds.ResampledShards(list(by_name), seed=seed, worker_seed=lambda: 0, deterministic=True)
        empty_in_row = 0
        for draw in draws:
            produced = False
            for sample in self._read_unit(by_name[draw["url"]], tracker):
                produced = True
                yield sample
            empty_in_row = 0 if produced else empty_in_row + 1
            if empty_in_row > 10 * len(self.units) + 10:
                tracker.check()
                raise CorruptDataError(f"{self.name} data yields no samples: every drawn unit is empty")

    def _read_unit(self, unit: Unit, tracker: CorruptionTracker) -> Iterator[RawSample]:
        produced = 0
        try:
            for sample in self.source.read(unit):
                produced += 1
                yield sample
        except SourceReadError as exc:
            tracker.bad(str(exc), samples=max(1, (unit.count or 0) - produced))
            return
        if unit.count is not None and produced < unit.count:
            # a tar cut exactly at a member boundary reads as a clean, shorter archive
            tracker.bad(f"{unit.name} holds {produced} samples but its manifest says {unit.count} (truncated?)",
                        samples=unit.count - produced)

    def _decoded(
        self, raw: Iterator[RawSample], worker: int, position: dict[str, int], tracker: CorruptionTracker
    ) -> Iterator[dict[str, Any]]:
        for key, fields in raw:
            index = position["used"]
            position["used"] = index + 1
            try:
                sample = self._decode(key, fields)
            except ImageReadError as exc:
                tracker.bad(str(exc))
                continue
            tracker.good()
            # a flip keyed by the stream position (not drawn from a shared RNG): replayable on resume
            if self.flip and stream_seed(self.seed, "flip", self.name, self.epoch, self.rank, worker, index) & 1:
                sample = {k: v.flip(-1) if isinstance(v, torch.Tensor) else v for k, v in sample.items()}
            yield sample

    def _decode(self, key: str, fields: dict[str, bytes]) -> dict[str, Any]:
        sample: dict[str, Any] = {"key": key}
        hq_field = next((f for f in HQ_FIELDS if f in fields), None)
        if hq_field is None:
            raise ImageReadError(f"no image field (one of {', '.join(HQ_FIELDS)}); fields: {sorted(fields)}")
        sample["hq"] = self._image(fields[hq_field], f"{key}.{hq_field}")
        if self.paired:
            lq_field = next((f for f in LQ_FIELDS if f in fields), None)
            if lq_field is None:
                raise ImageReadError(f"paired data without an LQ field (one of {', '.join(LQ_FIELDS)})")
            sample["lq"] = self._image(fields[lq_field], f"{key}.{lq_field}")
        return sample

    def _image(self, data: bytes, name: str) -> torch.Tensor:
        image = decode_rgb(data, name)
        if min(image.size) < self.min_size:
            raise ImageReadError(f"{name}: too small ({image.size[0]}x{image.size[1]}, need {self.min_size} px a side)")
        if self.image_size is not None:
            image = resize_center_crop(image, self.image_size)
        return to_tensor_m11(image)

    def _batched(
        self, samples: Iterator[dict[str, Any]], worker: int, tracker: CorruptionTracker
    ) -> Iterator[dict[str, Any]]:
        drop_last = self.drop_last or self.resampled
        while True:
            chunk = list(islice(samples, self.batch_size))
            if not chunk or (drop_last and len(chunk) < self.batch_size):
                return
            batch: dict[str, Any] = {"hq": torch.stack([s["hq"] for s in chunk]), "key": [s["key"] for s in chunk]}
            if self.paired:
                batch["lq"] = torch.stack([s["lq"] for s in chunk])
            split_id = SPLIT_NAMES.index(self.name) if self.name in SPLIT_NAMES else -1
            batch[STATS_KEY] = torch.tensor([split_id, worker, tracker.tried, tracker.corrupt], dtype=torch.int64)
            yield batch
