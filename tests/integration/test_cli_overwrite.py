"""One overwrite rule: a command that writes a folder refuses a non-empty one unless --force."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from daefr.cli import main


def _faces(folder: Path, names: tuple[str, ...]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    return folder


def test_make_testset_refuses_a_non_empty_folder_and_force_rebuilds_the_set(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "set"
    many = _faces(tmp_path / "many", tuple(f"f{i}" for i in range(5)))
    args = ["--preset", "daefr_small", "--device", "cpu", "--no-progress", "-o", str(out)]
    assert main(["make-testset", "--hq", str(many), *args]) == 0
    assert len(list((out / "lq").iterdir())) == 5
    capsys.readouterr()
    two = _faces(tmp_path / "two", ("f0", "x1"))
    assert main(["make-testset", "--hq", str(two), *args]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "is not empty; pass --force" in err
    assert len(list((out / "lq").iterdir())) == 5  # nothing touched
    (out / "notes.txt").write_text("mine")
    assert main(["make-testset", "--hq", str(two), *args, "--force"]) == 0
    assert "removed 12 file(s) of an earlier set" in capsys.readouterr().out  # f1..f4 x gt, lq, params
    manifest = json.loads((out / "manifest.json").read_text())
    for sub, ext in (("gt", ".png"), ("lq", ".png"), ("params", ".json")):
        assert sorted(p.name for p in (out / sub).iterdir()) == [f"{n}{ext}" for n in manifest["images"]]
    assert manifest["images"] == ["f0", "x1"] and (out / "notes.txt").read_text() == "mine"


def test_evaluate_refuses_a_non_empty_folder_unless_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    faces = _faces(tmp_path / "faces", ("a", "b"))
    out = tmp_path / "report"
    args = ["evaluate", "--restored", str(faces), "--gt", str(faces), "--metrics", "psnr", "--no-progress",
            "-o", str(out)]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "is not empty; pass --force" in err
    assert main([*args, "--force"]) == 0


def test_restore_into_an_empty_or_hidden_only_folder_needs_no_force(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from torch import nn

    import daefr.interop.restorer_io as restorer_io

    class Same(nn.Module):
        input_size = 64

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    monkeypatch.setattr(restorer_io, "load_restorer", lambda path, **kw: Same())
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"unused")
    faces = _faces(tmp_path / "faces", ("a",))
    out = tmp_path / "out"
    (out / "restored_faces").mkdir(parents=True)
    (out / ".hidden").write_text("")  # hidden files (e.g. .DS_Store, temporaries) do not count
    base = ["restore", str(faces), "--aligned", "-w", str(weights), "--device", "cpu", "--no-progress", "-o", str(out)]
    assert main(base) == 0
    assert main(base) == 1  # now it holds results
    assert main([*base, "--force"]) == 0
    assert sorted(p.name for p in (out / "restored_faces").iterdir()) == ["a.png", "a_1.png"]  # never replaced
