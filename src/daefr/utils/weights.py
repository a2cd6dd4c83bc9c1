"""Locate and read pretrained weight files by path; nothing is ever downloaded.

Every component that needs weights takes an explicit path; when it is left out the file is looked up
by its conventional name in ``$DAEFR_WEIGHTS_DIR`` (and, for files torchvision/torch.hub would cache,
in the torch hub checkpoint folder). A missing file raises :class:`WeightsNotFoundError` naming the
file, what it is, where it can be downloaded and where to put it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from daefr.errors import CheckpointError, WeightsNotFoundError

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


def resolve_weights(
    path: str | os.PathLike[str] | None,
    default_name: str,
    what: str,
    source: str,
    search_torch_hub: bool = False,
) -> Path:
    """Return an existing weights file: ``path`` if given, else ``default_name`` in the search folders.

    ``what`` describes the file (e.g. "VGG16 ImageNet weights for LPIPS") and ``source`` where to get
    it; both go into the error message when the file cannot be found.
    """
    if path is not None and str(path) != "":
        candidate = Path(path).expanduser()
        if candidate.is_dir():
            candidate = candidate / default_name
        if candidate.is_file():
            return candidate
        raise WeightsNotFoundError(
            f"{what}: file {str(candidate)!r} not found. Download {default_name!r} from {source} "
            f"and pass its path (or put it in ${WEIGHTS_DIR_ENV})."
        )
    searched: list[Path] = []
    folder = weights_dir()
    if folder is not None:
        searched.append(folder / default_name)
    if search_torch_hub:
        searched.append(torch_hub_checkpoint_dir() / default_name)
    for candidate in searched:
        if candidate.is_file():
            return candidate
    where = "searched " + ", ".join(repr(str(p)) for p in searched) if searched else "nowhere to search"
    if folder is None:
        where += f"; ${WEIGHTS_DIR_ENV} is not set"
    raise WeightsNotFoundError(
        f"{what}: file {default_name!r} not found ({where}). Download it from {source} and put "
        f"it in the folder named by ${WEIGHTS_DIR_ENV}, or pass its path explicitly."
    )


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
