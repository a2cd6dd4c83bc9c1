"""Atomic file output: write to a temporary file in the target's folder, then ``os.replace`` it.

A reader (or a crash) therefore sees either the old file or the complete new one, never a partial
file; on any error the temporary file is removed. ``overwrite=False`` refuses to replace an existing
file, and that check is atomic too (``os.link`` of the finished temporary file, which fails if the
name exists). Temporary files are named ``.<name>.<random>.tmp``: hidden, and not matched by ``*.png``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_open",
    "atomic_path",
    "atomic_save_safetensors",
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_text",
    "clean_orphaned_temps",
    "is_special_file",
    "refuse_input_as_output",
    "unique_path",
]

PathLike = str | os.PathLike[str]


def _umask() -> int:
    # os.umask can only be read by setting it; restore at once (single call, no I/O in between).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def is_special_file(path: PathLike) -> bool:
    """True when ``path`` is written to in place (FIFO, device, socket, /proc, a link into /dev).

    That is: an existing non-regular file (FIFO, device, socket), a
    path in /proc, or a link into /dev or /proc (``/dev/stdout``).
    """
    target = Path(os.path.abspath(path))
    if target.parts[1:2] == ("proc",):
        return True
    if os.path.islink(target):
        hop = Path(os.path.join(target.parent, os.readlink(target)))
        if target.parts[1:2] == ("dev",) or hop.parts[1:2] in (("dev",), ("proc",)):
            return True  # /dev/stdout -> /proc/self/fd/1, even when that ends at a regular file
    try:
        mode = os.stat(target).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def refuse_input_as_output(output: PathLike, inputs: Any, what: str = "output") -> None:
    """Raise :class:`~daefr.errors.ConfigError` when ``output`` is (or links to) one of ``inputs``.

    Special files (``/dev/null``, a FIFO) may be both read and written by the user's choice: not refused.
    """
    from daefr.errors import ConfigError

    out = Path(output)
    if is_special_file(out):
        return
    for item in [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs):
        if item is None:
            continue
        src = Path(item)
        same = False
        with contextlib.suppress(OSError):
            same = out.exists() and src.exists() and os.path.samefile(out, src)
        if same or os.path.abspath(out) == os.path.abspath(src):
            raise ConfigError(f"{what} {out} is the input file {src}; writing it would replace the input. "
                              "Choose another output path")


@contextlib.contextmanager
def _in_place(target: Path, mode: str, encoding: str | None) -> Iterator[IO[Any]]:
    """Open a special file for writing (no temporary file, no rename)."""
    with open(target, mode, encoding=encoding) as handle:
        yield handle
        with contextlib.suppress(OSError, ValueError):  # pipes and terminals: nothing to flush to disk
            handle.flush()


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not supported on every platform/filesystem
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _publish(tmp: Path, target: Path, overwrite: bool) -> None:
    """Move the finished temporary file to ``target`` (atomically), honouring ``overwrite``."""
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give outputs normal permissions
    if overwrite:
        os.replace(tmp, target)
    else:
        try:
            os.link(tmp, target)  # fails with FileExistsError if target exists: no clobbering
        except FileExistsError:
            raise FileExistsError(f"{target}: already exists and overwrite=False") from None
        except OSError:  # filesystem without hard links: best effort
            if target.exists():
                raise FileExistsError(f"{target}: already exists and overwrite=False") from None
            os.replace(tmp, target)
        else:
            os.unlink(tmp)
    _fsync_dir(target.parent)


@contextlib.contextmanager
def atomic_path(path: PathLike, *, overwrite: bool = True, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to (by any writer); publish it on success.

    The temporary file is ``.<name>.<random><suffix>``; writers that pick the format from the extension
    (``cv2.imwrite``) can pass e.g. ``suffix=".tmp.png"``. On error the temporary file is removed and
    ``path`` is untouched.
    """
    target = Path(path)
    if is_special_file(target):
        yield target  # written in place; never renamed over
        return
    if not overwrite and os.path.lexists(target):
        raise FileExistsError(f"{target}: already exists and overwrite=False")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)
    # held until the end: clean_orphaned_temps() can tell a live temporary from one whose writer died
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    tmp = Path(name)
    try:
        yield tmp
        _publish(tmp, target, overwrite)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.close(fd)


