"""A classical (non-learned) restoration baseline for the example report: denoise, then sharpen.

It is *not* DAEFR; it only gives the example a second run to compare against the raw LQ inputs.
Usage: python classical_baseline.py LQ_DIR OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from daefr.metrics.images import list_images, read_rgb8, write_rgb8


def restore(rgb: np.ndarray) -> np.ndarray:
    """Non-local-means denoising followed by an unsharp mask (amount 0.6, sigma 1.5)."""
    den = cv2.fastNlMeansDenoisingColored(np.ascontiguousarray(rgb), None, 7, 7, 5, 15)
    blur = cv2.GaussianBlur(den, (0, 0), 1.5)
    return np.clip(den.astype(np.float32) * 1.6 - blur.astype(np.float32) * 0.6, 0, 255).astype(np.uint8)


if __name__ == "__main__":
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    for path in list_images(src):
        write_rgb8(dst / f"{path.stem}.png", restore(read_rgb8(path)))
