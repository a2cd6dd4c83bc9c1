"""Pure planning of who reads what: units or samples over ranks and DataLoader workers.

Everything here is a deterministic function of (counts, world size, workers, batch size), so every rank
computes the same plan without talking to the others.

Slots: the global index ``i`` of a unit (``split="shard"``) or of a sample (``split="sample"``) goes to
rank ``i % world_size`` and, within that rank, to worker ``(i // world_size) % num_workers``. The rank
assignment therefore does not depend on the number of workers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

SPLITS = ("auto", "shard", "sample")


def slot_of(index: int, world_size: int, num_workers: int) -> tuple[int, int]:
    """(rank, worker) that owns global index ``index``."""
    return index % world_size, (index // world_size) % num_workers


def choose_split(split: str, num_units: int, world_size: int, num_workers: int) -> str:
    """Resolve ``"auto"``: whole units when there are enough for every (rank, worker), else samples."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split != "auto":
        return split
    return "shard" if num_units >= world_size * num_workers else "sample"


def units_for(num_units: int, rank: int, world_size: int, worker: int, num_workers: int) -> list[int]:
    """Indices of the units read whole by (rank, worker) under ``split="shard"``."""
    return [i for i in range(num_units) if slot_of(i, world_size, num_workers) == (rank, worker)]


def slot_counts(
    counts: Sequence[int], split: str, world_size: int, num_workers: int
) -> list[list[int]]:
    """Samples owned by each (rank, worker): ``out[rank][worker]`` (``split`` is "shard" or "sample")."""
    out = [[0] * num_workers for _ in range(world_size)]
    if split == "shard":
        for i, n in enumerate(counts):
            r, w = slot_of(i, world_size, num_workers)
            out[r][w] += n
        return out
    total = sum(counts)
    slots = world_size * num_workers
    for r in range(world_size):
        for w in range(num_workers):
            first = w * world_size + r  # smallest index with slot (r, w)
            out[r][w] = 0 if first >= total else (total - 1 - first) // slots + 1
    return out


def equal_batch_quotas(per_slot: list[list[int]], batch_size: int) -> list[list[int]]:
    """Full batches per (rank, worker) so that every rank runs the same number of steps.

    Each rank's capacity is the sum over its workers of ``count // batch_size``; all ranks are cut to
    the smallest capacity, taking batches from the workers in order (so the plan is deterministic).
    """
    capacity = [[n // batch_size for n in row] for row in per_slot]
    steps = min(sum(row) for row in capacity)
    quotas: list[list[int]] = []
    for row in capacity:
        left, quota = steps, []
        # spread evenly first, so one slow worker does not carry the whole epoch
        even = [min(c, steps // len(row)) for c in row]
        left -= sum(even)
        for c, e in zip(row, even):
            extra = min(c - e, left)
            quota.append(e + extra)
            left -= extra
        quotas.append(quota)
    return quotas


def split_evenly(total: int, parts: int) -> list[int]:
    """``total`` items spread over ``parts``: the first ``total % parts`` parts get one more."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def stream_seed(*parts: object) -> int:
    """A 63-bit seed from any parts (seed, epoch, rank, worker...), stable across processes and runs."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
