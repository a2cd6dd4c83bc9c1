"""The lower layers of docs/architecture.md import nothing from the layers above them.

Read from the source (every import statement, also those inside functions), so a lazy import that
crosses a layer is caught as well as a top-level one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "daefr"

#: layer -> the daefr top-level modules/packages its modules may import (its own included).
ALLOWED: dict[str, frozenset[str]] = {
    "nn": frozenset({"nn", "errors", "registry", "utils"}),
    "models": frozenset({"models", "nn", "errors", "registry", "utils"}),
}


def daefr_imports(source: str, package: str) -> list[tuple[int, str]]:
    """``(line, dotted name)`` of each daefr module that ``source`` (a module of ``package``) imports."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            if module == "daefr":  # `from daefr import interop` names a subpackage
                found += [(node.lineno, f"daefr.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, module))
    return sorted((line, name) for line, name in found if name.startswith("daefr."))


def layer_violations(layer: str) -> list[str]:
    """``file:line imports NAME`` for each import of a daefr layer that ``layer`` may not use."""
    bad = []
    for path in sorted((SRC / layer).rglob("*.py")):
        package = ".".join(["daefr", *path.relative_to(SRC).parts[:-1]])
        for line, name in daefr_imports(path.read_text(encoding="utf-8"), package):
            if name.split(".")[1] not in ALLOWED[layer]:
                bad.append(f"{path.relative_to(SRC.parent)}:{line} imports {name}")
    return bad


def test_import_reader_sees_lazy_relative_and_package_imports() -> None:
    source = (
        "import torch\n"
        "from daefr.nn import blocks\n"
        "def save(x):\n"
        "    from daefr.interop.restorer_io import save_restorer\n"
        "from ..stages import base\n"
        "from . import vqgan\n"
        "from daefr import cli\n"
        "import daefr.commands.fit\n"
    )
    assert daefr_imports(source, "daefr.models") == [
        (2, "daefr.nn"), (4, "daefr.interop.restorer_io"), (5, "daefr.stages"), (6, "daefr.models"),
        (7, "daefr.cli"), (8, "daefr.commands.fit")]


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_nothing_from_above(layer: str) -> None:
    assert (SRC / layer).is_dir()
    assert layer_violations(layer) == [], f"{layer}/ may import only daefr.{{{', '.join(sorted(ALLOWED[layer]))}}}"
