"""Robust image reading/writing and input collection: every unusable file gets a one-line reason.

``read_image`` returns ``(H, W, 3) uint8`` RGB for anything Pillow decodes: grayscale, palette
(with or without transparency), RGBA/LA (composited on white by default, or alpha dropped), 16-bit
and 32-bit integer or float grayscale (scaled to 8 bits), CMYK, YCbCr/LAB; EXIF orientation is applied;
animated files give their first frame. It raises :class:`~daefr.errors.ImageReadError` with one line
naming the file and the reason for: missing file, broken symlink, symlink loop, directory, non-regular
file, unreadable permissions, zero bytes, non-image data, truncated/corrupt data, images smaller than
``min_size`` and declared sizes above ``max_pixels`` (checked from the header, before decoding, so a
tiny "decompression bomb" file costs nothing). The input file is only ever opened for reading.

Only the formats in :data:`DECODED_FORMATS` are decoded: Pillow is never asked to identify anything
else, so EPS/PostScript (which Pillow hands to Ghostscript), PDF and the other plugins never see the
file. The pixel limit is :data:`DEFAULT_MAX_PIXELS` (64 Mpx; ``DAEFR_MAX_PIXELS`` overrides it).
"""

from __future__ import annotations

import errno
import glob
import os
import stat
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from daefr.errors import ImageReadError
from daefr.utils.io import atomic_open
from daefr.utils.reasons import one_line_reason

__all__ = [
    "DECODED_FORMATS",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MIN_SIZE",
    "IMAGE_EXTENSIONS",
    "collect_inputs",
    "read_image",
    "write_image",
]

#: Largest accepted width*height: 64 Mpx (8192 x 8192; a 48 Mpx phone photo passes). Restoring a photo
#: takes about 50 bytes per pixel at the peak, so this bounds one input to about 3.3 GB. The environment
#: variable ``DAEFR_MAX_PIXELS`` raises or lowers it for a whole run.
DEFAULT_MAX_PIXELS: int = int(os.environ.get("DAEFR_MAX_PIXELS", "") or 64 * 2**20)
#: Pillow format names decoded (by content, whatever the extension says); nothing else reaches Pillow's
#: plugins. (Pillow opens MPO, the JPEG variant many cameras write, through its JPEG plugin.)
DECODED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "BMP", "WEBP", "TIFF", "GIF")
#: Magic bytes of formats refused by name (they would start external programs or are not photos).
_REFUSED_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%!PS", "EPS/PostScript"), (b"\xc5\xd0\xd3\xc6", "EPS"), (b"%PDF", "PDF"),
)
#: Smallest accepted side length in pixels (a 1x1 "image" is not a face).
DEFAULT_MIN_SIZE: int = 8
#: File extensions collected from folders and glob patterns (compared case-insensitively).
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")

_GLOB_CHARS = set("*?[")


def _fail(path: Path, reason: str) -> ImageReadError:
    return ImageReadError(f"{path}: {reason}")


def _check_path(path: Path) -> None:
    """Reject what is not a readable regular file, with a specific reason (no decoding yet)."""
    try:
        link = os.lstat(path)
    except FileNotFoundError:
        raise _fail(path, "file not found") from None
    except OSError as exc:
        raise _fail(path, f"cannot access ({exc.strerror})") from None
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise _fail(path, "broken symlink (its target does not exist)") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _fail(path, "symlink loop") from None
        raise _fail(path, f"cannot access ({exc.strerror})") from None
    if stat.S_ISDIR(info.st_mode):
        raise _fail(path, "is a directory, not an image file")
    if not stat.S_ISREG(info.st_mode):
        kind = "symlink to a special file" if stat.S_ISLNK(link.st_mode) else "special file"
        raise _fail(path, f"not a regular file ({kind}: fifo, socket or device)")
    if info.st_size == 0:
        raise _fail(path, "empty file (0 bytes)")


_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def _head(path: Path) -> bytes:
    """The file's first 16 bytes (b"" when unreadable)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(16)
    except OSError:
        return b""


def _named_by_magic(head: bytes, table: tuple[tuple[bytes, str], ...]) -> str:
    return next((name for magic, name in table if head.startswith(magic)), "")


def _sniff(path: Path) -> str:
    """Image format named by the file's magic bytes ('' when none), to tell truncated from non-image."""
    head = _head(path)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return _named_by_magic(head, _SIGNATURES)


def _refused_format(path: Path) -> str:
    """A format that is never decoded (named by its magic bytes), or ''."""
    return _named_by_magic(_head(path), _REFUSED_SIGNATURES)


