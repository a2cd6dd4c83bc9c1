"""Held-out evaluation of a trained chain: degrade held-out HQ faces once, restore them, score them.

Used by ``daefr demo`` and ``daefr experiment``. The test degradation is fixed by a seed (per image
``seed * 100003 + index``): Gaussian blur (sigma from ``sigma``) -> antialiased bilinear downscale by
``scale`` -> Gaussian noise (``noise``, 8-bit units) -> JPEG (quality from ``jpeg``). The restorer sees
the small LQ image bilinearly upsampled to the model size (as in training); the baseline is bicubic
upsampling of the same LQ image.
"""

from __future__ import annotations

import io
import json
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from daefr.errors import ConfigError


@dataclass(frozen=True)
class HeldOut:
    """Which held-out faces, their size and crop, the fixed test degradation and the metrics."""

    hq: Path | None = None
    size: int = 32
    limit: int | None = None
    metrics: tuple[str, ...] = ("psnr", "ssim", "ids")
    seed: int = 0
    crop: tuple[int, int, int, int] | None = None  # (left, top, right, bottom) taken before resizing
    scale: int = 4
    sigma: tuple[float, float] = (0.5, 1.5)
    noise: tuple[float, float] = (2.0, 8.0)
    jpeg: tuple[int, int] = (70, 90)


def find_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (sorted), in the formats daefr reads."""
    from daefr.utils.images import IMAGE_EXTENSIONS

    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def load_square(path: Path, size: int, crop: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """An RGB face, optionally cropped to ``crop``, resized and centre-cropped to ``size`` (as training does)."""
    from daefr.data.decode import resize_center_crop
    from daefr.utils.images import read_image

    face = Image.fromarray(read_image(path))
    if crop is not None:
        face = face.crop(crop)
    return np.asarray(resize_center_crop(face, size))


def resize(image: np.ndarray, size: int, method: Image.Resampling) -> np.ndarray:
    """Resize an (H, W, 3) uint8 image to (size, size)."""
    return np.asarray(Image.fromarray(image).resize((size, size), method))


def degrade(hq: np.ndarray, heldout: HeldOut, seed: int) -> np.ndarray:
    """Fixed-seed test degradation of an (H, W, 3) uint8 face; returns the small LQ (H/scale, W/scale, 3)."""
    rng = np.random.default_rng(seed)
    x = torch.tensor(hq).permute(2, 0, 1)[None].float() / 255.0
    sigma = float(rng.uniform(*heldout.sigma))
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = g / g.sum()
    x = F.pad(x, (radius,) * 4, mode="reflect")
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    x = F.conv2d(x, g.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
    small = hq.shape[0] // heldout.scale
    x = F.interpolate(x, size=(small, small), mode="bilinear", align_corners=False, antialias=True)
    noise = torch.from_numpy(rng.standard_normal(x.shape).astype(np.float32))
    x = (x + noise * float(rng.uniform(*heldout.noise)) / 255.0).clamp(0, 1)
    arr = (x[0].permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, format="JPEG", quality=int(rng.integers(*heldout.jpeg, endpoint=True)))
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def build_heldout(files: Sequence[Path], heldout: HeldOut, folder: Path) -> dict[str, Path]:
    """Write ``gt/``, ``lq/`` (small) and ``bicubic/`` (the baseline) under ``folder``; reused when unchanged."""
    from daefr.utils.images import write_image

    if len(files) < 2:
        raise ConfigError(f"held-out evaluation needs at least 2 faces, got {len(files)}")
    dirs = {k: folder / k for k in ("gt", "lq", "bicubic")}
    stamp = folder / "heldout.json"
    settings = json.dumps({"files": [str(f) for f in files],
                           **{k: str(v) for k, v in vars(heldout).items() if k != "metrics"}}, sort_keys=True)
    if stamp.is_file() and stamp.read_text(encoding="utf-8") == settings:
        return dirs  # made by an earlier run with the same faces and settings
    for d in dirs.values():
        if d.exists():
            shutil.rmtree(d)  # our own folder from a run with other settings
        d.mkdir(parents=True)
    for index, path in enumerate(files):
        gt = load_square(path, heldout.size, heldout.crop)
        lq = degrade(gt, heldout, seed=heldout.seed * 100003 + index)
        write_image(dirs["gt"] / f"{path.stem}.png", gt)
        write_image(dirs["lq"] / f"{path.stem}.png", lq)
        write_image(dirs["bicubic"] / f"{path.stem}.png", resize(lq, heldout.size, Image.Resampling.BICUBIC))
    stamp.write_text(settings, encoding="utf-8")
    return dirs


@torch.inference_mode()
def restore_folder(weights: Path, lq_dir: Path, out_dir: Path, image_size: int) -> list[Path]:
    """Restore every small LQ face (bilinear-upsampled to the model size, as in training) into ``out_dir``."""
    from daefr.interop.restorer_io import load_restorer
    from daefr.utils.images import read_image, write_image

    restorer = load_restorer(weights).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in find_images(lq_dir):
        lq = torch.tensor(read_image(path)).permute(2, 0, 1)[None].float() / 127.5 - 1.0
        lq = F.interpolate(lq, size=(image_size, image_size), mode="bilinear", align_corners=False)
        restored = restorer(lq.clamp(-1, 1))
        image = ((restored[0].clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
        target = out_dir / path.name
        write_image(target, image)
        written.append(target)
    return written


def score(folder: Path, gt: Path, metrics: Sequence[str]) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Per-image rows and the mean of each metric (strict: a metric that cannot run is an error)."""
    from daefr.metrics.suite import MetricsConfig, evaluate_folders

    result = evaluate_folders(folder, gt, config=MetricsConfig(metrics=tuple(metrics), strict=True))
    summary = {k: float(v) for k, v in result.summary.items() if k in metrics and v is not None}
    return result.rows, summary
