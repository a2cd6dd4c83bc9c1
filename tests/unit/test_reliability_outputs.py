"""Issue 15: outputs never replace inputs or special files; batch commands skip bad files.

Each test builds the situation (an input named as the output, a FIFO, /dev/null, a bad image) and
checks the victim survives: same bytes, a FIFO stays a FIFO.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from daefr.cli import main
from daefr.utils.io import atomic_write_bytes, atomic_write_text, is_special_file, refuse_input_as_output


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _face(path: Path, size: int = 64) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


class _FifoReader:
    """Reads everything written to a FIFO in a thread (a writer blocks until a reader opens it)."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = path
        self.data = b""
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with open(self.path, "rb") as handle:
            self.data = handle.read()

    def join(self) -> bytes:
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "nothing was written to the FIFO"
        return self.data


def test_degrade_preview_refuses_its_input_as_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photo = _face(tmp_path / "X.png")
    before = _digest(photo)
    for output in (str(photo), str(tmp_path / "." / "X.png")):
        assert main(["degrade-preview", str(photo), "-o", output, "--force", "--samples", "1", "--size", "48",
                     "--presets", "daefr_small"]) == 1
        assert "is the input file" in capsys.readouterr().err
    link = tmp_path / "link.png"
    link.symlink_to(photo)
    assert main(["degrade-preview", str(photo), "-o", str(link), "--force"]) == 1
    assert _digest(photo) == before and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X.png", "link.png"]  # no temporary file left


