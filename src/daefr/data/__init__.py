"""daefr.data: face image sources (shards, folders), the distributed DataModule, degradations."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from daefr.data.datamodule import FaceDataModule

__all__ = ["FaceDataModule"]


def __getattr__(name: str) -> Any:
    # lazy: `import daefr.data` must not pull in Lightning (CLI help and listing stay fast)
    if name == "FaceDataModule":
        from daefr.data.datamodule import FaceDataModule

        return FaceDataModule
    raise AttributeError(f"module 'daefr.data' has no attribute {name!r}")
