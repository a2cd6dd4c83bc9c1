"""A new restoration domain: crops of printed text, rendered locally and deterministically."""

from __future__ import annotations

import io
import random
import string
from collections.abc import Iterator

from PIL import Image, ImageDraw, ImageFont

from daefr.data.sources import RawSample, Source, Unit
from daefr.errors import ConfigError

_WORDS = string.ascii_letters + string.digits


def render_text_crop(index: int, size: int = 64, seed: int = 0) -> Image.Image:
    """One RGB ``size`` x ``size`` crop of dark text lines on light paper; a pure function of its arguments."""
    rng = random.Random(f"{seed}/{index}")
    paper = tuple(rng.randint(225, 255) for _ in range(3))
    ink = tuple(rng.randint(0, 60) for _ in range(3))
    image = Image.new("RGB", (size, size), paper)
    draw = ImageDraw.Draw(image)
    font_size = rng.choice((10, 12, 14, 16))
    font = ImageFont.load_default(size=font_size)
    y = rng.randint(-font_size // 2, 2)
    while y < size:
        x = rng.randint(-8, 4)
        words = " ".join("".join(rng.choice(_WORDS) for _ in range(rng.randint(2, 7))) for _ in range(6))
        draw.text((x, y), words, fill=ink, font=font)
        y += font_size + rng.randint(2, 6)
    return image


class TextCropSource(Source):
    """``count`` synthetic text crops of ``size`` px, in units of ``unit_size`` samples (PNG bytes)."""

    def __init__(self, count: int = 256, size: int = 64, seed: int = 0, unit_size: int = 16) -> None:
        if count < 1 or size < 16 or unit_size < 1:
            raise ConfigError(f"text_crops needs count >= 1, size >= 16, unit_size >= 1; got {count}, {size}, {unit_size}")
        self.count, self.size, self.seed, self.unit_size = count, size, seed, unit_size

    def units(self) -> list[Unit]:
        """Units of consecutive sample indices, named ``text-<start>``."""
        starts = range(0, self.count, self.unit_size)
        return [Unit(f"text-{s:06d}", min(self.unit_size, self.count - s)) for s in starts]

    def read(self, unit: Unit) -> Iterator[RawSample]:
        """Render the crops of one unit as PNG-encoded samples."""
        start = int(unit.name.split("-")[1])
        for index in range(start, start + int(unit.count or 0)):
            buffer = io.BytesIO()
            render_text_crop(index, self.size, self.seed).save(buffer, format="PNG")
            yield f"text-{index:06d}", {"png": buffer.getvalue()}

    def describe(self) -> str:
        return f"{self.count} synthetic text crops of {self.size} px (seed {self.seed})"
