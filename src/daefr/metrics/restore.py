"""Restore a folder of faces with a :class:`~daefr.inference.restorer.Restorer` before scoring."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from daefr.metrics.images import list_images, read_rgb8, write_rgb8


def restore_folder(restorer: Any, lq_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                   aligned: bool = True) -> list[Path]:
    """Restore every image of ``lq_dir`` into ``out_dir/<stem>.png``; returns the written paths.

    ``aligned`` inputs are face crops (the test-set convention); a restored crop is resized back to
    the input's size (bicubic) when the network's face size differs, so it pairs with the GT.
    """
    from PIL import Image

    out = Path(out_dir)
    written: list[Path] = []
    items = ((f, read_rgb8(f)) for f in list_images(lq_dir))
    for path, result in restorer.restore_many(items, aligned=aligned):
        image = result.restored_image
        h, w = result.input_image.shape[:2]
        if aligned and image.shape[:2] != (h, w):
            image = np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BICUBIC))
        target = out / f"{path.stem}.png"
        write_rgb8(target, image)
        written.append(target)
    return written
