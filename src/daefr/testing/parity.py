"""Helpers for tests against the official parity fixtures in ``../shared/parity`` (see its README).

The fixtures ship ``recipe.py`` (deterministic weights per official key), JSON manifests with the
official state-dict shapes and the tiny architectures, and safetensors with the reference tensors.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

__all__ = ["fixture_meta", "fixture_tensors", "load_recipe", "recipe_weights", "single_thread"]


def load_recipe(parity_dir: str | Path) -> ModuleType:
    """Import ``recipe.py`` of the parity folder by path (it is not a package)."""
    path = Path(parity_dir) / "recipe.py"
    spec = importlib.util.spec_from_file_location("daefr_parity_recipe", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"cannot import the parity recipe {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fixture_meta(parity_dir: str | Path, name: str) -> dict[str, Any]:
    """The JSON manifest ``<name>.json`` (e.g. ``vqgan_tiny``)."""
    with open(Path(parity_dir) / f"{name}.json", encoding="utf-8") as fh:
        return dict(json.load(fh))


def fixture_tensors(parity_dir: str | Path, name: str) -> dict[str, Tensor]:
    """The reference tensors ``<name>_io.safetensors``."""
    from safetensors.torch import load_file

    return dict(load_file(str(Path(parity_dir) / f"{name}_io.safetensors")))


def recipe_weights(
    parity_dir: str | Path,
    shapes: Mapping[str, Any],
    salt: str | Callable[[str], str],
    keep: Callable[[str], bool] = lambda key: True,
) -> dict[str, Tensor]:
    """Recipe weights for the official keys ``shapes`` that ``keep`` selects; ``salt`` may depend on the key.

    ``shapes`` values are either shapes or the manifests' ``[shape, dtype]`` pairs.
    """
    recipe = load_recipe(parity_dir)
    selected = {k: (v[0] if v and isinstance(v[0], list) else v) for k, v in shapes.items() if keep(k)}
    if isinstance(salt, str):
        return dict(recipe.official_weights(selected, salt))
    out: dict[str, Tensor] = {}
    for key, shape in selected.items():
        out.update(recipe.official_weights({key: shape}, salt(key)))
    return out


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run with ``torch.set_num_threads(1)`` (the fixtures' condition), restoring the count afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
