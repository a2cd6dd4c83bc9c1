"""Weights by name, ``hf://`` URI or URL: one table of known files, the caches they live in, downloads.

Specs (see docs/weights.md):

* a short name from :data:`daefr.utils.known_weights.KNOWN_WEIGHTS` (``daefr``, ``vgg16``, ...);
* ``hf://OWNER/REPO/FILE[@REVISION]``: fetched with :func:`huggingface_hub.hf_hub_download` into the
  standard Hub cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``), with its tokens and revisions;
* ``https://...[#sha256=HEX]``: fetched with :func:`torch.hub.download_url_to_file` into torch.hub's
  checkpoint cache (``$TORCH_HOME/hub/checkpoints``).

A cached file is used without touching the network. Every file is hash-checked on first use in a
process: against the sha256 the table records (or its torch.hub-style prefix), the Hub blob name (an
LFS sha256 or a git blob sha1), or, for a URL with no published hash, the sha256 recorded next to the
file when it was downloaded. ``HF_HUB_OFFLINE=1`` turns every download off; downloads have timeouts.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from daefr.errors import CheckpointError, WeightsNotFoundError
from daefr.utils.known_weights import HF_SCHEME, KNOWN_WEIGHTS, KnownWeights

DEFAULT_TIMEOUT_S = 10.0
TIMEOUT_ENV = "DAEFR_DOWNLOAD_TIMEOUT"
_TRUE = {"1", "on", "yes", "true"}
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SHA1 = re.compile(r"[0-9a-f]{40}")
_TORCH_HUB_HASH = re.compile(r"-([a-f0-9]{6,})\.")


@dataclass(frozen=True)
class HubFile:
    """A file in a Hugging Face Hub repository."""

    repo_id: str
    filename: str
    revision: str | None = None

    @property
    def uri(self) -> str:
        """``hf://OWNER/REPO/FILE[@REVISION]``."""
        rev = f"@{self.revision}" if self.revision else ""
        return f"{HF_SCHEME}{self.repo_id}/{self.filename}{rev}"


# ----- environment -------------------------------------------------------------------------------
def offline() -> bool:
    """Whether downloads are off (``HF_HUB_OFFLINE``, read at call time and as huggingface_hub read it)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE:
        return True
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - a declared dependency
        return False
    return bool(constants.HF_HUB_OFFLINE)


def timeout_s() -> float:
    """Network timeout in seconds (``$DAEFR_DOWNLOAD_TIMEOUT``, default 10)."""
    try:
        return max(0.1, float(os.environ.get(TIMEOUT_ENV, "") or DEFAULT_TIMEOUT_S))
    except ValueError:
        return DEFAULT_TIMEOUT_S


def hub_cache_dir() -> Path:
    """The Hub cache: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def url_cache_dir() -> Path:
    """torch.hub's checkpoint cache (``$TORCH_HOME/hub/checkpoints``), where URL downloads go."""
    from daefr.utils.weights import torch_hub_checkpoint_dir

    return torch_hub_checkpoint_dir()


# ----- specs -------------------------------------------------------------------------------------
def parse_hf_uri(spec: str) -> HubFile:
    """``hf://OWNER/REPO/FILE[@REVISION]`` -> :class:`HubFile` (FILE may contain folders)."""
    parts = spec[len(HF_SCHEME):].split("/", 2)
    if not spec.startswith(HF_SCHEME) or len(parts) != 3 or not all(parts):
        raise WeightsNotFoundError(f"{spec!r} is not a Hub URI: expected hf://OWNER/REPO/FILE[@REVISION]")
    owner, repo, file = parts
    revision: str | None = None
    if "@" in file:
        file, revision = file.rsplit("@", 1)
        if not file or not revision:
            raise WeightsNotFoundError(f"{spec!r}: empty file or revision around '@' (hf://OWNER/REPO/FILE@REVISION)")
    return HubFile(f"{owner}/{repo}", file, revision)


def is_url(spec: str) -> bool:
    """Whether ``spec`` is an http(s) URL."""
    return spec.startswith(("https://", "http://"))


def is_remote_spec(spec: str) -> bool:
    """Whether ``spec`` names weights by short name, ``hf://`` URI or URL (rather than a path)."""
    return spec in KNOWN_WEIGHTS or spec.startswith(HF_SCHEME) or is_url(spec)


def known_for_file(file_name: str) -> KnownWeights | None:
    """The table entry whose conventional file name is ``file_name``."""
    return next((w for w in KNOWN_WEIGHTS.values() if w.file_name == file_name), None)


def download_hint(spec: str) -> str:
    """How to get ``spec`` onto this machine, for error messages."""
    return (f"run `daefr weights download {spec}` where there is network (then copy the cache here), "
            "or pass the path of a local file instead")