def _to_rgb(image: Image.Image, alpha: str) -> np.ndarray:
    """Pillow image of any mode -> (H, W, 3) uint8 RGB."""
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        if alpha == "drop":
            return np.asarray(rgba)[..., :3].copy()
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    if mode.startswith("I;16") or mode in ("I", "F"):
        values = np.asarray(image).astype(np.float64)
        if mode == "F" and values.size and float(np.nanmax(values)) <= 1.0:
            values = values * 255.0  # float images stored in [0, 1]
        elif mode != "F":
            values = values / 257.0  # 16-bit range 0..65535 -> 0..255 (32-bit "I" clipped below)
        gray = np.clip(np.nan_to_num(np.rint(values)), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode != "RGB":
        image = image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    return np.asarray(image)


def read_image(
    path: str | os.PathLike[str],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_size: int = DEFAULT_MIN_SIZE,
    alpha: Literal["white", "drop"] = "white",
) -> np.ndarray:
    """Read an image file as ``(H, W, 3) uint8`` RGB, or raise a one-line :class:`ImageReadError`.

    ``alpha="white"`` composites transparent images on white (what viewers show); ``"drop"`` keeps
    the colour channels as stored. ``max_pixels`` above twice Pillow's ``MAX_IMAGE_PIXELS`` is capped
    by Pillow itself.
    """
    if alpha not in ("white", "drop"):
        raise ValueError(f"alpha must be 'white' or 'drop', got {alpha!r}")
    file = Path(path)
    _check_path(file)
    try:
        with open(file, "rb") as handle, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(handle, formats=DECODED_FORMATS) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise _fail(
                        file,
                        f"declared size {width}x{height} ({width * height} pixels) exceeds the limit of "
                        f"{max_pixels} pixels (decompression bomb?); pass a larger max_pixels if intended",
                    )
                if min(width, height) < min_size:
                    raise _fail(file, f"too small ({width}x{height}; the minimum side is {min_size} px)")
                image.seek(0)  # animated GIF/PNG/WebP: first frame
                image.load()
                try:
                    upright = ImageOps.exif_transpose(image)
                except Exception:  # unreadable EXIF: keep the stored orientation rather than fail
                    upright = image
                rgb = _to_rgb(upright if upright is not None else image, alpha)
    except ImageReadError:
        raise
    except PermissionError:
        raise _fail(file, "permission denied") from None
    except UnidentifiedImageError:
        refused = _refused_format(file)
        if refused:
            raise _fail(file, f"{refused} files are not decoded (only {', '.join(DECODED_FORMATS)}; {refused} "
                              "would start an external program); convert it to PNG first") from None
        kind = _sniff(file)
        if kind:
            raise _fail(file, f"corrupt or truncated {kind} file (its header cannot be parsed)") from None
        raise _fail(file, "not an image (unrecognised file format)") from None
    except Image.DecompressionBombError:
        raise _fail(
            file, f"declared size exceeds the limit of {max_pixels} pixels (decompression bomb?)"
        ) from None
    except MemoryError:
        raise _fail(file, "out of memory while decoding") from None
    except Exception as exc:  # truncated/corrupt data: Pillow raises OSError, SyntaxError, ValueError, ...
        raise _fail(file, f"corrupt or truncated image data ({one_line_reason(exc)})") from None
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise _fail(file, f"decoded to an unexpected array {rgb.shape} {rgb.dtype}")
    return np.ascontiguousarray(rgb)


def _format_for(path: Path) -> str:
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unknown image extension {path.suffix!r}; use .png, .jpg, .webp, ...")
    return fmt


def write_image(
    path: str | os.PathLike[str], array: np.ndarray, *, overwrite: bool = True, quality: int = 95
) -> Path:
    """Write ``(H, W, 3)`` or ``(H, W)`` uint8 RGB/gray atomically; the format follows the extension."""
    file = Path(path)
    data = np.asarray(array)
    if data.dtype != np.uint8:
        raise ValueError(f"write_image expects uint8 pixels, got {data.dtype}")
    if not (data.ndim == 2 or (data.ndim == 3 and data.shape[2] in (1, 3))):
        raise ValueError(f"write_image expects (H, W, 3) or (H, W), got shape {data.shape}")
    if data.ndim == 3 and data.shape[2] == 1:
        data = data[..., 0]
    fmt = _format_for(file)
    image = Image.fromarray(np.ascontiguousarray(data))
    options: dict[str, object] = {}
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = quality
    if fmt == "JPEG":
        options["subsampling"] = 0  # 4:4:4: no chroma blur on restored faces
    with atomic_open(file, "wb", overwrite=overwrite) as handle:
        image.save(handle, format=fmt, **options)
    return file


def _matches(path: Path, exts: tuple[str, ...]) -> bool:
    return path.suffix.lower() in exts and not path.name.startswith(".")


def collect_inputs(
    inputs: Iterable[str | os.PathLike[str]],
    exts: Sequence[str] = IMAGE_EXTENSIONS,
    *,
    recursive: bool = False,
) -> list[Path]:
    """Expand files, folders (sorted; ``recursive`` walks sub-folders) and glob patterns into paths.

    A named file is kept whatever its extension (even a broken link: reading it reports why). Folders
    and patterns contribute entries whose extension is in ``exts`` (hidden files skipped); a
    non-recursive folder also lists sub-folders *named* like images, so they are reported, not silently
    skipped. Duplicates are dropped, order kept. Raises :class:`ImageReadError` for an input that does
    not exist, a pattern that matches nothing, or a folder without images.
    """
    wanted = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in exts)
    out: list[Path] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        if path not in seen:
            seen.add(path)
            out.append(path)

    for raw in inputs:
        text = os.fspath(raw)
        path = Path(text)
        if os.path.lexists(path) and not path.is_dir():
            add(path)
        elif path.is_dir():
            if recursive:
                found = sorted(p for p in path.rglob("*") if _matches(p, wanted) and not p.is_dir())
            else:
                found = sorted(p for p in path.iterdir() if _matches(p, wanted))
            if not found:
                raise ImageReadError(f"{path}: folder contains no images ({', '.join(wanted)})")
            for item in found:
                add(item)
        elif _GLOB_CHARS & set(text):
            found = sorted(Path(p) for p in glob.glob(text, recursive=True) if _matches(Path(p), wanted))
            if not found:
                raise ImageReadError(f"{text}: pattern matches no images ({', '.join(wanted)})")
            for item in found:
                add(item)
        else:
            raise ImageReadError(f"{path}: no such file or folder")
    return out
