"""`daefr restore` run in-process: whole photos, bad inputs, no overwriting, --aligned with a tiny checkpoint."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from daefr.cli import main

pytest.importorskip("dlib")
pytest.importorskip("cv2")
skdata = pytest.importorskip("skimage.data")


# the astronaut's face (90 px) is found without doubling the photo first: 4x less detection time
FAST_DETECTOR = ["--detector-arg", "upsample=0"]


class IdentityRestorer(nn.Module):
    """Stand-in network: returns its (B, 3, 64, 64) input."""

    input_size = 64

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


@pytest.fixture()
def identity_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A weights path whose loading yields :class:`IdentityRestorer` (the network is tested elsewhere)."""
    import daefr.interop.restorer_io as restorer_io

    weights = tmp_path / "identity.safetensors"
    weights.write_bytes(b"unused")
    monkeypatch.setattr(restorer_io, "load_restorer", lambda path, **kw: IdentityRestorer())
    return weights


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _bad_and_odd_inputs(folder: Path) -> dict[str, str | None]:
    """Writes the test corpus; returns name -> expected reason fragment (None: must be restored)."""
    folder.mkdir()
    astronaut = skdata.astronaut()
    Image.fromarray(astronaut).save(folder / "astronaut.png")
    Image.fromarray(astronaut).convert("L").save(folder / "gray.png")
    Image.fromarray(astronaut).convert("RGBA").save(folder / "rgba.png")
    gray16 = (np.asarray(Image.fromarray(astronaut).convert("L")).astype(np.uint16) * 257)
    Image.fromarray(gray16).save(folder / "deep16.png")
    assert Image.open(folder / "deep16.png").mode.startswith("I")
    full = (folder / "astronaut.png").read_bytes()
    (folder / "truncated.png").write_bytes(full[: len(full) // 3])
    (folder / "notes.png").write_text("this is not an image\n")
    Image.new("RGB", (1, 1), (200, 10, 10)).save(folder / "tiny.png")
    ramp = np.tile(np.linspace(0, 255, 96, dtype=np.uint8)[None, :, None], (80, 1, 3))
    Image.fromarray(ramp).save(folder / "noface.png")
    expected: dict[str, str | None] = {
        "astronaut.png": None, "gray.png": None, "rgba.png": None, "deep16.png": None,
        "truncated.png": "truncated", "notes.png": "not an image", "tiny.png": "too small",
        "noface.png": "no face found",
    }
    if os.geteuid() != 0:  # root reads anything: the permission case needs a normal user
        locked = folder / "locked.png"
        Image.fromarray(ramp).save(locked)
        locked.chmod(0)
        expected["locked.png"] = "permission denied"
    return expected


def test_whole_photos_bad_inputs_and_no_overwrite(
    tmp_path: Path, identity_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = tmp_path / "in"
    expected = _bad_and_odd_inputs(inputs)
    before = {name: digest for name, digest in _digest(inputs).items() if name != "locked.png"}
    out = tmp_path / "out"
    (out / "restored_imgs").mkdir(parents=True)
    sentinel = out / "restored_imgs" / "astronaut.png"
    sentinel.write_bytes(b"an older result that must survive")

    # a non-empty output folder is refused without --force, in one line, before any work
    assert main(["restore", str(inputs), "-o", str(out), "-w", str(identity_weights), "--no-progress",
                 *FAST_DETECTOR]) == 1
    refused = capsys.readouterr()
    assert "is not empty; pass --force" in refused.err and refused.err.count("\n") == 1 and not refused.out
    code = main(["restore", str(inputs), "-o", str(out), "-w", str(identity_weights), "--max-faces", "1",
                 "--paste", "residual", "--compare", "--no-progress", "--force", *FAST_DETECTOR])
    captured = capsys.readouterr()
    report = captured.out
    assert f"outputs named astronaut_1 (astronaut is taken in {out})" in captured.err  # said, not silent
    assert code == 1
    failed = {line.split("FAILED ", 1)[1] for line in report.splitlines() if "FAILED " in line}
    for name, fragment in expected.items():
        lines = [f for f in failed if Path(f.split(": ", 1)[0]).name == name]
        if fragment is None:
            assert not lines, (name, lines)
        else:
            assert len(lines) == 1 and fragment in lines[0], (name, lines, report)
            assert "\n" not in lines[0] and "Traceback" not in report
    ok = sum(v is None for v in expected.values())
    assert f"{ok} of {len(expected)} inputs restored, {len(expected) - ok} failed" in report
    assert f"{ok} restored" in report.split("faces:", 1)[1]

    assert sentinel.read_bytes() == b"an older result that must survive"  # never overwritten
    restored = np.asarray(Image.open(out / "restored_imgs" / "astronaut_1.png"))
    # identity network + residual paste: the photo comes back unchanged (within 1/255)
    assert np.abs(restored.astype(int) - skdata.astronaut().astype(int)).max() <= 1
    for stem in ("gray", "rgba", "deep16"):
        assert (out / "restored_imgs" / f"{stem}.png").is_file()
        assert Image.open(out / "restored_faces" / f"{stem}_00.png").size == (64, 64)
        assert (out / "cropped_faces" / f"{stem}_00.png").is_file()
        assert Image.open(out / "comparisons" / f"{stem}.png").size == (1024, 512)
    assert not list(out.rglob(".*.tmp*"))  # no partial files left behind
    assert {name: d for name, d in _digest(inputs).items() if name != "locked.png"} == before  # inputs untouched

    # a second run keeps every earlier output and picks fresh names
    first = _digest(out / "restored_faces")
    assert main(["restore", str(inputs / "gray.png"), "-o", str(out), "-w", str(identity_weights),
                 "--max-faces", "1", "--no-progress", "--force", *FAST_DETECTOR]) == 0
    assert _digest(out / "restored_faces").items() >= first.items()
    assert (out / "restored_faces" / "gray_1_00.png").is_file()


def test_direct_paste_upscale_and_boxes(tmp_path: Path, identity_weights: Path) -> None:
    photo = tmp_path / "astronaut.jpg"
    Image.fromarray(skdata.astronaut()).save(photo, quality=95)
    out = tmp_path / "out"
    code = main(["restore", str(photo), "-o", str(out), "-w", str(identity_weights), "--upscale", "2",
                 "--only-center-face", "--draw-box", "--no-progress", "--upsampler", "lanczos",
                 *FAST_DETECTOR])
    assert code == 0
    restored = np.asarray(Image.open(out / "restored_imgs" / "astronaut.png"))
    assert restored.shape == (1024, 1024, 3)
    assert len(list((out / "restored_faces").iterdir())) == 1
    assert (restored[..., 1] == 255).sum() > 500 and (restored[..., 0] == 0).sum() > 0  # the green box


def test_missing_weights_and_bad_options_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = tmp_path / "a.png"
    Image.fromarray(skdata.astronaut()).save(photo)
    assert main(["restore", str(photo), "-o", str(tmp_path / "o"), "-w", str(tmp_path / "none.ckpt")]) == 1
    err = capsys.readouterr().err
    assert "weights" in err and "not found" in err and len(err.strip().splitlines()) == 1
    assert main(["restore", str(photo), "-o", str(tmp_path / "o"), "-w", "x", "--batch-size", "0"]) == 1
    assert "--batch-size" in capsys.readouterr().err


def test_aligned_folder_with_a_tiny_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from daefr.interop.restorer_io import save_restorer
    from daefr.models.restorer import DAEFRRestorer

    torch.manual_seed(0)
    weights = save_restorer(DAEFRRestorer.from_config("tiny"), tmp_path / "tiny.safetensors")
    crops = tmp_path / "crops"
    crops.mkdir()
    astronaut = skdata.astronaut()
    # one real crop keeps the (CPU-heavy) tiny transformer to a single face
    Image.fromarray(astronaut[60:190, 160:290]).save(crops / "face_a.png")
    (crops / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    out = tmp_path / "out"
    code = main(["restore", str(crops), "--aligned", "-o", str(out), "-w", str(weights), "--no-progress",
                 "--compare"])
    report = capsys.readouterr().out
    assert code == 1 and "1 of 2 inputs restored, 1 failed" in report and "broken.png" in report
    for stem in ("face_a",):
        restored = np.asarray(Image.open(out / "restored_faces" / f"{stem}.png"))
        assert restored.shape == (64, 64, 3) and restored.std() > 1.0  # a decoded image, not a constant
        assert Image.open(out / "cropped_faces" / f"{stem}.png").size == (64, 64)
        assert Image.open(out / "comparisons" / f"{stem}.png").size == (128, 64)
    assert not (out / "restored_imgs").exists()
