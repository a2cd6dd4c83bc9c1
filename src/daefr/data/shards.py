"""Writing WebDataset shards from a folder (or list) of face images, reproducibly.

Each sample is ``<key>.png`` (or the source bytes under their own extension) plus ``<key>.json`` with
its metadata; paired sets (``lq/`` + ``gt/``) store ``<key>.lq.png`` and ``<key>.hq.png``. Images are
decoded, checked and (optionally) resized in a process pool; one ``webdataset.TarWriter`` appends them in
input order, so the same input always gives byte-identical shards (fixed tar headers, sorted inputs, no
timestamps).
A ``manifest.json`` lists the shards (name, samples, bytes, sha256) and the skipped files with reasons.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from daefr.data.decode import resize_center_crop
from daefr.data.sources import IMAGE_SUFFIXES, MANIFEST_NAME, key_for, list_images
from daefr.errors import ConfigError, ImageReadError
from daefr.utils.io import file_sha256

MANIFEST_FORMAT = "daefr-shards/1"
TAR_BLOCK = 512
TAR_RECORD = 20 * TAR_BLOCK  # tar writers pad the archive to whole records
_SHARD_NAME = re.compile(r"[A-Za-z0-9_-]+-[0-9]{6}\.tar")  # what we write: {prefix}-NNNNNN.tar


@dataclass(frozen=True)
class ShardOptions:
    """How to write shards; ``size`` None keeps the source size, ``store`` is "png" or "source"."""

    size: int | None = None
    store: str = "png"
    maxcount: int = 1000
    maxsize: int = 1 << 30
    min_size: int = 16
    prefix: str = "shard"
    workers: int = 1

    def validate(self) -> None:
        """Raise :class:`ConfigError` for an unknown ``store`` or a resize asked of ``store: source``."""
        if self.store not in ("png", "source"):
            raise ConfigError(f"--store must be 'png' or 'source', got {self.store!r}")
        if self.store == "source" and self.size is not None:
            raise ConfigError("--store source keeps the original bytes and cannot resize; drop --size or use png")
        if self.maxcount < 1 or self.maxsize < 1:
            raise ConfigError("--maxcount and --maxsize must be positive")
        if self.size is not None and self.size < self.min_size:
            raise ConfigError(f"--size {self.size} is below --min-size {self.min_size}")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.prefix):
            raise ConfigError(f"--prefix {self.prefix!r} must be a plain name of letters, digits, '_' and '-'")


@dataclass(frozen=True)
class InputItem:
    """One sample to write: its key, and the file(s) it comes from (relative name for messages)."""

    key: str
    name: str
    paths: dict[str, str]  # role ("hq" / "lq") -> absolute path


@dataclass
class Processed:
    """A processed sample: tar members (suffix -> bytes), or the reason it was skipped."""

    key: str
    name: str
    members: dict[str, bytes] = field(default_factory=dict)
    reason: str | None = None


# ------------------------------------------------------------------------------------------ inputs
def collect_inputs(src: Path, paired: bool | None = None) -> tuple[list[InputItem], list[dict[str, str]]]:
    """Inputs from a folder (recursive; ``lq/`` + ``gt/`` when paired) or a list file (one path a line).

    Returns the items in a stable order, with unique keys, plus the entries that cannot be used at all
    (e.g. an LQ image without a GT partner).
    """
    if src.is_file():
        return _unique_keys(_from_list(src)), []
    if not src.is_dir():
        raise ConfigError(f"{src} is neither a folder of images nor a list file")
    if paired is None:
        paired = (src / "lq").is_dir() and (src / "gt").is_dir()
    if not paired:
        files = list_images(src, include_unusable=True)
        items = [InputItem(key_for(p.relative_to(src).as_posix()), p.relative_to(src).as_posix(),
                           {"hq": str(p)}) for p in files]
        if not items:
            raise ConfigError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {src}")
        return _unique_keys(items), []
    lq = {key_for(p.relative_to(src / "lq").as_posix()): p for p in list_images(src / "lq", True)}
    gt = {key_for(p.relative_to(src / "gt").as_posix()): p for p in list_images(src / "gt", True)}
    skipped = [{"file": f"lq/{lq[k].relative_to(src / 'lq').as_posix()}", "reason": "no GT image with this name"}
               for k in sorted(set(lq) - set(gt))]
    skipped += [{"file": f"gt/{gt[k].relative_to(src / 'gt').as_posix()}", "reason": "no LQ image with this name"}
                for k in sorted(set(gt) - set(lq))]
    items = [InputItem(k, f"gt/{gt[k].relative_to(src / 'gt').as_posix()}", {"hq": str(gt[k]), "lq": str(lq[k])})
             for k in sorted(set(lq) & set(gt))]
    return items, skipped


def _from_list(list_file: Path) -> list[InputItem]:
    base = list_file.parent
    items = []
    for line in list_file.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        path = Path(line) if Path(line).is_absolute() else base / line
        items.append(InputItem(key_for(line.lstrip("/")), line, {"hq": str(path)}))
    if not items:
        raise ConfigError(f"list file {list_file} names no images")
    return items


def _unique_keys(items: list[InputItem]) -> list[InputItem]:
    """Make keys unique deterministically (``a.b.png`` and ``a_b.png`` both map to ``a_b``)."""
    seen: set[str] = set()
    out = []
    for item in items:
        key, n = item.key, 1
        while key in seen:
            key, n = f"{item.key}_{n}", n + 1
        seen.add(key)
        out.append(item if key == item.key else InputItem(key, item.name, item.paths))
    return out


# -------------------------------------------------------------------------------------- processing
def process_item(item: InputItem, options: ShardOptions) -> Processed:
    """Read, check and encode one sample (runs in a worker process); never raises on bad input."""
    try:
        members: dict[str, bytes] = {}
        meta: dict[str, Any] = {"key": item.key, "source": item.name}
        for role in sorted(item.paths):
            suffix, info = _encode(item.paths[role], options)
            members[suffix if len(item.paths) == 1 else f"{role}.{suffix}"] = info.pop("data")
            meta.update({f"{role}_{k}" if len(item.paths) > 1 else k: v for k, v in info.items()})
        members["json"] = json.dumps(meta, sort_keys=True).encode()
        return Processed(item.key, item.name, members)
    except ImageReadError as exc:
        return Processed(item.key, item.name, reason=str(exc))


def _encode(path: str, options: ShardOptions) -> tuple[str, dict[str, Any]]:
    from PIL import Image as PILImage

    from daefr.utils.images import read_image

    try:
        rgb = read_image(path, min_size=options.min_size)
        data = Path(path).read_bytes() if options.store == "source" else b""
        with PILImage.open(path) as probe:  # header only: the source mode and format for the metadata
            source_mode, source_format = probe.mode, (probe.format or "").lower()
    except ImageReadError as exc:
        message = str(exc)
        raise ImageReadError(message[len(path) + 2:] if message.startswith(f"{path}: ") else message) from None
    except OSError as exc:
        raise ImageReadError(f"cannot read ({exc.strerror or type(exc).__name__})") from None
    height, width = rgb.shape[:2]
    info: dict[str, Any] = {"orig_width": width, "orig_height": height, "orig_mode": source_mode}
    if options.store == "source":
        suffix = {"jpeg": "jpg"}.get(source_format, source_format) or Path(path).suffix.lower().lstrip(".")
        return suffix, {**info, "width": width, "height": height, "data": data}
    image = resize_center_crop(PILImage.fromarray(rgb), options.size)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6)
    return "png", {**info, "width": image.size[0], "height": image.size[1], "data": buffer.getvalue()}


def _process_all(items: list[InputItem], options: ShardOptions) -> Iterator[Processed]:
    if options.workers <= 1 or len(items) < 2:
        for item in items:
            yield process_item(item, options)
        return
    with ProcessPoolExecutor(max_workers=options.workers) as pool:
        # map keeps the input order, so the shards do not depend on which worker finished first
        yield from pool.map(process_item, items, [options] * len(items), chunksize=8)


# ---------------------------------------------------------------------------------------- writing
def _tar_member_size(payload: int) -> int:
    return TAR_BLOCK + (payload + TAR_BLOCK - 1) // TAR_BLOCK * TAR_BLOCK


class _ShardFile:
    """One tar shard, written by ``webdataset.TarWriter`` to a temporary file and renamed when complete.

    Fixed member metadata (mtime 0, no owner names, mode 0644, PAX headers) makes the bytes depend on
    the samples only.
    """

    def __init__(self, out_dir: Path, name: str) -> None:
        from webdataset import TarWriter

        from daefr.utils.io import atomic_open

        self.final = out_dir / name
        self._writer = atomic_open(self.final, "wb")
        self.handle = self._writer.__enter__()
        # mtime must be an int: a float mtime gets a PAX header in front of every member
        self.tar = TarWriter(self.handle, user="", group="", mode=0o644, mtime=0, encoder=False,
                             format="PAX_FORMAT")
        self.count = 0
        self.size = 2 * TAR_BLOCK  # end-of-archive blocks

    def add(self, sample: Processed) -> None:
        self.tar.write({"__key__": sample.key, **sample.members})  # members in sorted order
        self.size += sum(_tar_member_size(len(data)) for data in sample.members.values())
        self.count += 1

    def close(self) -> dict[str, Any]:
        self.tar.close()
        self._writer.__exit__(None, None, None)
        return {"name": self.final.name, "count": self.count, "bytes": self.final.stat().st_size,
                "sha256": file_sha256(self.final)}

    def abort(self) -> None:
        self.tar.close()
        error = RuntimeError("shard writing aborted")
        self._writer.__exit__(type(error), error, None)  # removes the temporary file


def _on_disk(size: int) -> int:
    return (size + TAR_RECORD - 1) // TAR_RECORD * TAR_RECORD


def write_shards(
    src: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    options: ShardOptions | None = None,
    paired: bool | None = None,
    progress: Callable[[Iterable[Processed], int], Iterable[Processed]] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Shard ``src`` into ``out_dir``; returns the manifest (also written to ``out_dir/manifest.json``).

    ``progress`` wraps the stream of processed samples (e.g. a tqdm bar); it gets the total as well.
    ``out_dir`` must be empty or hold only shards of an earlier run with the same prefix (listed by
    our manifest); ``force`` writes beside other files, which are never deleted.
    """
    options = options or ShardOptions()
    options.validate()
    src_path, out = Path(src), Path(out_dir)
    items, skipped = collect_inputs(src_path, paired)
    is_paired = any("lq" in item.paths for item in items)
    previous = _check_output_folder(out, options.prefix, force)
    out.mkdir(parents=True, exist_ok=True)
    stream: Iterable[Processed] = _process_all(items, options)
    if progress is not None:
        stream = progress(stream, len(items))
    shards: list[dict[str, Any]] = []
    current: _ShardFile | None = None
    try:
        for sample in stream:
            if sample.reason is not None:
                skipped.append({"file": sample.name, "reason": sample.reason})
                continue
            size = sum(_tar_member_size(len(d)) for d in sample.members.values())
            if current is not None and (
                current.count >= options.maxcount or _on_disk(current.size + size) > options.maxsize
            ):
                shards.append(current.close())
                current = None
            if current is None:
                current = _ShardFile(out, f"{options.prefix}-{len(shards):06d}.tar")
            current.add(sample)
        if current is not None:
            shards.append(current.close())
            current = None
    finally:
        if current is not None:
            current.abort()
    for name in previous - {s["name"] for s in shards}:
        (out / name).unlink(missing_ok=True)  # our stale shards of an earlier, larger run (checked above)
    manifest = {
        "format": MANIFEST_FORMAT,
        "source": str(src_path),
        "paired": is_paired,
        "options": {k: v for k, v in asdict(options).items() if k != "workers"},
        "total": sum(s["count"] for s in shards),
        "pattern": _brace_pattern(options.prefix, len(shards)),
        "shards": shards,
        "skipped": sorted(skipped, key=lambda s: s["file"]),
    }
    _write_json_atomic(out / MANIFEST_NAME, manifest)
    return manifest


