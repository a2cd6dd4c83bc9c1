"""daefr.data.split: every sample has exactly one owner; equalised ranks run the same number of steps."""

from __future__ import annotations

import pytest

from daefr.data.split import (
    choose_split,
    equal_batch_quotas,
    slot_counts,
    slot_of,
    split_evenly,
    stream_seed,
    units_for,
)


@pytest.mark.parametrize("world,workers", [(1, 1), (2, 1), (2, 3), (3, 2), (4, 4)])
def test_slots_partition_indices(world: int, workers: int) -> None:
    owners = [slot_of(i, world, workers) for i in range(50)]
    assert {r for r, _ in owners} == set(range(world))
    # rank ownership does not depend on the number of workers
    assert [r for r, _ in owners] == [slot_of(i, world, 1)[0] for i in range(50)]
    units = sorted(i for r in range(world) for w in range(workers) for i in units_for(50, r, world, w, workers))
    assert units == list(range(50))


@pytest.mark.parametrize("split", ["shard", "sample"])
def test_slot_counts_sum_to_total(split: str) -> None:
    counts = [5, 3, 7, 1, 9, 2, 4, 6]
    per = slot_counts(counts, split, 2, 3)
    assert sum(map(sum, per)) == sum(counts)
    if split == "sample":
        flat = [n for row in per for n in row]
        assert max(flat) - min(flat) <= 1
    else:
        assert per[0][0] == 5 + 4  # units 0 and 6 -> rank 0, worker 0


def test_equal_batch_quotas_give_every_rank_the_same_steps() -> None:
    per = [[9, 2, 0], [4, 4, 4]]
    quotas = equal_batch_quotas(per, batch_size=2)
    assert sum(quotas[0]) == sum(quotas[1]) == 5  # rank 0 can do 4 + 1 + 0 = 5, rank 1 can do 6
    for row, caps in zip(quotas, per):
        assert all(q * 2 <= c for q, c in zip(row, caps))


def test_choose_split_and_helpers() -> None:
    assert choose_split("auto", 8, 2, 2) == "shard"
    assert choose_split("auto", 3, 2, 2) == "sample"
    with pytest.raises(ValueError, match="split must be"):
        choose_split("rows", 3, 1, 1)
    assert split_evenly(7, 3) == [3, 2, 2]
    assert stream_seed(0, "train", 1, 0) == stream_seed(0, "train", 1, 0)
    assert stream_seed(0, "train", 1, 0) != stream_seed(0, "train", 1, 1)
