"""Issue 15: size limits and decoded formats, each checked before anything large is allocated.

A 1-bit PNG of 9400 x 9400 pixels is a 11 MB-of-pixels file that decodes to 265 MB of RGB and took
4.6 GB in ``restore``: refused from its header. Formats that start external programs (EPS via
Ghostscript) never reach Pillow's plugins. ``--upscale`` is bounded.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image

from daefr.cli import main
from daefr.errors import ConfigError, ImageReadError
from daefr.utils.images import DECODED_FORMATS, DEFAULT_MAX_PIXELS, read_image
from fixtures.bad_files import _raw_png


def test_one_bit_bomb_png_refused_from_its_header(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb1bit.png"
    rows = (b"\x00" + b"\x00" * (9400 // 8 + 1)) * 9400  # filter byte + packed 1-bit row, all black
    bomb.write_bytes(_raw_png(9400, 9400, 1, 0, rows))
    assert bomb.stat().st_size < 1 << 20 and 9400 * 9400 > DEFAULT_MAX_PIXELS
    start = time.perf_counter()
    with pytest.raises(ImageReadError, match=r"declared size 9400x9400 .* exceeds the limit of 67108864 pixels"):
        read_image(bomb)
    assert time.perf_counter() - start < 1.0  # refused without decoding 88 Mpx


def test_degrade_preview_on_a_huge_png_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    huge = tmp_path / "huge.png"
    huge.write_bytes(_raw_png(30000, 30000, 8, 0, b"\x00" * 100))
    assert main(["degrade-preview", str(huge), "-o", str(tmp_path / "grid.png")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "exceeds the limit" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "grid.png").exists()


def test_eps_and_unlisted_formats_never_reach_pillow_plugins(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", lambda self: calls.append("eps-open"))
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: calls.append("ghostscript"))
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n0 0 moveto 16 16 lineto stroke\nshowpage\n"
    for name in ("photo.eps", "photo.png", "photo.jpg"):
        (tmp_path / name).write_bytes(eps)
        with pytest.raises(ImageReadError, match="EPS/PostScript files are not decoded"):
            read_image(tmp_path / name)
    assert calls == []
    ppm = tmp_path / "ppm.png"  # a format Pillow decodes but daefr does not list
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(ppm, format="PPM")
    with pytest.raises(ImageReadError, match="not an image"):
        read_image(ppm)
    assert "PNG" in DECODED_FORMATS and "EPS" not in DECODED_FORMATS
    jpeg_named_png = tmp_path / "jpeg.png"  # listed formats are found by content, whatever the name
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(jpeg_named_png, format="JPEG")
    assert read_image(jpeg_named_png).shape == (16, 16, 3)


def test_upscale_is_bounded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from daefr.inference.restorer import MAX_UPSCALE, Restorer

    face = tmp_path / "face.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(face)
    for value in ("30", "nan", "0"):
        code = main(["restore", str(face), "-o", str(tmp_path / "out"), "-w", str(tmp_path / "none.safetensors"),
                     "--upscale", value])
        err = capsys.readouterr().err
        assert code == 1 and "--upscale must be in (0, 8]" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
    restorer = Restorer.__new__(Restorer)
    with pytest.raises(ConfigError, match="upscale must be in"):
        next(restorer.restore_many([], upscale=MAX_UPSCALE * 2))


# ----- one line instead of a traceback ----------------------------------------------------------------


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


@pytest.fixture(scope="module")
def small_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from daefr.interop.restorer_io import save_restorer
    from daefr.models.restorer import DAEFRRestorer

    small: dict[str, Any] = {"ch_mult": [1, 2], "resolution": 16, "attn_resolutions": [8], "z_channels": 32, "embed_dim": 32,
             "n_embed": 64, "n_layers": 1, "transformer_dim": 32, "dim_mlp": 64}
    return save_restorer(DAEFRRestorer.from_config("tiny", **small), tmp_path_factory.mktemp("w") / "small.safetensors")


@pytest.mark.parametrize(("arch", "needle"), [('{"ch": "x"}', "cannot build the restorer architecture"),
                                              ('{"ch_mult": ["x"]}', "are not usable")])
def test_bad_arch_keywords_are_one_line(small_weights: Path, tmp_path: Path, arch: str, needle: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    face = tmp_path / "face.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(face)
    assert main(["restore", str(face), "-o", str(tmp_path / "out"), "-w", str(small_weights), "--arch", arch,
                 "--aligned", "--device", "cpu", "--no-progress"]) == 1
    assert needle in _one_error_line(capsys)


def test_unavailable_device_is_one_line(small_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    face = tmp_path / "face.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(face)
    devices = [d for d, ok in (("mps", torch.backends.mps.is_available()), ("cuda", torch.cuda.is_available()),
                               ("cuda:7", torch.cuda.device_count() > 7)) if not ok]
    assert devices, "every device exists here: nothing to refuse"
    for device in devices:
        assert main(["restore", str(face), "-o", str(tmp_path / "out"), "-w", str(small_weights), "--aligned",
                     "--device", device, "--no-progress"]) == 1
        line = _one_error_line(capsys)
        assert f"device {device!r} requested but" in line and "--device cpu" in line


@pytest.mark.parametrize("content", [b"random bytes, not numpy", b"PK\x03\x04not a zip"])
def test_bad_niqe_params_is_one_line(tmp_path: Path, content: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    for folder in ("restored", "gt"):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.full((32, 32, 3), 100, np.uint8)).save(tmp_path / folder / "a.png")
    bad = tmp_path / "niqe.npz"
    bad.write_bytes(content)
    assert main(["evaluate", "--restored", str(tmp_path / "restored"), "--gt", str(tmp_path / "gt"),
                 "--metrics", "niqe", "--niqe-params", str(bad), "-o", str(tmp_path / "report")]) == 1
    line = _one_error_line(capsys)
    assert f"--niqe-params {bad}: not a readable NIQE parameter file" in line
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize("arch", ['{"ch": "x"}', '{"ch_mult": ["x"]}'])
def test_convert_with_bad_arch_keywords_is_one_line(parity_dir: Path, tmp_path: Path, arch: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.safetensors"
    assert main(["convert", str(parity_dir / "vqgan_tiny_pl108.ckpt"), str(out), "--arch", arch]) == 1
    assert "cannot build the codebook architecture" in _one_error_line(capsys) and not out.exists()
