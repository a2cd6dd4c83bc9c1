"""Where face images come from: WebDataset shards or plain folders, read as raw (undecoded) samples.

A *source* lists its *units* (one shard, or one image file / LQ+HQ pair) with their sample counts when
known, and reads the raw samples of one unit as ``(key, {field: bytes})``. Splitting units or samples
over ranks and workers, shuffling and decoding happen in :mod:`daefr.data.dataset`, so every source
gets the same distributed behaviour.

Shard URLs may be local paths, brace patterns (``train-{000000..000009}.tar``), ``pipe:CMD`` and any
fsspec URL (``s3://``, ``gs://``, ``memory://``...); a directory holding a ``manifest.json`` written
by ``daefr shard`` stands for its shards, with exact per-shard counts.
"""

from __future__ import annotations

import abc
import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from daefr.errors import ConfigError
from daefr.utils.images import IMAGE_EXTENSIONS

IMAGE_SUFFIXES = IMAGE_EXTENSIONS  # the same files `daefr restore` and `evaluate` accept
HQ_FIELDS = ("png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "gif", "hq.png", "hq.jpg", "gt.png", "gt.jpg")
LQ_FIELDS = ("lq.png", "lq.jpg", "lq.jpeg", "lq.webp")
MANIFEST_NAME = "manifest.json"
# a compressed shard may expand to this many bytes freely, and beyond that to this many times its size
DECOMPRESS_FREE_BYTES = 64 << 20
DECOMPRESS_MAX_RATIO = 32

RawSample = tuple[str, dict[str, bytes]]


class SourceReadError(Exception):
    """A unit (shard or file) could not be read; counted as corrupt, never fatal on its own."""


@dataclass(frozen=True)
class Unit:
    """One readable piece of a source: a shard URL or an image file (pair); ``count`` if known."""

    name: str
    count: int | None


class Source(abc.ABC):
    """Contract of the ``datasets`` group: a list of units and a reader for each.

    ``read`` yields ``(key, {field: bytes})`` with a WebDataset-style key (no dot in its last path
    part) and an image field named like ``png`` / ``jpg`` (HQ), plus ``lq.png`` and ``hq.png`` when
    ``paired``. ``daefr.testing.datasets.check_source`` checks a source against this contract.
    """

    paired: bool = False

    @abc.abstractmethod
    def units(self) -> list[Unit]:
        """Units in a fixed, deterministic order."""

    @abc.abstractmethod
    def read(self, unit: Unit) -> Iterator[RawSample]:
        """Raw samples of one unit; raises :class:`SourceReadError` when the unit itself is broken."""

    def describe(self) -> str:
        """Short text for messages."""
        return type(self).__name__


# --------------------------------------------------------------------------------------------- shards
def expand_shard_urls(urls: str | Sequence[str]) -> list[Unit]:
    """Shard units from paths, brace patterns, ``::``-joined lists and ``daefr shard`` directories."""
    import braceexpand

    items = [urls] if isinstance(urls, str) else [str(u) for u in urls]
    out: list[Unit] = []
    for item in items:
        for part in item.split("::"):
            part = part.strip()
            if not part:
                continue
            if _is_local(part) and Path(_local_path(part)).is_dir():
                out += _manifest_units(Path(_local_path(part)))
            else:
                out += [Unit(u, None) for u in braceexpand.braceexpand(part)]
    if not out:
        raise ConfigError(f"no shards found in {urls!r}: give a path, a brace pattern or a shard directory")
    return out


def _is_local(url: str) -> bool:
    return url.startswith("file://") or (not url.startswith("pipe:") and "://" not in url)


def _local_path(url: str) -> str:
    return url[len("file://"):] if url.startswith("file://") else url


def _manifest_units(directory: Path) -> list[Unit]:
    manifest = directory / MANIFEST_NAME
    if not manifest.is_file():
        tars = sorted(directory.glob("*.tar"))
        if not tars:
            raise ConfigError(f"{directory} holds neither {MANIFEST_NAME} nor .tar shards; run `daefr shard` first")
        return [Unit(str(t), None) for t in tars]
    try:
        data = json.loads(manifest.read_text())
        return [Unit(str(directory / s["name"]), int(s["count"])) for s in data["shards"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{manifest} is not a valid shard manifest ({exc}); re-run `daefr shard`") from exc


def open_url(url: str) -> IO[bytes]:
    """Open a shard's raw bytes from a local path or any supported URL.

    Open a shard's raw bytes: local path, ``file://``, a ``webdataset.gopen`` scheme (``pipe:``,
    ``http(s)://``, ``gs://``, ``hf://``...) or else any fsspec URL (``s3://``, ``memory://``...).
    """
    if _is_local(url):
        return open(_local_path(url), "rb")
    from webdataset.gopen import gopen, gopen_schemes

    if url.split(":", 1)[0] in gopen_schemes:
        return gopen(url, "rb")  # type: ignore[no-any-return]
    import fsspec

    return fsspec.open(url, "rb").open()  # type: ignore[no-any-return]


class _CountingReader(io.RawIOBase):
    """Passes reads through and counts the bytes (the compressed side of a shard)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw, self.count = raw, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.count += n
        return n

    def close(self) -> None:
        self.raw.close()
        super().close()


class _BoundedDecompression(io.RawIOBase):
    """Decompressed bytes of a shard, refused once they outgrow the compressed bytes read (bomb guard)."""

    def __init__(self, decompressed: IO[bytes], compressed: _CountingReader, name: str) -> None:
        self.inner, self.compressed, self.name, self.count = decompressed, compressed, name, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.inner.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.count += n
        if self.count > max(DECOMPRESS_FREE_BYTES, DECOMPRESS_MAX_RATIO * self.compressed.count):
            raise SourceReadError(
                f"shard {self.name} expands to over {self.count >> 20} MiB from {self.compressed.count >> 10} KiB "
                f"compressed, above the decompression limit ({DECOMPRESS_MAX_RATIO}x the compressed size beyond "
                f"the first {DECOMPRESS_FREE_BYTES >> 20} MiB): a decompression bomb or a broken file; re-shard it"
            )
        return n

    def close(self) -> None:
        self.inner.close()
        self.compressed.close()
        super().close()


def _compression(head: bytes) -> str | None:
    """The compression of a file from its first bytes: "gzip", "bzip2", "xz" or None.

    "gzip", "bzip2" or "xz" from a file's first 10 bytes (full magic numbers: a tar starts with a
    member name, which may begin with "BZh"), or None.
    """
    if head.startswith(b"\x1f\x8b\x08"):
        return "gzip"
    if head[:3] == b"BZh" and head[3:4].isdigit() and head[4:10] in (b"1AY&SY", b"\x17rE8P\x90"):
        return "bzip2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    return None


def open_shard(url: str) -> IO[bytes]:
    """The tar bytes of a shard (``.tar`` or gzip / bzip2 / xz compressed), with a bounded expansion.

    Compressed shards are decompressed here, not by the tar reader, so that a small file that expands
    without limit (a decompression bomb) is stopped with a :class:`SourceReadError` early.
    """
    import bz2
    import gzip
    import lzma

    counting = _CountingReader(open_url(url))
    buffered = io.BufferedReader(counting)
    compression = _compression(buffered.peek(10)[:10])
    if compression is None:
        return buffered
    decompressed: Any = (gzip.GzipFile(fileobj=buffered, mode="rb") if compression == "gzip"
                         else bz2.BZ2File(buffered, "rb") if compression == "bzip2"
                         else lzma.LZMAFile(buffered, "rb"))
    inner = io.BufferedReader(_BoundedDecompression(decompressed, counting, url))
    try:
        nested = _compression(inner.peek(10)[:10])
    except (OSError, EOFError) as exc:
        inner.close()
        raise SourceReadError(f"shard {url} is unreadable or truncated: {type(exc).__name__}: {exc}") from exc
    if nested is not None:
        inner.close()
        raise SourceReadError(f"shard {url} is compressed twice; store tar shards compressed once (or not at all)")
    return inner


def iter_tar_samples(stream: IO[bytes], name: str) -> Iterator[RawSample]:
    """Samples of one tar stream through ``webdataset``'s tar iterators: members grouped by key.

    The key is the member path up to the first dot of its base name; ``__*__`` metadata members are
    skipped. Any failure (not a tar, truncated, duplicate member) is a :class:`SourceReadError`.
    """
    from webdataset.handlers import reraise_exception
    from webdataset.tariterators import group_by_keys, tar_file_iterator

    def files() -> Iterator[dict[str, Any]]:
        for member in tar_file_iterator(stream, handler=reraise_exception):
            member["__url__"] = name
            yield member

    try:
        for sample in group_by_keys(files(), handler=reraise_exception):
            key = sample.pop("__key__")
            yield key, {k: v for k, v in sample.items() if not k.startswith("__")}
    except Exception as exc:  # tar, gzip and OS errors, also as re-raised by webdataset's handlers
        # webdataset appends " @ <stream>" to the message of an error raised while reading a member
        message = str(exc.args[0] if exc.args else exc).split(" @ ")[0]
        if isinstance(exc, SourceReadError):
            raise SourceReadError(message) from None
        raise SourceReadError(f"shard {name} is unreadable or truncated: {type(exc).__name__}: {message}") from exc


class ShardSource(Source):
    """WebDataset tar shards: paths, brace patterns, ``pipe:``, fsspec URLs or a ``daefr shard`` folder."""

    def __init__(self, urls: str | Sequence[str], paired: bool | None = None) -> None:
        self.spec = urls
        self._units = expand_shard_urls(urls)
        self._paired = paired
        local = [u.name for u in self._units if _is_local(u.name)]
        if local and len(local) == len(self._units) and not any(Path(_local_path(n)).exists() for n in local):
            shown = local[0] if len(local) == 1 else f"{local[0]} (and {len(local) - 1} more)"
            raise ConfigError(
                f"data path {shown} does not exist: give a folder of images, a folder written by `daefr shard`, "
                "shard files (a.tar::b.tar, brace patterns) or a URL"
            )

    @property
    def paired(self) -> bool:  # type: ignore[override]
        """True when the shards hold LQ images too (read off the first shard's first sample)."""
        if self._paired is None:
            self._paired = self._detect_paired()
        return self._paired

    def _detect_paired(self) -> bool:
        for unit in self._units[:1]:
            try:
                with open_shard(unit.name) as stream:
                    for _, fields in iter_tar_samples(stream, unit.name):
                        return any(f in fields for f in LQ_FIELDS)
            except SourceReadError:
                return False
        return False

    def units(self) -> list[Unit]:
        """One unit per shard file."""
        return list(self._units)

    def read(self, unit: Unit) -> Iterator[RawSample]:
        """The samples of one shard; an unreadable shard raises :class:`SourceReadError`."""
        try:
            stream = open_shard(unit.name)
        except (OSError, ValueError) as exc:
            raise SourceReadError(f"cannot open shard {unit.name}: {exc}") from exc
        with stream:
            yield from iter_tar_samples(stream, unit.name)

    def describe(self) -> str:
        """The shard spec and how many shards it names, for messages."""
        return f"shards {self.spec!r} ({len(self._units)} shards)"


# -------------------------------------------------------------------------------------------- folders
def list_images(root: Path, include_unusable: bool = False) -> list[Path]:
    """Image files under ``root`` (recursive, hidden names skipped), sorted by relative path.

    ``include_unusable`` also lists entries named like images that are not regular files (folders,
    broken links, symlink loops), so that a caller can report them instead of silently skipping them.
    """
    if not root.is_dir():
        raise ConfigError(f"image folder {root} does not exist or is not a directory")
    found = [
        p for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and (include_unusable or p.is_file())
    ]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def key_for(relative: str) -> str:
    """A WebDataset-safe sample key for a relative path: no extension, no dots, '/' kept."""
    stem = relative.rsplit(".", 1)[0] if "." in relative.rsplit("/", 1)[-1] else relative
    return stem.replace(".", "_").replace(" ", "_")


class FolderSource(Source):
    """A folder of face images (searched recursively); each file is one HQ sample."""

    def __init__(self, root: str | os.PathLike[str], cache_in_memory: bool = False) -> None:
        self.root = Path(root)
        self.files = list_images(self.root)
        if not self.files:
            raise ConfigError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {self.root}")
        self.cache_in_memory = cache_in_memory
        self._cache: dict[str, bytes] = {}

    def units(self) -> list[Unit]:
        """One unit per image file, named by its path relative to the folder."""
        return [Unit(p.relative_to(self.root).as_posix(), 1) for p in self.files]

    def _bytes(self, rel: str) -> bytes:
        if rel in self._cache:
            return self._cache[rel]
        try:
            data = (self.root / rel).read_bytes()
        except OSError as exc:
            raise SourceReadError(f"{rel}: cannot read ({exc.strerror or exc})") from exc
        if self.cache_in_memory:
            self._cache[rel] = data
        return data

    def read(self, unit: Unit) -> Iterator[RawSample]:
        """The one sample of an image file: its key and its bytes under the file's extension."""
        ext = unit.name.rsplit(".", 1)[-1].lower()
        yield key_for(unit.name), {ext: self._bytes(unit.name)}

    def describe(self) -> str:
        """The folder and its image count, for messages."""
        return f"folder {str(self.root)!r} ({len(self.files)} images)"


class PairedFolderSource(Source):
    """A test set with ``lq/`` and ``gt/`` sub-folders holding images of the same names (stems)."""

    paired = True

    def __init__(self, root: str | os.PathLike[str], lq_dir: str = "lq", gt_dir: str = "gt") -> None:
        self.root = Path(root)
        lq_root, gt_root = self.root / lq_dir, self.root / gt_dir
        lq = {key_for(p.relative_to(lq_root).as_posix()): p for p in list_images(lq_root)}
        gt = {key_for(p.relative_to(gt_root).as_posix()): p for p in list_images(gt_root)}
        missing = sorted(set(lq) ^ set(gt))
        if missing:
            raise ConfigError(
                f"{self.root}: {len(missing)} images have no partner in {lq_dir}/ and {gt_dir}/ "
                f"(e.g. {missing[0]!r}); every LQ image needs a GT image with the same name"
            )
        self.pairs = {key: (lq[key], gt[key]) for key in sorted(lq)}

    def units(self) -> list[Unit]:
        """One unit per LQ/GT pair, named by the shared stem."""
        return [Unit(key, 1) for key in self.pairs]

    def read(self, unit: Unit) -> Iterator[RawSample]:
        """The one sample of a pair: its key with the LQ and GT bytes."""
        key = unit.name
        lq_path, gt_path = self.pairs[key]
        try:
            fields = {
                "lq." + lq_path.suffix.lower().lstrip("."): lq_path.read_bytes(),
                "hq." + gt_path.suffix.lower().lstrip("."): gt_path.read_bytes(),
            }
        except OSError as exc:
            raise SourceReadError(f"{key}: cannot read ({exc.strerror or exc})") from exc
        yield key, fields

    def describe(self) -> str:
        """The folder and its pair count, for messages."""
        return f"paired folder {str(self.root)!r} ({len(self.pairs)} pairs)"


def resolve_source(spec: Any) -> Source:
    """A :class:`Source` from a path / URL string, a ``datasets`` registry spec or a Source object."""
    if isinstance(spec, Source):
        return spec
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if isinstance(spec, str):
        if _is_local(spec) and Path(spec).is_dir():
            path = Path(spec)
            if (path / MANIFEST_NAME).is_file() or any(path.glob("*.tar")):
                return ShardSource(spec)
            if (path / "lq").is_dir() and (path / "gt").is_dir():
                return PairedFolderSource(path)
            return FolderSource(path)
        return ShardSource(spec)
    if isinstance(spec, (list, tuple)):
        return ShardSource([str(s) for s in spec])
    from daefr.registry import REGISTRY

    built = REGISTRY.build("datasets", spec)
    if not isinstance(built, Source):
        raise ConfigError(f"datasets spec {spec!r} built a {type(built).__name__}, not a daefr.data Source")
    return built
