"""Size limits checked before a zip-based model file (torch checkpoint, ``.pt2``) is handed to torch.

A torch checkpoint stores its members uncompressed, so what it unpacks to is about its own size. A
hostile file can instead hold deflated members that expand a thousandfold (a "zip bomb"): torch would
allocate the expanded size before any key is checked. :func:`check_zip_expansion` reads only the zip
directory and refuses such a file, saying which limit was hit.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from daefr.errors import UnsafeFileError

__all__ = ["MAX_EXPANSION", "MAX_EXPANSION_SLACK", "check_zip_expansion"]

#: A zip model file may unpack to at most this many times its size (plus :data:`MAX_EXPANSION_SLACK`).
MAX_EXPANSION = 2
#: Bytes allowed beyond ``MAX_EXPANSION`` times the file size (small files, headers).
MAX_EXPANSION_SLACK = 16 << 20


def check_zip_expansion(path: str | Path, what: str = "model file") -> None:
    """Refuse ``path`` (:class:`UnsafeFileError`) when it is a zip archive that unpacks beyond the limit.

    Non-zip files (legacy pickles, safetensors) pass: their loaders read sizes from the data itself.
    """
    path = Path(path)
    try:
        if not zipfile.is_zipfile(path):
            return
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return  # unreadable directory: the real loader reports the damage in its own words
    size = path.stat().st_size
    limit = MAX_EXPANSION * size + MAX_EXPANSION_SLACK
    if unpacked > limit:
        raise UnsafeFileError(
            f"{path}: refused: this {what} unpacks to {unpacked / 2**20:,.1f} MiB from {size / 2**20:,.1f} MiB "
            f"(size limit hit: at most {MAX_EXPANSION}x its size + {MAX_EXPANSION_SLACK >> 20} MiB); torch "
            "checkpoints are stored uncompressed, so this one is damaged or a zip bomb"
        )
