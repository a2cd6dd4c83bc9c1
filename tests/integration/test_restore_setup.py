"""`daefr restore` as users meet it: the start-up line, size warnings, backend by file, set-up errors up
front, --suffix, --ext auto, gray stays gray, --fidelity."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata
from torch import nn

from daefr.cli import main
from daefr.commands._restore_setup import check_backend
from daefr.errors import ConfigError
from daefr.inference.file_kind import weights_file_kind

pytest.importorskip("cv2")


class Constant(nn.Module):
    """(B, 3, S, S) -> ``value`` everywhere; ``input_size`` S."""

    def __init__(self, size: int, value: float | None = None) -> None:
        super().__init__()
        self.input_size, self.value = size, value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone() if self.value is None else torch.full_like(x, self.value)


def _network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, size: int, value: float | None = None) -> dict[str, int]:
    import daefr.interop.restorer_io as restorer_io

    loads = {"n": 0}

    def load(path: object, **kw: object) -> nn.Module:
        loads["n"] += 1
        return Constant(size, value)

    monkeypatch.setattr(restorer_io, "load_restorer", load)
    (tmp_path / "w.safetensors").write_bytes(b"unused")
    return loads


def _run(tmp_path: Path, *args: str) -> int:
    return main(["restore", *args, "-w", str(tmp_path / "w.safetensors"), "--device", "cpu", "--no-progress"])


def test_start_line_and_aligned_size_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    _network(monkeypatch, tmp_path, 64)
    for name in ("a", "b"):
        Image.fromarray(np.full((40, 40, 3), (10, 200, 30), np.uint8)).save(tmp_path / f"{name}.png")
    assert _run(tmp_path, str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--aligned", "-o",
                str(tmp_path / "out")) == 0
    err = capsys.readouterr().err
    assert "model input 64x64 px, device cpu, backend torch" in err
    assert err.count("aligned inputs of 40x40 px are resized to the model's 64x64 px") == 1  # once
    assert Image.open(tmp_path / "out" / "restored_faces" / "a.png").size == (64, 64)


def test_faces_much_larger_than_the_model_are_warned_about_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    _network(monkeypatch, tmp_path, 16)
    photo = tmp_path / "astronaut.png"
    Image.fromarray(skdata.astronaut()).save(photo)
    assert _run(tmp_path, str(photo), "-o", str(tmp_path / "out"), "--detector-arg", "upsample=0") == 0
    err = capsys.readouterr().err
    assert err.count("WARNING: faces of about") == 1 and "by a 16 px model" in err and "blocky" in err


def test_no_warning_when_the_model_fits_the_faces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    _network(monkeypatch, tmp_path, 512)
    photo = tmp_path / "astronaut.png"
    Image.fromarray(skdata.astronaut()).save(photo)
    assert _run(tmp_path, str(photo), "-o", str(tmp_path / "out"), "--detector-arg", "upsample=0") == 0
    assert "WARNING" not in capsys.readouterr().err


def _fake_onnx(path: Path) -> Path:
    path.write_bytes(b"\x08\x07\x12\x07pytorch\x1a\x052.1.0" + b"\x00" * 64)
    return path


def _fake_torchscript(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model/code/__torch__.py", "")
        archive.writestr("model/constants.pkl", b"")
    return path


def test_backend_by_file_content_and_wrong_forced_backend(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    onnx = _fake_onnx(tmp_path / "m.onnx")
    script = _fake_torchscript(tmp_path / "m.ts")
    safet = tmp_path / "w.safetensors"
    header = b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}'
    safet.write_bytes(len(header).to_bytes(8, "little") + header + b"\x00" * 4)
    ckpt = tmp_path / "w.ckpt"
    torch.save({"state_dict": {}}, ckpt)
    assert [weights_file_kind(p) for p in (onnx, script, safet, ckpt)] == [
        "onnx", "torchscript", "safetensors", "checkpoint"]
    assert check_backend(str(onnx), "auto") == "onnx" and check_backend(str(script), "auto") == "torchscript"
    assert check_backend(str(safet), "auto") == "auto" and check_backend(str(safet), "onnx") == "onnx"
    assert check_backend("daefr", "auto") == "auto"  # a name: nothing to read here
    with pytest.raises(ConfigError, match="an ONNX model"):
        check_backend(str(onnx), "torch")
    with pytest.raises(ConfigError, match="not named like one"):
        check_backend(str(_fake_onnx(tmp_path / "model.bin")), "auto")
    photo = tmp_path / "p.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(photo)
    code = main(["restore", str(photo), "--aligned", "-o", str(tmp_path / "o"), "-w", str(script),
                 "--backend", "onnx", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err
    assert "--backend onnx cannot run" in err and "TorchScript archive" in err and "--backend torchscript" in err


@pytest.mark.parametrize(("flags", "needle"), [
    (["--detector", "dlib_hgo"], "--detector dlib_hgo"),
    (["--upsampler", "bicubc"], "--upsampler bicubc"),
    (["--detector", "retinaface_resnet50"], "detection_Resnet50_Final.pth"),
])
def test_set_up_errors_are_one_line_before_any_work(flags: list[str], needle: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DAEFR_WEIGHTS_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    loads = _network(monkeypatch, tmp_path, 64)
    for name in ("a", "b", "c"):
        Image.fromarray(skdata.astronaut()[:64, :64]).save(tmp_path / f"{name}.png")
    code = _run(tmp_path, *(str(tmp_path / f"{n}.png") for n in "abc"), "-o", str(tmp_path / "out"), *flags)
    out = capsys.readouterr()
    assert code == 1 and needle in out.err, out.err
    assert len(out.err.strip().splitlines()) == 1 and "Traceback" not in out.err
    assert loads["n"] == 0 and not out.out  # nothing loaded, no input tried
    assert not (tmp_path / "out").exists()


def test_suffix_ext_auto_gray_and_fidelity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _network(monkeypatch, tmp_path, 32, value=-1.0)  # the "restored" face is black
    color = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(color).save(tmp_path / "c.jpg", quality=100)
    gray = np.random.default_rng(1).integers(0, 256, (32, 32), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "g.png")
    out = tmp_path / "out"
    assert _run(tmp_path, str(tmp_path / "c.jpg"), str(tmp_path / "g.png"), "--aligned", "-o", str(out),
                "--suffix", "v1", "--ext", "auto", "--fidelity", "0.5") == 0
    assert sorted(p.name for p in (out / "restored_faces").iterdir()) == ["c_v1.jpg", "g_v1.png"]
    restored_gray = Image.open(out / "restored_faces" / "g_v1.png")
    assert restored_gray.mode == "L"  # a gray input gives a gray output
    # 0.5 x input + 0.5 x black (-1): pixel p -> p / 2
    assert np.abs(np.asarray(restored_gray).astype(int) - gray.astype(int) / 2).max() <= 1
    assert Image.open(out / "restored_faces" / "c_v1.jpg").mode == "RGB"
    assert main(["restore", str(tmp_path / "g.png"), "--aligned", "-o", str(tmp_path / "o2"), "-w",
                 str(tmp_path / "w.safetensors"), "--fidelity", "1.5"]) == 1
