"""Check an ExportedProgram archive (``.pt2``) before torch loads it: no pickles, no native code.

``torch.export.load`` trusts its file: a weight or constant marked ``use_pickle`` in the archive's
JSON config is unpickled without ``weights_only``; "opaque" constants go through plain ``pickle``;
sample inputs that the weights-only loader refuses are retried without it; legacy ``<model>.pt``
weight files are pickles; an ``aotinductor`` folder is compiled native code that torch runs. A
``daefr export`` archive holds none of these (raw tensor bytes plus JSON), so :func:`check_pt2_archive`
refuses every one of them by reading only the zip directory, the JSON configs and (weights-only) the
sample inputs. It also applies :func:`daefr.utils.archive_limits.check_zip_expansion`.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

from daefr.errors import CheckpointError, UnsafeFileError
from daefr.utils.archive_limits import check_zip_expansion

__all__ = ["MAX_CONFIG_BYTES", "check_pt2_archive"]

#: Largest JSON config / sample-input member read while checking (a daefr export's is under 1 MiB).
MAX_CONFIG_BYTES = 64 << 20
_NATIVE_DIRS = ("data/aotinductor/", "data/executorch/", "data/mtia", "xl_model_weights/")
_NATIVE_SUFFIXES = (".so", ".dll", ".dylib", ".cpp", ".o", ".cubin", ".pyd")
_PICKLED_PREFIXES = ("custom_obj_", "opaque_obj_")


def _relative(name: str) -> str:
    """Member name below the archive's root folder (torch strips that folder too)."""
    return name.split("/", 1)[1] if "/" in name else name


def _refuse(path: Path, what: str) -> UnsafeFileError:
    return UnsafeFileError(f"{path}: refused: {what}; daefr loads only ExportedProgram files without pickled "
                           "or compiled parts (as `daefr export` writes them), so nothing was run")


def check_pt2_archive(path: str | Path) -> None:
    """Raise :class:`UnsafeFileError` unless ``path`` is a ``.pt2`` archive free of pickles and native code.

    Raises :class:`CheckpointError` when ``path`` is not a zip archive at all.
    """
    path = Path(path)
    check_zip_expansion(path, "exported program")
    try:
        with zipfile.ZipFile(path) as archive:
            _check_members(path, archive)
    except zipfile.BadZipFile as exc:
        raise CheckpointError(f"{path}: not an ExportedProgram archive (not a zip file: {exc})") from None


def _check_members(path: Path, archive: zipfile.ZipFile) -> None:
    for info in archive.infolist():
        rel = _relative(info.filename)
        if rel.startswith(_NATIVE_DIRS) or rel.lower().endswith(_NATIVE_SUFFIXES):
            raise _refuse(path, f"it holds compiled code or a foreign payload ({info.filename})")
        if rel.startswith(("data/weights/", "data/constants/")) and rel.endswith(".pt"):
            raise _refuse(path, f"it holds pickled weights in the legacy layout ({info.filename})")
        if rel.startswith(("data/weights/", "data/constants/")) and rel.endswith("_config.json"):
            for fqn, meta in _config_entries(path, archive, info).items():
                if not isinstance(meta, dict):
                    raise _refuse(path, f"entry {fqn!r} of {info.filename} is not an object")
                name = str(meta.get("path_name", ""))
                if meta.get("use_pickle") or name.startswith(_PICKLED_PREFIXES):
                    raise _refuse(path, f"{fqn!r} is stored as a pickle ({info.filename}: {name})")
        if rel.startswith("data/sample_inputs/"):
            _check_weights_only(path, archive, info)


def _read(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    if info.file_size > MAX_CONFIG_BYTES:
        raise _refuse(path, f"{info.filename} declares {info.file_size / 2**20:,.1f} MiB (size limit hit: "
                            f"{MAX_CONFIG_BYTES >> 20} MiB)")
    try:
        return archive.read(info)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: damaged archive member {info.filename}: {exc}") from None


def _config_entries(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> dict[str, Any]:
    try:
        data = json.loads(_read(path, archive, info))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: damaged archive member {info.filename}: {exc}") from None
    config = data.get("config") if isinstance(data, dict) else None
    if not isinstance(config, dict):
        raise _refuse(path, f"{info.filename} has no 'config' mapping")
    return config


def _check_weights_only(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """Torch retries a sample-input file without ``weights_only`` when the safe loader refuses it: we don't."""
    import torch

    raw = _read(path, archive, info)
    if not raw:
        return
    try:
        torch.load(io.BytesIO(raw), weights_only=True, map_location="cpu")
    except Exception as exc:
        from daefr.utils.reasons import one_line_reason

        raise _refuse(path, f"{info.filename} is not loadable weights-only ({one_line_reason(exc)})") from None
