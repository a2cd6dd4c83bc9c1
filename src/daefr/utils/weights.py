"""Locate and read pretrained weight files: by path, short name, ``hf://`` URI or URL.

Every component that needs weights takes a *spec*: a local path (as always), a short name from
:data:`daefr.utils.hub.KNOWN_WEIGHTS` (``daefr``, ``vgg16``, ...), ``hf://OWNER/REPO/FILE[@REVISION]``
or an ``https://`` URL; :func:`resolve_weights_spec` turns any of them into a local, regular file
(names and URIs are fetched into the standard caches on first use, hash-checked, never when
``HF_HUB_OFFLINE`` is set; see :mod:`daefr.utils.hub`). When no spec is given, the file is looked up by
its conventional name in ``$DAEFR_WEIGHTS_DIR``, in the torch.hub checkpoint folder and in the cache of
the known weights of that name, without any network access. Errors are one line saying what is
missing and how to get it (``daefr weights download NAME``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from daefr.errors import CheckpointError, WeightsNotFoundError
from daefr.utils import hub

WEIGHTS_DIR_ENV = "DAEFR_WEIGHTS_DIR"


def weights_dir() -> Path | None:
    """The folder named by ``$DAEFR_WEIGHTS_DIR``, or ``None`` when the variable is unset/empty."""
    value = os.environ.get(WEIGHTS_DIR_ENV, "").strip()
    return Path(value).expanduser() if value else None


def torch_hub_checkpoint_dir() -> Path:
    """torch.hub's checkpoint cache (``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch``)."""
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch"
    )
    return Path(torch_home) / "hub" / "checkpoints"


def resolve_weights_spec(spec: str | os.PathLike[str], what: str = "weights") -> Path:
    """A local, regular file for a path, short name, ``hf://`` URI or URL (downloaded when needed).

    A file that exists wins over a name of the same spelling (a folder does not). The one function to wrap any place
    that takes weights: ``path = resolve_weights_spec(path, "restorer weights")``.
    """
    text = os.fspath(spec)
    if isinstance(text, bytes):  # os.PathLike[bytes] never reaches here in practice
        text = text.decode()
    candidate = Path(text).expanduser()
    if hub.is_remote_spec(text) and (not os.path.lexists(candidate) or candidate.is_dir()):
        return hub.fetch(text, what=what)  # a folder named like a known name is not a weights file
    if not os.path.lexists(candidate):
        raise WeightsNotFoundError(f"{what}: file {text!r} not found{_name_hint(text)}")
    return hub.require_regular_file(candidate, what)


def _name_hint(text: str) -> str:
    """Suggest a known name when ``text`` looks like a mistyped one (no folder, no suffix)."""
    if "/" in text or os.sep in text or Path(text).suffix:
        return ""
    import difflib

    close = difflib.get_close_matches(text, list(hub.KNOWN_WEIGHTS), n=2, cutoff=0.6)
    if close:
        return f"; did you mean the name {' or '.join(close)}? (`daefr weights list`)"
    return f"; known names: {', '.join(hub.KNOWN_WEIGHTS)}"


def resolve_weights(
    path: str | os.PathLike[str] | None,
    default_name: str,
    what: str,
    source: str,
    search_torch_hub: bool = False,
) -> Path:
    """Return an existing weights file for ``path`` (a spec) or, if none, for ``default_name``.

    ``path`` may be a file, a folder holding ``default_name``, a short name, an ``hf://`` URI or a URL.
    Without it, ``default_name`` is searched in ``$DAEFR_WEIGHTS_DIR``, the torch.hub cache (when
    ``search_torch_hub``) and the cache of the known weights with that file name (never downloaded).
    ``what`` describes the file and ``source`` where to get it; both go into error messages.
    """
    if path is not None and str(path) != "":
        text = os.fspath(path)
        candidate = Path(text).expanduser()
        remote = isinstance(text, str) and hub.is_remote_spec(text)
        if remote and (not os.path.lexists(candidate)
                       or (candidate.is_dir() and not os.path.lexists(candidate / default_name))):
            return hub.fetch(str(text), what=what)
        if candidate.is_dir():
            inner = candidate / default_name
            if not os.path.lexists(inner):
                raise WeightsNotFoundError(
                    f"{what}: folder {str(candidate)!r} has no {default_name!r}. Download it from {source} "
                    "and put it there, or pass the file's path."
                )
            candidate = inner
        if os.path.lexists(candidate):
            return hub.require_regular_file(candidate, what)
        raise WeightsNotFoundError(
            f"{what}: file {str(candidate)!r} not found. Download {default_name!r} from {source} "
            f"and pass its path (or put it in ${WEIGHTS_DIR_ENV}){_known_hint(default_name)}."
        )
    searched: list[Path] = []
    folder = weights_dir()
    if folder is not None:
        searched.append(folder / default_name)
    if search_torch_hub:
        searched.append(torch_hub_checkpoint_dir() / default_name)
    for candidate in searched:
        if os.path.lexists(candidate):
            return hub.require_regular_file(candidate, what)
    known = hub.known_for_file(default_name)
    if known is not None:
        cached = hub.cached_path(known)
        if cached is not None:
            return hub.fetch_known(known, what=what)  # hash-checked, no network: it is cached
    where = "searched " + ", ".join(repr(str(p)) for p in searched) if searched else "nowhere to search"
    if folder is None:
        where += f"; ${WEIGHTS_DIR_ENV} is not set"
    raise WeightsNotFoundError(
        f"{what}: file {default_name!r} not found ({where}). Download it from {source} and put "
        f"it in the folder named by ${WEIGHTS_DIR_ENV}, or pass its path explicitly{_known_hint(default_name)}."
    )


def _known_hint(default_name: str) -> str:
    known = hub.known_for_file(default_name)
    return f", or run `daefr weights download {known.name}`" if known is not None else ""


def load_state_dict_file(path: str | os.PathLike[str], nested_keys: Sequence[str] = ("state_dict",)) -> dict[str, Any]:
    """Read a ``.pth``/``.pt``/``.ckpt`` (weights-only unpickling) or ``.safetensors`` state dict.

    If the file holds a dict with one of ``nested_keys`` (e.g. a Lightning checkpoint's
    ``state_dict``), that inner dict is returned.
    """
    import torch

    file = Path(path)
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            data: Any = load_file(str(file), device="cpu")
        else:
            data = torch.load(str(file), map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise WeightsNotFoundError(f"weights file {str(file)!r} not found") from exc
    except Exception as exc:  # corrupt, truncated or unsafe pickle
        raise CheckpointError(
            f"cannot read weights file {str(file)!r}: {type(exc).__name__}: {exc}. "
            "Re-download it; only plain tensor state dicts are accepted (weights-only loading)."
        ) from exc
    if isinstance(data, Mapping):
        for key in nested_keys:
            inner = data.get(key)
            if isinstance(inner, Mapping):
                data = inner
                break
    if not isinstance(data, Mapping):
        raise CheckpointError(f"weights file {str(file)!r} does not hold a state dict (got {type(data).__name__})")
    return dict(data)