@contextlib.contextmanager
def atomic_open(
    path: PathLike,
    mode: str = "wb",
    *,
    encoding: str | None = None,
    overwrite: bool = True,
    fsync: bool = True,
) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; on clean exit fsync it and rename it to ``path``."""
    if mode not in ("w", "wb", "wt", "x", "xb", "xt"):
        raise ValueError(f"atomic_open supports write modes only ('w', 'wb', 'x', ...), got {mode!r}")
    if mode.startswith("x"):  # exclusive creation == do not overwrite
        overwrite = False
        mode = "w" + mode[1:]
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    if is_special_file(path):
        with _in_place(Path(path), mode, encoding) as handle:
            yield handle
        return
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())


def atomic_write_bytes(path: PathLike, data: bytes, *, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``Path(path)``."""
    with atomic_open(path, "wb", overwrite=overwrite) as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: PathLike, text: str, *, encoding: str = "utf-8", overwrite: bool = True) -> Path:
    """Write ``text`` to ``path`` atomically; returns ``Path(path)``."""
    with atomic_open(path, "w", encoding=encoding, overwrite=overwrite) as handle:
        handle.write(text)
    return Path(path)


def atomic_torch_save(obj: Any, path: PathLike, *, overwrite: bool = True) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (zip format); returns ``Path(path)``."""
    import torch

    with atomic_open(path, "wb", overwrite=overwrite) as handle:
        torch.save(obj, handle)
    return Path(path)


def atomic_save_safetensors(
    tensors: Mapping[str, Any], path: PathLike, *, metadata: Mapping[str, str] | None = None, overwrite: bool = True
) -> Path:
    """Write a safetensors file atomically (``safetensors.torch.save_file``); returns ``Path(path)``."""
    from safetensors.torch import save_file

    with atomic_path(path, overwrite=overwrite) as tmp:
        save_file(dict(tensors), str(tmp), metadata=dict(metadata) if metadata is not None else None)
        if tmp != Path(path):
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
    return Path(path)


#: Names of the temporaries :func:`atomic_path` creates: ``.<name>.<8 random chars><suffix>``.
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?$")
#: Without working file locks, a temporary this old (seconds) is taken as orphaned.
ORPHAN_AGE_S = 3600.0


def clean_orphaned_temps(folder: PathLike, name: str | None = None) -> list[Path]:
    """Delete the hidden temporaries in ``folder`` left by a writer that was killed; returns them.

    A temporary is ours by its name (``.<name>.<random>.tmp[.ext]``, only those of target ``name`` when
    given) and orphaned when no live writer holds its lock (a killed process releases it). One that is
    still being written, by this process or another, is left alone. Missing folders are fine.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if match is None or (name is not None and match.group("name") != name):
            continue
        path = Path(entry.path)
        with contextlib.suppress(OSError):
            if not entry.is_file(follow_symlinks=False):
                continue
            if _orphaned(path):
                path.unlink()
                removed.append(path)
    return removed


def _orphaned(path: Path) -> bool:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # a live writer holds it
    except OSError:  # no locks on this filesystem: fall back to age
        return time.time() - os.fstat(fd).st_mtime > ORPHAN_AGE_S
    finally:
        os.close(fd)
    return True


def unique_path(path: PathLike) -> Path:
    """``path`` if nothing exists there, else the first free ``stem_1.ext``, ``stem_2.ext``, ...

    Used so outputs never overwrite existing files. The name is free when returned; pair it with
    ``atomic_*(..., overwrite=False)`` to make the final publish fail rather than clobber if another
    writer takes the name in between.
    """
    target = Path(path)
    if not os.path.lexists(target):
        return target
    suffix = "".join(target.suffixes[-1:])
    stem = target.name[: len(target.name) - len(suffix)] if suffix else target.name
    index = 1
    while True:
        candidate = target.with_name(f"{stem}_{index}{suffix}")
        if not os.path.lexists(candidate):
            return candidate
        index += 1


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes (streamed by :func:`hashlib.file_digest`)."""
    import hashlib

    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
