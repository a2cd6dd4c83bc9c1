"""Stage config files that compose a shared base: ``base: base.yaml`` at the top of a stage config.

A stage config names the file(s) it builds on with a top-level ``base`` key (a path, or a list of paths,
relative to the stage file). The base is read first and the stage file's own keys win, exactly as
``daefr fit --config BASE --config STAGE`` (:func:`expand_config_args` rewrites the command line that
way); :func:`load_composed` gives the same merged configuration to ``daefr train`` (chains). Bases may
have bases of their own; a cycle or a missing file is one :class:`~daefr.errors.ConfigError` line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from daefr.errors import ConfigError

__all__ = ["BASE_KEY", "PACKAGED_CONFIGS", "base_files", "expand_config_args", "load_composed", "resolve_config_path"]

#: The configs shipped inside the package (a checkout's top-level ``configs/`` is the same folder).
PACKAGED_CONFIGS = Path(__file__).resolve().parent / "configs"

#: The top-level key of a config file naming the base config(s) it composes.
BASE_KEY = "base"
_CONFIG_FLAGS = ("--config", "-c")


def _read_mapping(path: Path) -> dict[str, Any] | None:
    """The file's top-level mapping, or None when it is no YAML mapping (jsonargparse then says why)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def _named_bases(path: Path, data: dict[str, Any]) -> list[Path]:
    raw = data.get(BASE_KEY)
    if raw is None:
        return []
    names = [raw] if isinstance(raw, str) else raw
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"{path}: '{BASE_KEY}' must be a file path or a list of file paths, got {raw!r}")
    bases = [(path.parent / name) for name in names]
    for base in bases:
        if not base.is_file():
            raise ConfigError(f"{path}: its base config {base} does not exist (paths are relative to {path.parent})")
    return bases


def base_files(path: str | Path, _seen: tuple[Path, ...] = ()) -> list[Path]:
    """Every base ``path`` builds on, deepest first (``path`` itself excluded); [] for a file without bases."""
    path = Path(path)
    if path.resolve() in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, path.resolve()))
        raise ConfigError(f"config bases form a cycle: {chain}")
    data = _read_mapping(path) if path.is_file() else None
    if data is None:
        return []
    found: list[Path] = []
    for base in _named_bases(path, data):
        for item in [*base_files(base, (*_seen, path.resolve())), base]:
            if item not in found:
                found.append(item)
    return found


def resolve_config_path(value: str | Path) -> Path:
    """``value`` itself when it exists; else ``configs/X`` (or ``X``) from the configs shipped in the package.

    So ``daefr fit --config configs/tiny/hq_codebook.yaml`` works from any folder once daefr is installed.
    """
    path = Path(value)
    if path.exists() or path.is_absolute():
        return path
    parts = path.parts[1:] if path.parts[:1] == ("configs",) else path.parts
    packaged = PACKAGED_CONFIGS.joinpath(*parts) if parts else PACKAGED_CONFIGS
    return packaged if packaged.is_file() else path


def expand_config_args(argv: Sequence[str]) -> list[str]:
    """``--config STAGE`` -> ``--config BASE --config STAGE --base null`` for the bases STAGE names (recursively).

    A ``configs/...`` path that does not exist here is read from the configs shipped in the package.
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in _CONFIG_FLAGS and i + 1 < len(argv):
            value, step = argv[i + 1], 2
        elif arg.startswith("--config="):
            value, step = arg.split("=", 1)[1], 1
        else:
            out.append(arg)
            i += 1
            continue
        resolved = resolve_config_path(value)
        value = str(resolved) if resolved.is_file() else value
        bases = base_files(value)
        for base in bases:
            out += ["--config", str(base)]
        out += ["--config", value]
        if bases:  # composed now: a saved or printed config is complete and names no base (it may move)
            out += ["--base", "null"]
        i += step
    return out


def load_composed(path: str | Path) -> Any:
    """The OmegaConf ``DictConfig`` of a stage file merged over its bases (interpolations unresolved).

    Mappings merge key by key; a list (``trainer.callbacks``) given by the stage replaces the base's, as
    with several ``--config`` files. The ``base`` key is dropped from the result.
    """
    from omegaconf import DictConfig, OmegaConf

    path = Path(path)
    merged: Any = OmegaConf.create({})
    for item in [*base_files(path), path]:
        try:
            part = OmegaConf.load(item)
        except Exception as exc:  # noqa: BLE001 - OmegaConf raises several parser errors
            raise ConfigError(f"{item}: cannot read config ({exc})") from None
        if not isinstance(part, DictConfig):
            raise ConfigError(f"{item}: a stage config must be a mapping")
        part.pop(BASE_KEY, None)
        merged = OmegaConf.merge(merged, part)
    return merged
