"""Conformance check for ``datasets`` components (built-in or plugin sources): run it in your tests.

The contract (:class:`daefr.data.sources.Source`): ``units()`` returns the same list of uniquely named
:class:`~daefr.data.sources.Unit` on every call; ``read(unit)`` yields ``(key, {field: bytes})`` where
the key is a non-empty string without a dot in its last path part, keys are unique, a ``count`` given
for a unit equals the samples read from it, reading twice gives the same bytes, and every sample has
an image field that :class:`~daefr.data.dataset.FaceDataset` decodes (``lq.*`` and ``hq.*`` when the
source is ``paired``).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["check_source"]


def check_source(source: Any, *, max_units: int = 3, image_size: int = 32) -> None:
    """Assert that ``source`` honours the ``datasets`` contract; raises AssertionError naming the rule."""
    from daefr.data.dataset import FaceDataset
    from daefr.data.sources import HQ_FIELDS, LQ_FIELDS, Source, Unit

    assert isinstance(source, Source), f"a datasets component must subclass daefr.data.sources.Source, got {type(source)}"
    units = source.units()
    assert isinstance(units, list) and units, "units() must return a non-empty list"
    assert all(isinstance(u, Unit) for u in units), "units() must return daefr.data.sources.Unit items"
    assert source.units() == units, "units() must return the same units, in the same order, on every call"
    assert len({u.name for u in units}) == len(units), "unit names must be unique"
    keys: set[str] = set()
    for unit in units[:max_units]:
        samples = list(source.read(unit))
        assert samples == list(source.read(unit)), f"reading unit {unit.name!r} twice gave different samples"
        if unit.count is not None:
            assert len(samples) == unit.count, f"unit {unit.name!r} says count={unit.count} but has {len(samples)}"
        for key, fields in samples:
            assert isinstance(key, str) and key, f"sample keys must be non-empty strings, got {key!r}"
            assert "." not in key.rsplit("/", 1)[-1], f"key {key!r} has a dot (WebDataset splits keys there)"
            assert key not in keys, f"duplicate sample key {key!r}"
            keys.add(key)
            assert isinstance(fields, dict) and all(isinstance(v, bytes) for v in fields.values()), (
                f"sample {key!r}: fields must be a dict of bytes"
            )
            assert any(f in fields for f in HQ_FIELDS), f"sample {key!r} has no image field ({', '.join(HQ_FIELDS)})"
            if source.paired:
                assert any(f in fields for f in LQ_FIELDS), f"paired sample {key!r} has no LQ field"
    dataset = FaceDataset(source, 2, image_size, name="val", max_corrupt_fraction=0.0)
    batch = next(iter(dataset), None)
    assert batch is not None, "FaceDataset could not decode any sample of this source"
    images = batch["hq"]
    assert images.dtype == torch.float32 and images.shape[1:] == (3, image_size, image_size)
    assert float(images.min()) >= -1.0 and float(images.max()) <= 1.0, "decoded images must lie in [-1, 1]"
    if source.paired:
        assert batch["lq"].shape == images.shape, "paired sources must decode LQ and HQ to the same shape"