# ----- files and hashes ---------------------------------------------------------------------------
def require_regular_file(path: Path, what: str) -> Path:
    """``path`` if it is a regular file (symlinks followed); one-line errors for anything else."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise WeightsNotFoundError(f"{what}: file {str(path)!r} not found") from None
    except OSError as exc:
        raise CheckpointError(f"{what}: cannot read {str(path)!r} ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode):
        kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "not a regular file")
        raise CheckpointError(f"{what}: {str(path)!r} is {kind}, not a weights file; pass the weights file itself")
    return path


_VERIFIED: dict[tuple[str, int, int, str], bool] = {}


def file_digest(path: Path, algorithm: str = "sha256", git_blob: bool = False) -> str:
    r"""Hex digest of a file (``git_blob``: git's ``blob <size>\0`` header first, as Hub etags of small files)."""
    h = hashlib.new(algorithm)
    if git_blob:
        h.update(b"blob %d\0" % path.stat().st_size)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_file(path: Path, expected: str, what: str, spec: str, git_blob: bool = False) -> None:
    """Check ``path`` against ``expected`` (a full sha256/sha1 hex or a prefix); cached per (file, size, mtime)."""
    expected = expected.lower()
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, expected)
    if _VERIFIED.get(key):
        return
    algorithm = "sha1" if git_blob else "sha256"
    digest = file_digest(path, algorithm, git_blob=git_blob)
    if not digest.startswith(expected):
        raise CheckpointError(
            f"{what}: file {str(path)!r} is corrupted or not the expected file ({algorithm} {digest[:16]}..., "
            f"expected {expected[:16]}...); run `daefr weights download {spec} --force` to fetch it again"
        )
    _VERIFIED[key] = True


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _expected_hash(url: str, known: KnownWeights | None) -> str | None:
    fragment = urlsplit(url).fragment
    if fragment.startswith("sha256="):
        return fragment[len("sha256="):].lower()
    if known is not None and (known.sha256 or known.sha256_prefix):
        return known.sha256 or known.sha256_prefix
    match = _TORCH_HUB_HASH.search(Path(urlsplit(url).path).name)
    return match.group(1) if match else None


# ----- the Hub ----------------------------------------------------------------------------------
def _verify_hub_blob(path: Path, what: str, spec: str, known: KnownWeights | None) -> None:
    """Check a Hub cache file against its blob name (LFS sha256 or git sha1) and the table's sha256."""
    blob = Path(os.path.realpath(path)).name
    if known is not None and known.sha256:
        verify_file(path, known.sha256, what, spec)
    elif _SHA256.fullmatch(blob):
        verify_file(path, blob, what, spec)
    elif _SHA1.fullmatch(blob):
        verify_file(path, blob, what, spec, git_blob=True)


def cached_hub_file(file: HubFile) -> Path | None:
    """The cached copy of ``file`` (no network), or ``None``."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(file.repo_id, file.filename, cache_dir=str(hub_cache_dir()),
                                   revision=file.revision or "main")
    return Path(found) if isinstance(found, str) else None


def fetch_hub_file(file: HubFile, what: str, spec: str, *, force: bool = False,
                   known: KnownWeights | None = None) -> Path:
    """The local path of ``file``: from the cache, else downloaded (unless offline); hash-checked."""
    cached = None if force else cached_hub_file(file)
    if cached is not None:
        require_regular_file(cached, what)  # before hashing: reading a FIFO would block
        _verify_hub_blob(cached, what, spec, known)
        return cached
    if offline():
        raise WeightsNotFoundError(
            f"{what}: {spec!r} ({file.uri}) is not in the Hub cache {str(hub_cache_dir())!r} and HF_HUB_OFFLINE "
            f"is set; {download_hint(spec)}"
        )
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    endpoint = os.environ.get("HF_ENDPOINT") or None
    try:
        # One metadata request first, without retries: hf_hub_download retries unreachable hosts with
        # a back-off (about half a minute) before it gives up; this fails within the timeout instead.
        get_hf_file_metadata(hf_hub_url(file.repo_id, file.filename, revision=file.revision, endpoint=endpoint),
                             timeout=timeout_s())
        local = hf_hub_download(file.repo_id, file.filename, revision=file.revision, cache_dir=str(hub_cache_dir()),
                                etag_timeout=timeout_s(), force_download=force, endpoint=endpoint)
    except Exception as exc:  # network, auth, missing repo/file/revision: all one line
        raise WeightsNotFoundError(
            f"{what}: cannot download {file.uri}: {type(exc).__name__}: {_first_line(exc)}; {download_hint(spec)}"
        ) from None
    path = require_regular_file(Path(str(local)), what)
    _verify_hub_blob(path, what, spec, known)
    return path


def remote_size(file: HubFile) -> int | None:
    """Size in bytes of ``file`` on the Hub (one metadata request with the timeout), ``None`` if unknown."""
    if offline():
        return None
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    endpoint = os.environ.get("HF_ENDPOINT") or None
    try:
        meta = get_hf_file_metadata(hf_hub_url(file.repo_id, file.filename, revision=file.revision, endpoint=endpoint),
                                    timeout=timeout_s())
    except Exception:  # unreachable, missing or gated: the listing just shows no size
        return None
    return int(meta.size) if meta.size is not None else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else "no details"


# ----- plain URLs --------------------------------------------------------------------------------
@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """torch.hub's urlopen has no timeout argument; bound it through the default socket timeout."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def url_cache_path(url: str, known: KnownWeights | None = None) -> Path:
    """Where ``url`` is cached: torch.hub's convention, the URL's file name in its checkpoint folder."""
    name = (known.cache_name if known is not None else None) or Path(urlsplit(url).path).name
    if not name:
        raise WeightsNotFoundError(f"{url!r}: the URL names no file")
    return url_cache_dir() / name


