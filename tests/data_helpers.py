"""Test fixtures for the data tests: tiny seeded face-like image folders with known bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

BAD_FILES = ("bad_text.png", "empty.jpg", "truncated.png", "tiny.png", "folder.jpg", "loop.png")


def make_image_folder(root: Path, n_good: int = 12, size: int = 32, bad: bool = True, seed: int = 0) -> dict[str, np.ndarray]:
    """Write ``n_good`` random RGB PNGs (one in a sub-folder, one gray) and, if ``bad``, the BAD_FILES.

    Returns the expected RGB pixels (H, W, 3) uint8 per sample key.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "sub").mkdir(exist_ok=True)
    expected: dict[str, np.ndarray] = {}
    for i in range(n_good):
        if i == 1:  # a gray image: stored as L, read back as RGB with three equal channels
            gray = rng.integers(0, 256, (size, size), dtype=np.uint8)
            Image.fromarray(gray).save(root / "sub" / "gray.face.png")
            expected["sub/gray_face"] = np.repeat(gray[..., None], 3, axis=2)
            continue
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"face{i:03d}.png")
        expected[f"face{i:03d}"] = pixels
    if bad:
        (root / "bad_text.png").write_text("this is not an image")
        (root / "empty.jpg").write_bytes(b"")
        data = (root / "face000.png").read_bytes()
        (root / "truncated.png").write_bytes(data[: len(data) // 2])
        Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).save(root / "tiny.png")
        (root / "folder.jpg").mkdir()
        (root / "loop.png").symlink_to("loop.png")
    return expected


def make_paired_folder(root: Path, n: int = 6, size: int = 32, seed: int = 1) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``root/lq`` and ``root/gt`` with ``n`` pairs of the same names; returns (lq, gt) pixels per key."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "lq").mkdir(parents=True, exist_ok=True)
    (root / "gt").mkdir(parents=True, exist_ok=True)
    out = {}
    for i in range(n):
        gt = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        lq = (gt // 4 * 4).astype(np.uint8)
        Image.fromarray(gt).save(root / "gt" / f"p{i:02d}.png")
        Image.fromarray(lq).save(root / "lq" / f"p{i:02d}.png")
        out[f"p{i:02d}"] = (lq, gt)
    return out


def to_pixels(batch_images: object) -> list[np.ndarray]:
    """(B, 3, H, W) in [-1, 1] -> list of (H, W, 3) uint8 arrays."""
    from daefr.data.decode import to_uint8

    tensor = to_uint8(batch_images)  # type: ignore[arg-type]
    return [t.permute(1, 2, 0).numpy() for t in tensor]
