"""``daefr degrade-preview``: a grid PNG of one face under each degradation preset (rows) and seed (columns)."""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Any

NAME = "degrade-preview"
HELP = "write a PNG grid of one face degraded by each degradation preset"

DEFAULT_PRESETS = ("daefr_small", "daefr_large", "codeformer", "gfpgan")
_DEMO_FACE = Path(__file__).resolve().parents[1] / "assets" / "demo_faces" / "val"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``daefr degrade-preview`` options to ``parser``."""
    parser.add_argument("image", nargs="?", default=None,
                        help="face image (default: the first face of the package's demo assets)")
    parser.add_argument("-o", "--output", default="degrade_preview.png",
                        help="output PNG path (refused if it exists, unless --force; never the input image)")
    parser.add_argument("--force", action="store_true", help="replace OUTPUT if it exists")
    parser.add_argument("--presets", nargs="+", default=list(DEFAULT_PRESETS),
                        help="names in the 'degradations' registry group (rows of the grid)")
    parser.add_argument("--samples", type=int, default=4, help="degraded samples per preset (columns)")
    parser.add_argument("--size", type=int, default=256, help="side of each tile in pixels (>= 48)")
    parser.add_argument("--seed", type=int, default=0, help="random seed")


def _default_face() -> Path:
    from daefr.errors import ConfigError

    faces = sorted(_DEMO_FACE.glob("*.png")) if _DEMO_FACE.is_dir() else []
    if not faces:
        raise ConfigError("no demo face is packaged here; pass an image path: daefr degrade-preview FACE.png")
    return faces[0]


CAPTION_H = 52  # four text lines under each row of tiles


def tile_caption(params: dict[str, Any], index: int) -> str:
    """The sampled parameters of sample ``index`` in a few short lines (blur, scale, noise, JPEG, colour)."""
    def value(key: str) -> float | None:
        tensor = params.get(key)
        return None if tensor is None else float(tensor[index])

    lines = []
    if (sx := value("sigma_x")) is not None:
        sy, size = value("sigma_y"), value("kernel_size")
        sigma = f"{sx:.1f}" if sy is None or abs(sy - sx) < 0.05 else f"{sx:.1f}x{sy:.1f}"
        lines.append(f"blur {sigma}" + (f" k{size:.0f}" if size is not None else ""))
    if (scale := value("scale")) is not None:
        lines.append(f"down x{scale:.2f}")
    if (noise := value("noise_sigma")) is not None:
        lines.append(f"noise {noise:.1f}" + (" poisson" if value("poisson") else ""))
    if (quality := value("jpeg_quality")) is not None:
        extra = " gray" if value("gray") else ""
        lines.append(f"jpeg q{quality:.0f}{extra}")
    return "\n".join(lines[:4])


def run(args: argparse.Namespace) -> int:
    """Run ``daefr degrade-preview`` (write the degradation preview grid) with the parsed ``args``; returns the exit code."""
    import numpy as np
    import torch
    from PIL import Image, ImageDraw

    from daefr.errors import ConfigError, ImageReadError
    from daefr.registry import REGISTRY
    from daefr.utils.images import read_image
    from daefr.utils.io import (
        atomic_write_bytes,
        clean_orphaned_temps,
        is_special_file,
        refuse_input_as_output,
    )

    if args.samples < 1:
        raise ConfigError(f"--samples must be at least 1, got {args.samples}")
    if args.size < 48:
        raise ConfigError(f"--size must be at least 48 (the blur kernels are 41 px wide), got {args.size}")
    path = Path(args.image) if args.image else _default_face()
    out = Path(args.output)
    refuse_input_as_output(out, path, "--output")
    if out.is_dir():
        raise ConfigError(f"--output {out} is a folder; give a .png file path")
    if out.exists() and not args.force and not is_special_file(out):
        raise ConfigError(f"--output {out} already exists; pass --force to replace it or choose another path")
    # read_image: only the listed formats, the pixel limit checked from the header (a 30000^2 PNG is refused
    # in one line before decoding), every failure an ImageReadError line
    try:
        pixels = read_image(path, min_size=1)
    except ImageReadError as exc:
        raise ImageReadError(f"cannot read image {exc}") from None
    face = Image.fromarray(pixels).resize((args.size, args.size), Image.Resampling.BICUBIC)
    hq = torch.from_numpy(np.asarray(face, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    hq = hq.expand(args.samples, -1, -1, -1)
    label_w, s = 110, args.size
    row_h = s + CAPTION_H  # each tile is labelled with its sampled parameters underneath
    grid = Image.new("RGB", (label_w + s * (args.samples + 1), row_h * len(args.presets)), "white")
    draw = ImageDraw.Draw(grid)
    for row, name in enumerate(args.presets):
        module = REGISTRY.build("degradations", name)
        gen = torch.Generator().manual_seed(args.seed)
        result = module(hq, generator=gen)
        tiles = (result.lq.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        grid.paste(face, (label_w, row * row_h))
        draw.text((label_w + 4, row * row_h + s + 2), "input", fill="black")
        for col, tile in enumerate(tiles):
            x = label_w + s * (col + 1)
            grid.paste(Image.fromarray(tile), (x, row * row_h))
            draw.multiline_text((x + 4, row * row_h + s + 2), tile_caption(result.params, col), fill="black",
                                spacing=1)
        draw.text((6, row * row_h + s // 2 - 6), name, fill="black")
    buffer = io.BytesIO()  # encoded first: Pillow seeks in its output, which a FIFO or /dev/stdout cannot
    grid.save(buffer, format="PNG")
    clean_orphaned_temps(out.parent, out.name)  # left by a run killed mid-write
    atomic_write_bytes(out, buffer.getvalue(), overwrite=bool(args.force))
    print(f"wrote {out} ({len(args.presets)} presets x {args.samples} samples, first column: input)")
    return 0