def fetch_url(url: str, what: str, spec: str, *, force: bool = False, known: KnownWeights | None = None) -> Path:
    """The cached download of ``url`` (torch.hub's cache); hash-checked; downloaded unless offline."""
    dest = url_cache_path(url, known)
    expected = _expected_hash(url, known)
    if dest.exists() and not force:
        require_regular_file(dest, what)
        recorded = _sidecar(dest).read_text().strip() if _sidecar(dest).is_file() else None
        if expected or recorded:
            verify_file(dest, str(expected or recorded), what, spec)
        return dest
    if offline():
        raise WeightsNotFoundError(
            f"{what}: {spec!r} is not in the cache {str(dest.parent)!r} and HF_HUB_OFFLINE is set; {download_hint(spec)}"
        )
    import torch.hub

    dest.parent.mkdir(parents=True, exist_ok=True)
    # Write under a temporary name and verify before it takes the cached name (torch.hub also uses a
    # temporary file, but checks only a hash prefix).
    partial = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    try:
        with _socket_timeout(timeout_s()):
            torch.hub.download_url_to_file(urlsplit(url)._replace(fragment="").geturl(), str(partial),
                                           progress=os.isatty(2))
        digest = file_digest(partial)
        if expected and not digest.startswith(expected):
            raise CheckpointError(
                f"{what}: download of {url!r} has sha256 {digest[:16]}..., expected {expected[:16]}...; "
                "the source changed or the transfer was corrupted"
            )
        os.replace(partial, dest)
        if not expected:
            _write_atomic(_sidecar(dest), digest + "\n")
    except CheckpointError:
        raise
    except Exception as exc:
        raise WeightsNotFoundError(
            f"{what}: cannot download {url}: {type(exc).__name__}: {_first_line(exc)}; {download_hint(spec)}"
        ) from None
    finally:
        partial.unlink(missing_ok=True)
    return dest


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ----- names -------------------------------------------------------------------------------------
def cached_path(known: KnownWeights) -> Path | None:
    """Where ``known`` is cached (no network, no hash check), or ``None``."""
    if known.hf_repo and known.hf_file:
        return cached_hub_file(HubFile(known.hf_repo, known.hf_file))
    dest = url_cache_path(str(known.url), known)
    return dest if dest.is_file() else None


def fetch_known(known: KnownWeights, *, force: bool = False, what: str | None = None) -> Path:
    """The local file of a table entry: ``$DAEFR_WEIGHTS_DIR/<file name>``, the cache, else a download."""
    from daefr.utils.weights import weights_dir

    label = what or known.what
    folder = weights_dir()
    if not force and folder is not None and known.file_name and os.path.lexists(folder / known.file_name):
        local = require_regular_file(folder / known.file_name, label)
        if known.sha256 or known.sha256_prefix:
            verify_file(local, str(known.sha256 or known.sha256_prefix), label, known.name)
        return local
    if known.hf_repo and known.hf_file:
        return fetch_hub_file(HubFile(known.hf_repo, known.hf_file), label, known.name, force=force, known=known)
    return fetch_url(str(known.url), label, known.name, force=force, known=known)


def fetch(spec: str, *, force: bool = False, what: str | None = None) -> Path:
    """Resolve a short name, ``hf://`` URI or URL to a local, hash-checked file (downloading if needed)."""
    if spec in KNOWN_WEIGHTS:
        return fetch_known(KNOWN_WEIGHTS[spec], force=force, what=what)
    label = what or "weights"
    if spec.startswith(HF_SCHEME):
        return fetch_hub_file(parse_hf_uri(spec), label, spec, force=force)
    if is_url(spec):
        return fetch_url(spec, label, spec, force=force)
    raise WeightsNotFoundError(f"{label}: {spec!r} is not a known weights name ({', '.join(KNOWN_WEIGHTS)}), "
                               "an hf:// URI or a URL")
