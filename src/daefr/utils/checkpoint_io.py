"""Lightning CheckpointIO plugin: atomic checkpoint writes and one-line errors for bad checkpoint files.

Use ``Trainer(plugins=[AtomicCheckpointIO()])``. Saving writes the whole checkpoint to a temporary
file in the target folder, fsyncs it and renames it over the target, so a crash or SIGKILL mid-save
leaves the previous checkpoint intact and never a truncated one. Loading is torch's weights-only
loader (Lightning's default with this torch) and turns every failure (missing, empty, truncated,
corrupt, refused global) into :class:`~daefr.errors.CheckpointError` naming the file.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

from daefr.errors import CheckpointError
from daefr.utils.archive_limits import check_zip_expansion
from daefr.utils.io import atomic_torch_save
from daefr.utils.reasons import one_line_reason, refused_pickle_global

__all__ = ["AtomicCheckpointIO"]

_LOCAL_PROTOCOLS = {"file", "local"}


def _is_local(path: str | Path) -> bool:
    protocol = get_filesystem(path).protocol
    protocols = {protocol} if isinstance(protocol, str) else set(protocol)
    return bool(protocols & _LOCAL_PROTOCOLS)


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO with write-then-rename saves and CheckpointError on unreadable files."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        """Write ``checkpoint`` to ``path`` atomically (remote fsspec URLs fall back to Lightning's writer)."""
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}.save_checkpoint does not take storage_options")
        if not _is_local(path):
            super().save_checkpoint(checkpoint, path)
            return
        atomic_torch_save(checkpoint, Path(path))

    def load_checkpoint(
        self,
        path: str | Path,
        map_location: Callable[..., Any] | Any | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Load a checkpoint; any failure is a one-line :class:`CheckpointError` naming ``path``."""
        if _is_local(path):
            local = Path(path)
            if not local.exists():
                raise CheckpointError(f"{local}: checkpoint file not found; check the ckpt_path")
            if local.is_dir():
                raise CheckpointError(f"{local}: is a directory, not a checkpoint file")
            if local.stat().st_size == 0:
                raise CheckpointError(f"{local}: checkpoint file is empty (0 bytes); it was cut off while writing")
            check_zip_expansion(local, "checkpoint")
        try:
            checkpoint = super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        except pickle.UnpicklingError as exc:
            name = refused_pickle_global(exc)
            if name is not None:
                raise CheckpointError(
                    f"{path}: refused to load: the pickle references {name}, which is not a tensor, storage or "
                    "plain container; daefr never runs code from checkpoint files"
                ) from None
            raise CheckpointError(
                f"{path}: refused or unreadable checkpoint ({one_line_reason(exc)}); daefr loads checkpoints "
                "with torch's weights-only loader and never runs code from them"
            ) from None
        except Exception as exc:  # zip/pickle internals: one line, never their traceback
            raise CheckpointError(
                f"{path}: cannot load checkpoint (truncated or corrupt?): {one_line_reason(exc)}"
            ) from None
        if not isinstance(checkpoint, dict):
            raise CheckpointError(f"{path}: holds a {type(checkpoint).__name__}, not a Lightning checkpoint dict")
        return checkpoint
