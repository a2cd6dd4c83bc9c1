"""read_image / write_image / collect_inputs (daefr.utils.images)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from daefr.errors import ImageReadError
from daefr.utils.images import collect_inputs, read_image, write_image


def _rgb(seed: int, h: int = 24, w: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_png_roundtrip_exact(tmp_path: Path) -> None:
    pixels = _rgb(0)
    out = write_image(tmp_path / "a.png", pixels)
    got = read_image(out)
    assert got.dtype == np.uint8 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, pixels)
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


def test_write_image_formats_and_errors(tmp_path: Path) -> None:
    pixels = _rgb(1)
    yy, xx = np.mgrid[0:24, 0:32]
    smooth = np.stack([xx * 8, yy * 10, (xx + yy) * 4], axis=2).astype(np.uint8)
    jpg = read_image(write_image(tmp_path / "a.JPG", smooth, quality=95))
    assert np.abs(jpg.astype(int) - smooth).mean() < 3
    gray = np.full((16, 16), 77, np.uint8)
    np.testing.assert_array_equal(read_image(write_image(tmp_path / "g.png", gray)), np.full((16, 16, 3), 77))
    with pytest.raises(ValueError, match="uint8"):
        write_image(tmp_path / "f.png", pixels.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        write_image(tmp_path / "f.png", pixels[..., :2])
    with pytest.raises(ValueError, match="unknown image extension"):
        write_image(tmp_path / "f.xyz", pixels)
    with pytest.raises(FileExistsError):
        write_image(tmp_path / "g.png", pixels, overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.JPG", "g.png"]


def test_alpha_white_vs_drop(tmp_path: Path) -> None:
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, 8:, 3] = 255  # left half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    white = read_image(tmp_path / "a.png")
    np.testing.assert_array_equal(white[:, :8], np.full((16, 8, 3), 255))
    np.testing.assert_array_equal(white[:, 8:], np.broadcast_to([200, 0, 0], (16, 8, 3)))
    dropped = read_image(tmp_path / "a.png", alpha="drop")
    np.testing.assert_array_equal(dropped, np.broadcast_to([200, 0, 0], (16, 16, 3)))
    with pytest.raises(ValueError, match="alpha"):
        read_image(tmp_path / "a.png", alpha="black")  # type: ignore[arg-type]


def test_16bit_gray_scaled_to_8bit(tmp_path: Path) -> None:
    values = np.array([[0, 257 * 10, 65535, 257 * 128]] * 8, dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    got = read_image(tmp_path / "g16.png", min_size=1)
    np.testing.assert_array_equal(got[0, :, 0], [0, 10, 255, 128])
    assert (got[..., 0] == got[..., 1]).all() and (got[..., 1] == got[..., 2]).all()


def test_exif_rotation_applied(tmp_path: Path) -> None:
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    Image.fromarray(pixels).save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=100)
    got = read_image(tmp_path / "r.jpg")
    assert got.shape == (40, 20, 3)
    assert got[:15].mean() > 200 and got[25:].mean() < 50  # the white left half is now on top


def test_animated_gif_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=40)
    got = read_image(tmp_path / "a.gif")
    assert tuple(got[8, 8]) == (255, 0, 0)


def test_size_limits_configurable(tmp_path: Path) -> None:
    write_image(tmp_path / "s.png", _rgb(2, 12, 10))
    assert read_image(tmp_path / "s.png").shape == (12, 10, 3)
    with pytest.raises(ImageReadError, match=r"too small \(10x12; the minimum side is 11 px\)"):
        read_image(tmp_path / "s.png", min_size=11)
    with pytest.raises(ImageReadError, match="declared size 10x12 .120 pixels. exceeds the limit of 100"):
        read_image(tmp_path / "s.png", max_pixels=100)


def test_error_messages_are_one_line_and_name_file(tmp_path: Path) -> None:
    (tmp_path / "t.png").write_text("hello\nworld\n")
    for name in ("t.png", "missing.png"):
        with pytest.raises(ImageReadError) as info:
            read_image(tmp_path / name)
        assert str(tmp_path / name) in str(info.value) and "\n" not in str(info.value)
        assert info.value.__cause__ is None


_DROP_AND_READ = r"""
import os, sys
from PIL import Image
from daefr.errors import ImageReadError
from daefr.utils.images import read_image
Image.init()  # import the format plugins before losing access to the interpreter's files
if os.geteuid() == 0:  # root reads mode-000 files: become 'nobody' to test the refusal honestly
    os.setgid(65534)
    os.setuid(65534)
try:
    read_image(sys.argv[1])
except ImageReadError as exc:
    print(exc)
"""


def test_permission_denied(tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="daefr-perm-"))  # outside root's 0700 pytest folder
    try:
        folder.chmod(0o755)
        write_image(folder / "p.png", _rgb(3))
        os.chmod(folder / "p.png", 0)
        proc = subprocess.run(
            [sys.executable, "-c", _DROP_AND_READ, str(folder / "p.png")], capture_output=True, text=True, timeout=60
        )
        if proc.returncode != 0 and "Operation not permitted" in proc.stderr:
            pytest.skip("cannot drop privileges in this environment")
        assert proc.returncode == 0, proc.stderr[-1000:]
        assert proc.stdout.strip() == f"{folder / 'p.png'}: permission denied"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_collect_inputs_files_folders_globs(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for name in ("b.png", "a.JPG", "c.txt", ".hidden.png", "sub/d.png"):
        (folder / name).write_bytes(b"x")
    (folder / "dir.png").mkdir()
    explicit = tmp_path / "notes.data"
    explicit.write_bytes(b"x")
    got = collect_inputs([str(folder), str(explicit), str(folder / "b.png")])
    assert got == [folder / "a.JPG", folder / "b.png", folder / "dir.png", explicit]
    assert collect_inputs([folder], recursive=True) == [folder / "a.JPG", folder / "b.png", folder / "sub" / "d.png"]
    assert collect_inputs([str(folder / "*.png")]) == [folder / "b.png", folder / "dir.png"]
    assert collect_inputs([str(folder / "**" / "*.png")]) == [
        folder / "b.png", folder / "dir.png", folder / "sub" / "d.png"
    ]
    assert collect_inputs([folder], exts=["txt"]) == [folder / "c.txt"]
    with pytest.raises(ImageReadError, match="pattern matches no images"):
        collect_inputs([str(folder / "*.webp")])
    with pytest.raises(ImageReadError, match="no such file or folder"):
        collect_inputs([str(tmp_path / "nope.png")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageReadError, match="folder contains no images"):
        collect_inputs([tmp_path / "empty"])
    # a broken link named explicitly is kept, so reading it reports why
    (tmp_path / "broken.png").symlink_to(tmp_path / "gone.png")
    assert collect_inputs([tmp_path / "broken.png"]) == [tmp_path / "broken.png"]
