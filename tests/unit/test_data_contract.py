"""The ``datasets`` contract check passes on every built-in source and catches a broken one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from daefr.data.shards import write_shards
from daefr.data.sources import FolderSource, PairedFolderSource, RawSample, ShardSource, Source, Unit
from daefr.registry import REGISTRY
from daefr.testing.datasets import check_source
from data_helpers import make_image_folder, make_paired_folder


def test_builtin_sources_conform(tmp_path: Path) -> None:
    make_image_folder(tmp_path / "faces", n_good=5, bad=False)
    make_paired_folder(tmp_path / "pairs", n=3)
    write_shards(tmp_path / "faces", tmp_path / "shards")
    check_source(FolderSource(tmp_path / "faces"))
    check_source(PairedFolderSource(tmp_path / "pairs"))
    check_source(ShardSource(str(tmp_path / "shards")))
    built = REGISTRY.build("datasets", {"name": "shards", "urls": str(tmp_path / "shards")})
    check_source(built)


class _DottedKeys(Source):
    def units(self) -> list[Unit]:
        return [Unit("only", 1)]

    def read(self, unit: Unit) -> Iterator[RawSample]:
        yield "a.b", {"png": b"x"}


class _WrongCount(_DottedKeys):
    def units(self) -> list[Unit]:
        return [Unit("only", 2)]

    def read(self, unit: Unit) -> Iterator[RawSample]:
        yield "a", {"png": b"x"}


def test_contract_violations_are_named() -> None:
    with pytest.raises(AssertionError, match="has a dot"):
        check_source(_DottedKeys())
    with pytest.raises(AssertionError, match="count=2 but has 1"):
        check_source(_WrongCount())