def test_degrade_preview_follows_force_and_writes_into_a_fifo(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    photo = _face(tmp_path / "face.png")
    args = [str(photo), "--samples", "1", "--size", "48", "--presets", "daefr_small"]
    existing = tmp_path / "grid.png"
    existing.write_bytes(b"keep me")
    assert main(["degrade-preview", *args, "-o", str(existing)]) == 1
    assert "already exists; pass --force" in capsys.readouterr().err and existing.read_bytes() == b"keep me"
    assert main(["degrade-preview", *args, "-o", str(existing), "--force"]) == 0
    assert Image.open(existing).size == (110 + 48 * 2, 48 + 52)  # one row of tiles and their captions
    fifo = tmp_path / "grid.fifo"
    reader = _FifoReader(fifo)
    assert main(["degrade-preview", *args, "-o", str(fifo)]) == 0
    assert reader.join().startswith(b"\x89PNG") and stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_atomic_writes_into_special_files_never_replace_them(tmp_path: Path) -> None:
    fifo = tmp_path / "summary.fifo"
    reader = _FifoReader(fifo)
    atomic_write_text(fifo, '{"ok": 1}\n', overwrite=False)  # overwrite does not apply to special files
    assert reader.join() == b'{"ok": 1}\n' and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    devnull = Path("/dev/null")
    atomic_write_bytes(devnull, b"x" * 100)
    assert stat.S_ISCHR(os.lstat(devnull).st_mode)
    assert not [p for p in Path("/dev").iterdir() if p.name.startswith(".null.")]
    assert is_special_file("/dev/stdout") and not is_special_file(tmp_path / "plain.json")
    with pytest.raises(Exception, match="is the input file"):
        refuse_input_as_output(tmp_path / "a" / ".." / "in.png", [tmp_path / "in.png"])
    refuse_input_as_output("/dev/null", ["/dev/null"])  # reading and writing /dev/null is the user's choice


class _Identity(nn.Module):
    input_size = 64

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


@pytest.fixture()
def identity_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import daefr.interop.restorer_io as restorer_io

    weights = tmp_path / "identity.safetensors"
    weights.write_bytes(b"unused")
    monkeypatch.setattr(restorer_io, "load_restorer", lambda path, **kw: _Identity())
    return weights


def test_restore_summary_json_never_replaces_an_input_or_a_fifo(tmp_path: Path, identity_weights: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    face = _face(tmp_path / "face.png")
    before = _digest(face)
    base = ["restore", str(face), "-o", str(tmp_path / "out"), "-w", str(identity_weights), "--aligned",
            "--device", "cpu", "--no-progress"]
    assert main([*base, "--summary-json", str(face)]) == 1
    assert "is the input file" in capsys.readouterr().err and _digest(face) == before
    assert main([*base, "--summary-json", str(identity_weights)]) == 1
    assert identity_weights.read_bytes() == b"unused"
    fifo = tmp_path / "summary.fifo"
    reader = _FifoReader(fifo)
    assert main([*base, "--summary-json", str(fifo)]) == 0
    assert json.loads(reader.join())["ok"] == 1 and stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_export_output_must_match_format_and_not_be_the_weights(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"weights")
    assert main(["export", str(weights), "-o", str(tmp_path / "model.ts"), "--format", "onnx"]) == 1
    err = capsys.readouterr().err
    assert "has the .ts suffix of torchscript but --format is onnx" in err
    assert weights.read_bytes() == b"weights" and sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]
    from daefr.commands.export import _output_for

    assert _output_for("model", "exported-program") == "model.pt2"
    assert _output_for("model.onnx", "onnx") == "model.onnx"


def test_export_and_convert_refuse_the_input_as_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "model.onnx"
    source.write_bytes(b"source")
    assert main(["export", str(source), "-o", str(source), "--force"]) == 1
    assert "is the input file" in capsys.readouterr().err
    ckpt = tmp_path / "DAEFR_model.ckpt"
    ckpt.write_bytes(b"ckpt")
    assert main(["convert", str(ckpt), str(ckpt), "--force"]) == 1
    assert "is the input file" in capsys.readouterr().err
    assert source.read_bytes() == b"source" and ckpt.read_bytes() == b"ckpt"


def test_make_testset_skips_bad_files_and_writes_a_complete_set(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    hq = tmp_path / "hq"
    hq.mkdir()
    _face(hq / "good.png", 32)
    (hq / "text.png").write_text("not an image")
    (hq / "empty.jpg").write_bytes(b"")
    full = (hq / "good.png").read_bytes()
    (hq / "cut.png").write_bytes(full[: len(full) // 2])
    out = tmp_path / "set"
    assert main(["make-testset", "--hq", str(hq), "--out", str(out), "--preset", "daefr_small"]) == 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["images"] == ["good"]
    assert sorted(Path(s["file"]).name for s in manifest["skipped"]) == ["cut.png", "empty.jpg", "text.png"]
    assert all(s["reason"] and "\n" not in s["reason"] for s in manifest["skipped"])
    assert sorted(p.name for p in (out / "lq").iterdir()) == ["good.png"]
    assert "3 failed" in capsys.readouterr().out


# ----- restore: interruption, broken pipe, concurrent writers, orphaned temporaries ---------------------


class _StopAfter(nn.Module):
    """Identity network that raises KeyboardInterrupt (Ctrl-C) on call number ``stop``."""

    input_size = 64

    def __init__(self, stop: int) -> None:
        super().__init__()
        self.calls = 0
        self.stop = stop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.stop:
            raise KeyboardInterrupt
        return x.clone()


def test_ctrl_c_during_restore_stops_cleanly_and_writes_the_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import daefr.interop.restorer_io as restorer_io

    monkeypatch.setattr(restorer_io, "load_restorer", lambda path, **kw: _StopAfter(stop=2))
    faces = tmp_path / "faces"
    faces.mkdir()
    for name in ("a", "b", "c"):
        _face(faces / f"{name}.png")
    out, summary = tmp_path / "out", tmp_path / "summary.json"
    (tmp_path / "w.safetensors").write_bytes(b"unused")  # resolved as a file; the loader above is a stand-in
    code = main(["restore", str(faces), "-o", str(out), "-w", str(tmp_path / "w.safetensors"), "--aligned",
                 "--device", "cpu", "--batch-size", "1", "--no-progress", "--summary-json", str(summary)])
    assert code == 130
    data = json.loads(summary.read_text())
    assert data["interrupted"] is True and data["ok"] == 1 and data["inputs"] == 3
    assert sorted(p.name for p in (out / "restored_faces").iterdir()) == ["a.png"]  # complete, no temporaries
    err = capsys.readouterr().err
    assert "interrupted: stopped after 1 of 3 input(s)" in err and "Traceback" not in err


def test_restore_into_a_closed_pipe_finishes_quietly_with_summary(tmp_path: Path) -> None:
    """``daefr restore ... | true``: no BrokenPipeError traceback, exit 0, the summary file is written."""
    import subprocess
    import sys

    from daefr.interop.restorer_io import save_restorer
    from daefr.models.restorer import DAEFRRestorer

    small: dict[str, Any] = {"ch_mult": [1, 2], "resolution": 16, "attn_resolutions": [8], "z_channels": 32,
             "embed_dim": 32,
             "n_embed": 64, "n_layers": 1, "transformer_dim": 32, "dim_mlp": 64}
    weights = save_restorer(DAEFRRestorer.from_config("tiny", **small), tmp_path / "small.safetensors")
    face = _face(tmp_path / "face.png", 16)
    summary = tmp_path / "summary.json"
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from daefr.cli import main; sys.exit(main(sys.argv[1:]))", "restore",
         str(face), "-o", str(tmp_path / "out"), "-w", str(weights), "--aligned", "--device", "cpu", "--no-progress",
         "--summary-json", str(summary)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before anything is printed
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert json.loads(summary.read_text())["ok"] == 1


def test_concurrent_writer_taking_a_name_moves_this_input_to_the_next_free_one(tmp_path: Path) -> None:
    """Another restore process takes cropped_faces/face.png between our reserve() and write."""
    from types import SimpleNamespace

    from daefr.commands._restore_run import OutputWriter

    out = tmp_path / "out"
    writer = OutputWriter(out, "png", aligned=True, compare=False)
    reserve = writer.reserve

    def racing_reserve(stem: str, n_faces: int) -> dict[str, list[Path]]:
        files = reserve(stem, n_faces)
        if files["cropped_faces"][0].name == "face.png":  # the other process wins this name
            files["cropped_faces"][0].parent.mkdir(parents=True, exist_ok=True)
            files["cropped_faces"][0].write_bytes(b"other process")
        return files

    writer.reserve = racing_reserve  # type: ignore[method-assign]
    image = np.zeros((64, 64, 3), np.uint8)
    result = SimpleNamespace(faces=[SimpleNamespace(restored=image, cropped=image)], restored_image=image)
    written = writer.write(tmp_path / "face.png", result)
    assert sorted(p.relative_to(out).as_posix() for p in written) == ["cropped_faces/face_1.png",
                                                                      "restored_faces/face_1.png"]
    assert (out / "cropped_faces" / "face.png").read_bytes() == b"other process"  # theirs, untouched
    assert not (out / "restored_faces" / "face.png").exists()  # ours from the lost attempt, removed


def test_restore_cleans_orphaned_temporaries_at_start(tmp_path: Path, identity_weights: Path) -> None:
    out = tmp_path / "out"
    (out / "restored_faces").mkdir(parents=True)
    orphan = out / "restored_faces" / ".old.png.abcd1234.tmp.png"  # what a SIGKILL mid-write leaves
    orphan.write_bytes(b"partial")
    face = _face(tmp_path / "face.png")
    assert main(["restore", str(face), "-o", str(out), "-w", str(identity_weights), "--aligned", "--device", "cpu",
                 "--no-progress"]) == 0
    assert not orphan.exists() and (out / "restored_faces" / "face.png").is_file()
