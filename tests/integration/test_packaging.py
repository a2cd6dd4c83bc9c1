"""A built wheel ships what the CLI refers to: the configs (through src/daefr/configs), demo assets, py.typed."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_contains_the_configs_and_assets(tmp_path: Path) -> None:
    assert (REPO / "src" / "daefr" / "configs").resolve() == (REPO / "configs").resolve()  # one folder, two paths
    tree = tmp_path / "tree"
    (tree / "src").mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, tree / name)
    shutil.copytree(REPO / "configs", tree / "configs")
    shutil.copytree(REPO / "src" / "daefr", tree / "src" / "daefr", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(tree), "--no-deps", "--no-build-isolation",
                           "-q", "-w", str(tmp_path / "dist")], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 and "No module named" in proc.stderr:
        pytest.skip(f"cannot build here: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "dist").glob("daefr-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"daefr/configs/{p.relative_to(REPO / 'configs').as_posix()}"
                for p in (REPO / "configs").rglob("*") if p.is_file() and not p.name.startswith(".")}
    assert expected and expected <= names, sorted(expected - names)
    for needed in ("daefr/configs/tiny/chain.yaml", "daefr/configs/daefr/base.yaml", "daefr/py.typed",
                   "daefr/config_files.py", "daefr/configs/cluster/slurm.sbatch"):
        assert needed in names
    assert any(n.startswith("daefr/assets/demo_faces/") for n in names)
    assert not any("__pycache__" in n or n.startswith("tests/") for n in names)