def _our_manifest_names(out: Path) -> set[str] | None:
    """Shard names listed by a manifest that ``daefr shard`` wrote in ``out`` (None: no such manifest).

    Only plain file names (no folders, no ``..``, no absolute paths) count; anything else in a manifest
    is ignored, so a crafted manifest can never point outside the folder.
    """
    try:
        data = json.loads((out / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT or not isinstance(data.get("shards"), list):
        return None
    names = {s.get("name") for s in data["shards"] if isinstance(s, dict)}
    return {n for n in names if isinstance(n, str) and _SHARD_NAME.fullmatch(n)}


def _is_shard_file(name: str) -> bool:
    return name.endswith(".tar") or ".tar." in name or name.endswith(".tgz")


def _check_output_folder(out: Path, prefix: str, force: bool) -> set[str]:
    """Refuse a folder holding shards this command would not own; returns our stale shards to remove.

    Our own shards are ``{prefix}-NNNNNN.tar`` files listed by a ``daefr shard`` manifest in ``out``;
    everything else (other prefixes, other tools' shards, a foreign manifest) is someone else's: refused
    unless ``force``, and even then never deleted (only our own names are replaced).
    """
    if not out.exists():
        return set()
    if not out.is_dir():
        raise ConfigError(f"output {out} exists and is not a folder; give a folder for the shards")
    listed = _our_manifest_names(out)
    ours = {n for n in (listed or set()) if re.fullmatch(rf"{re.escape(prefix)}-[0-9]{{6}}\.tar", n)}
    foreign_manifest = (out / MANIFEST_NAME).exists() and listed is None
    others = sorted(p.name for p in out.iterdir() if _is_shard_file(p.name) and p.name not in ours)
    if (others or foreign_manifest) and not force:
        what = f"{len(others)} shard files it did not write with --prefix {prefix} (e.g. {others[0]})" if others \
            else f"a {MANIFEST_NAME} that `daefr shard` did not write"
        raise ConfigError(
            f"{out} already holds {what}; write into an empty folder or one holding only this prefix's shards, "
            f"or pass --force to write {prefix}-*.tar beside them (other files are kept, {MANIFEST_NAME} is replaced)"
        )
    # only regular files directly inside out (never a symlink, never followed elsewhere)
    return {n for n in ours if (out / n).is_file() and not (out / n).is_symlink()}


def _brace_pattern(prefix: str, n: int) -> str:
    if n <= 1:
        return f"{prefix}-000000.tar"
    return f"{prefix}-{{000000..{n - 1:06d}}}.tar"


def _write_json_atomic(path: Path, data: Any) -> None:
    from daefr.utils.io import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
