"""`daefr restore` option plumbing: --arch/--fast to the loader, --detector-arg, output naming."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from daefr.cli import main
from daefr.commands._restore_run import OutputWriter
from daefr.inference.detection import DetectedFace, FaceDetector
from daefr.inference.restorer import Restorer

pytest.importorskip("cv2")


class Identity64(nn.Module):
    input_size = 64

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.fixture()
def captured(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Records what the command passes to the loader and to the Restorer."""
    import daefr.interop.restorer_io as restorer_io

    calls: dict[str, Any] = {}

    def fake_load(path: Any, **kwargs: Any) -> nn.Module:
        calls["load"] = kwargs
        return Identity64()

    real_init = Restorer.__init__

    def spy_init(self: Restorer, model: nn.Module, **kwargs: Any) -> None:
        calls["restorer"] = kwargs
        real_init(self, model, **kwargs)

    monkeypatch.setattr(restorer_io, "load_restorer", fake_load)
    monkeypatch.setattr(Restorer, "__init__", spy_init)
    return calls


@pytest.fixture()
def crop(tmp_path: Path) -> Path:
    path = tmp_path / "face.png"
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(path)
    return path


@pytest.mark.parametrize(
    ("flags", "expected", "fast"),
    [
        ([], {}, False),
        (["--arch", "tiny", "--fast"], {"preset": "tiny"}, True),
        (["--arch", '{"ch": 32, "ch_mult": [1, 2, 2]}'], {"ch": 32, "ch_mult": [1, 2, 2]}, False),
    ],
)
def test_arch_and_fast_reach_the_loader(
    flags: list[str], expected: dict[str, Any], fast: bool, captured: dict[str, Any], crop: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import daefr.models.inference_options as inference_options

    optimized: list[Any] = []

    def fake_optimize(module: nn.Module, options: Any) -> nn.Module:
        optimized.append(options)
        return module

    monkeypatch.setattr(inference_options, "optimize_for_inference", fake_optimize)
    (tmp_path / "x.ckpt").write_bytes(b"stand-in: the loader is replaced")
    code = main(["restore", str(crop), "--aligned", "-o", str(tmp_path / "o"), "-w", str(tmp_path / "x.ckpt"),
                 "--no-progress",
                 *flags])
    assert code == 0
    assert captured["load"] == expected
    # --fast is applied after loading, through the fast inference path (with --precision)
    assert [o.fast for o in optimized] == ([True] if fast else [])


def test_detector_args_and_speed_options_reach_the_restorer(captured: dict[str, Any], crop: Path,
                                                            tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"stand-in: the loader is replaced")
    code = main(["restore", str(crop), "--aligned", "-o", str(tmp_path / "o"), "-w", str(tmp_path / "x"),
                 "--no-progress",
                 "--detector-arg", "landmarks=5", "--detector-arg", "weights=/some/file.dat",
                 "--batch-size", "3", "--precision", "bf16", "--device", "cpu", "--paste", "residual",
                 "--upsampler", "lanczos"])
    assert code == 0
    options = captured["restorer"]
    assert options["detector"] == {"name": "dlib_hog", "landmarks": 5, "weights": "/some/file.dat"}
    assert (options["batch_size"], options["precision"], options["device"]) == (3, "bf16", "cpu")
    assert (options["paste"], options["upsampler"]) == ("residual", "lanczos")


def test_bad_option_values(capsys: pytest.CaptureFixture[str], crop: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["restore", str(crop), "-o", str(tmp_path), "-w", "x", "--detector-arg", "novalue"])
    for flags, fragment in ((["--upscale", "0"], "--upscale"), (["--max-faces", "0"], "--max-faces"),
                            (["--arch", "{not json"], "--arch")):
        assert main(["restore", str(crop), "-o", str(tmp_path / "o"), "-w", "x", *flags]) == 1
        assert fragment in capsys.readouterr().err
    assert main(["restore", str(crop), "-o", str(crop), "-w", "x"]) == 1  # output is a file
    assert "not a folder" in capsys.readouterr().err


def test_output_names_never_collide(tmp_path: Path) -> None:
    writer = OutputWriter(tmp_path, "png", aligned=False, compare=True)
    first = writer.reserve("photo", 2)
    assert first["restored_faces"] == [tmp_path / "restored_faces" / "photo_00.png",
                                       tmp_path / "restored_faces" / "photo_01.png"]
    assert first["comparisons"] == [tmp_path / "comparisons" / "photo.png"]
    second = writer.reserve("photo", 1)  # another input with the same stem in this run
    assert second["restored_imgs"] == [tmp_path / "restored_imgs" / "photo_1.png"]
    (tmp_path / "cropped_faces").mkdir()
    (tmp_path / "cropped_faces" / "photo_2_00.png").write_bytes(b"earlier run")
    third = writer.reserve("photo", 1)  # any existing file of the plan moves the whole input on
    assert third["restored_imgs"] == [tmp_path / "restored_imgs" / "photo_3.png"]
    aligned = OutputWriter(tmp_path, "jpg", aligned=True, compare=False).reserve("face", 1)
    assert set(aligned) == {"restored_faces", "cropped_faces"}
    assert aligned["restored_faces"] == [tmp_path / "restored_faces" / "face.jpg"]


class OneFace(FaceDetector):
    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        from daefr.inference.alignment import face_template

        points = face_template(512) / 512 * 30 + 5
        return [DetectedFace(np.array([5.0, 5.0, 35.0, 35.0]), 1.0, points)]


def test_custom_detector_instance_in_the_api() -> None:
    restorer = Restorer(Identity64(), detector=OneFace())
    result = restorer.restore(np.full((50, 60, 3), 90, np.uint8))
    assert len(result.faces) == 1 and result.faces[0].restored.shape == (64, 64, 3)
