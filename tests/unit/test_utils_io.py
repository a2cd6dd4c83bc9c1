"""Atomic writes and never-overwrite names (daefr.utils.io)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from daefr.utils.io import (
    atomic_open,
    atomic_path,
    atomic_save_safetensors,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_text,
    clean_orphaned_temps,
    unique_path,
)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp") or ".tmp" in p.name)


def test_write_bytes_and_text_replace_atomically(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.bin"
    assert atomic_write_bytes(target, b"first") == target
    assert target.read_bytes() == b"first"
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    atomic_write_text(tmp_path / "t.txt", "héllo\n")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo\n"
    assert _leftovers(target.parent) == [] and _leftovers(tmp_path) == []
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask


def test_error_inside_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "keep.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_open(target, "w") as handle:
        handle.write("partial new content")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []
    with pytest.raises(RuntimeError), atomic_open(tmp_path / "never.txt", "w") as handle:
        handle.write("x")
        raise RuntimeError("boom")
    assert not (tmp_path / "never.txt").exists()
    assert _leftovers(tmp_path) == []


def test_overwrite_false_and_exclusive_mode(tmp_path: Path) -> None:
    target = tmp_path / "a.png"
    atomic_write_bytes(target, b"one", overwrite=False)
    with pytest.raises(FileExistsError, match="a.png"):
        atomic_write_bytes(target, b"two", overwrite=False)
    with pytest.raises(FileExistsError), atomic_open(target, "xb") as handle:
        handle.write(b"three")
    assert target.read_bytes() == b"one"
    assert _leftovers(tmp_path) == []


def test_overwrite_false_race_is_refused_at_publish(tmp_path: Path) -> None:
    """Another writer taking the name while we write: our publish fails, their file survives."""
    target = tmp_path / "race.bin"
    with pytest.raises(FileExistsError), atomic_open(target, "wb", overwrite=False) as handle:
        handle.write(b"ours")
        target.write_bytes(b"theirs")
    assert target.read_bytes() == b"theirs"
    assert _leftovers(tmp_path) == []


def test_bad_mode_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="write modes"), atomic_open(tmp_path / "x", "rb"):
        pass


def test_atomic_path_for_external_writers(tmp_path: Path) -> None:
    target = tmp_path / "img.png"
    with atomic_path(target, suffix=".tmp.png") as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".tmp.png") and tmp.name.startswith(".img.png.")
        tmp.write_bytes(b"png-bytes")
        assert not target.exists()
    assert target.read_bytes() == b"png-bytes"
    assert _leftovers(tmp_path) == []


def test_sigkill_mid_write_never_leaves_partial_target(tmp_path: Path) -> None:
    target = tmp_path / "big.bin"
    target.write_bytes(b"old")
    script = textwrap.dedent(
        f"""
        import os, signal
        from daefr.utils.io import atomic_open
        with atomic_open({str(target)!r}, "wb") as f:
            f.write(b"x" * 100000)
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert target.read_bytes() == b"old"
    # What may remain is a hidden temporary file, never something at the target name.
    assert all(name.startswith(".big.bin.") for name in _leftovers(tmp_path))


def test_torch_and_safetensors_roundtrip(tmp_path: Path) -> None:
    import torch
    from safetensors import safe_open

    state = {"w": torch.arange(6.0).reshape(2, 3)}
    atomic_torch_save(state, tmp_path / "s.pt")
    assert torch.equal(torch.load(tmp_path / "s.pt", weights_only=True)["w"], state["w"])
    atomic_save_safetensors(state, tmp_path / "s.safetensors", metadata={"arch": "tiny"})
    with safe_open(str(tmp_path / "s.safetensors"), "pt") as handle:
        assert handle.metadata() == {"arch": "tiny"}
        assert torch.equal(handle.get_tensor("w"), state["w"])
    with pytest.raises(FileExistsError):
        atomic_save_safetensors(state, tmp_path / "s.safetensors", overwrite=False)

    class Unpicklable:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        atomic_torch_save({"bad": Unpicklable()}, tmp_path / "s.pt")
    assert torch.equal(torch.load(tmp_path / "s.pt", weights_only=True)["w"], state["w"])
    assert _leftovers(tmp_path) == []


def test_unique_path(tmp_path: Path) -> None:
    out = tmp_path / "face.png"
    assert unique_path(out) == out
    out.write_bytes(b"")
    assert unique_path(out) == tmp_path / "face_1.png"
    (tmp_path / "face_1.png").write_bytes(b"")
    assert unique_path(out) == tmp_path / "face_2.png"
    (tmp_path / "noext").mkdir()
    assert unique_path(tmp_path / "noext") == tmp_path / "noext_1"
    (tmp_path / "a.tar.gz").write_bytes(b"")
    assert unique_path(tmp_path / "a.tar.gz") == tmp_path / "a.tar_1.gz"
    (tmp_path / "dangling.png").symlink_to(tmp_path / "nowhere")
    assert unique_path(tmp_path / "dangling.png") == tmp_path / "dangling_1.png"


def test_orphaned_temps_are_cleaned_and_live_ones_kept(tmp_path: Path) -> None:
    """A temporary whose writer was SIGKILLed is removed; one a live writer (another process) holds is kept."""
    killed = textwrap.dedent(
        f"""
        import os, signal
        from daefr.utils.io import atomic_open
        with atomic_open({str(tmp_path / "a.ckpt")!r}, "wb") as f:
            f.write(b"x" * 1000)
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    assert subprocess.run([sys.executable, "-c", killed], timeout=60).returncode == -signal.SIGKILL
    live = subprocess.Popen([sys.executable, "-c", textwrap.dedent(
        f"""
        import sys, time
        from daefr.utils.io import atomic_path
        with atomic_path({str(tmp_path / "b.png")!r}, suffix=".tmp.png") as tmp:
            tmp.write_bytes(b"y")
            print("ready", flush=True)
            sys.stdin.readline()
        """
    )], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert live.stdout is not None and live.stdout.readline().strip() == "ready"
        (tmp_path / ".c.png.lookalik.png").write_bytes(b"not ours")  # not our temporary pattern
        (tmp_path / "plain.tmp").write_bytes(b"not hidden")
        orphans = [p.name for p in tmp_path.iterdir() if p.name.startswith(".a.ckpt.")]
        assert len(orphans) == 1
        assert clean_orphaned_temps(tmp_path, "b.png") == []  # only b.png's: the live one, kept
        removed = clean_orphaned_temps(tmp_path)
        assert [p.name for p in removed] == orphans
        remaining = sorted(p.name for p in tmp_path.iterdir())
        assert remaining[0].startswith(".b.png.") and remaining[1:] == [".c.png.lookalik.png", "plain.tmp"]
    finally:
        assert live.stdin is not None
        live.stdin.write("\n")
        live.stdin.close()
        live.wait(timeout=60)
    assert (tmp_path / "b.png").read_bytes() == b"y"  # the live writer finished normally
    assert clean_orphaned_temps(tmp_path / "missing") == []
