"""Reading 8-bit RGB images for evaluation and pairing folders by file name."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from daefr.errors import ConfigError
from daefr.utils.images import IMAGE_EXTENSIONS

#: The image files evaluation reads: the same list as ``daefr restore`` (:data:`daefr.utils.images.IMAGE_EXTENSIONS`).
IMAGE_SUFFIXES = IMAGE_EXTENSIONS


def read_rgb8(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as an (H, W, 3) uint8 RGB array (grey converted, alpha dropped, EXIF applied)."""
    from daefr.utils.images import read_image

    image = read_image(path, min_size=1, alpha="drop")
    # writable, so torch.from_numpy on it is well defined
    return image if image.flags.writeable else image.copy()


def write_rgb8(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 array atomically; the format follows the extension."""
    from daefr.utils.images import write_image

    write_image(path, np.ascontiguousarray(image, dtype=np.uint8))


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name; an error if none or not a folder."""
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"{str(root)!r} is not a folder")
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {str(root)!r}")
    return files


def pair_by_name(
    restored: str | os.PathLike[str], reference: str | os.PathLike[str]
) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Pair images of two folders by file stem; returns the pairs and the stems found in only one folder."""
    left = {p.stem: p for p in list_images(restored)}
    right = {p.stem: p for p in list_images(reference)}
    common = sorted(set(left) & set(right))
    if not common:
        raise ConfigError(
            f"no file names in common between {str(restored)!r} and {str(reference)!r} "
            "(images are paired by name without extension)"
        )
    unpaired = sorted(set(left) ^ set(right))
    return [(left[s], right[s]) for s in common], unpaired
