"""Shared test configuration: no network, tiny deterministic fixtures, locate ../shared."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_DISABLE_GIT", "true")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` beside the repository (parity fixtures, face photos); skips when absent."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} not found: the shared fixtures live beside the repository")
    return SHARED


@pytest.fixture(scope="session")
def parity_dir(shared_dir: Path) -> Path:
    return shared_dir / "parity"


@pytest.fixture(scope="module")
def single_torch_thread() -> Iterator[None]:
    """One torch thread for a whole module (small CPU networks: a busy 2-thread pool spin-waits ~10x slower)."""
    from daefr.testing.parity import single_thread

    with single_thread():
        yield


@pytest.fixture(autouse=True)
def _isolated_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
