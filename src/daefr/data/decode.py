"""Turning stored image bytes into training tensors: decode, resize / centre-crop, scale to [-1, 1]."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np

from daefr.errors import ImageReadError

if TYPE_CHECKING:
    import torch
    from PIL import Image


def decode_rgb(data: bytes, name: str = "") -> Image.Image:
    """Decode image bytes to an RGB PIL image; any failure is an :class:`ImageReadError` (one line).

    Gray, palette and RGBA images are converted (alpha dropped); other modes (CMYK, 16-bit, float) are
    rejected. ``name`` prefixes the message when given.
    """
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    prefix = f"{name}: " if name else ""
    if not data:
        raise ImageReadError(f"{prefix}empty file (0 bytes)")
    try:
        with PILImage.open(io.BytesIO(data)) as image:
            if image.mode not in ("RGB", "L", "1", "RGBA", "LA", "P", "CMYK", "YCbCr"):
                raise ImageReadError(f"{prefix}unsupported mode {image.mode} (need 8-bit RGB or gray)")
            image.load()
            return image.convert("RGB")
    except ImageReadError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageReadError(f"{prefix}not an image file (format not recognised)") from exc
    except Exception as exc:
        raise ImageReadError(f"{prefix}cannot decode ({type(exc).__name__}: {exc})") from exc


def resize_center_crop(image: Image.Image, size: int | None) -> Image.Image:
    """Scale the shorter side to ``size`` (bicubic, antialiased) and cut the centre square."""
    from PIL import Image as PILImage

    if size is None or image.size == (size, size):
        return image
    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), PILImage.Resampling.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def to_tensor_m11(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) float32 in [-1, 1] (8-bit levels: v / 127.5 - 1)."""
    import torch

    array = np.asarray(image, dtype=np.uint8)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ImageReadError(f"expected an RGB image, got an array of shape {array.shape}")
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).float()
    return tensor.div_(127.5).sub_(1.0)


def to_uint8(images_m11: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) in [-1, 1] -> same shape uint8 (inverse of :func:`to_tensor_m11` on 8-bit levels)."""
    import torch

    return ((images_m11.float() + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
