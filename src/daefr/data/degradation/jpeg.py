"""Batched baseline JPEG (encode + decode) with per-sample quality, following libjpeg's defaults.

Non-differentiable on purpose (hard rounding): it reproduces what ``cv2.imencode('.jpg')`` followed by
``cv2.imdecode`` does to an image, as the official degradation pipeline uses it: 8-bit input,
JFIF YCbCr, 4:2:0 chroma subsampling (2x2 averages), the standard Annex K tables scaled by quality
as libjpeg scales them, 8x8 DCT, quantisation, and on decoding libjpeg's "fancy" (triangular) chroma
upsampling. The DCT is the exact float transform (libjpeg uses an integer approximation), so a few
values differ by one 8-bit level; the fidelity test states the measured bound.

Each sample may occupy only the top-left ``(h_i, w_i)`` of the batch tensor (the rest being padding),
which is how the pipeline keeps per-sample image sizes in one tensor.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from daefr.data.degradation.ops import replicate_outside

_LUMA = (
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
_CHROMA_ROWS = ((17, 18, 24, 47), (18, 21, 26, 66), (24, 26, 56, 99), (47, 66, 99, 99))


def _chroma_base() -> list[int]:
    table = [99] * 64
    for r, row in enumerate(_CHROMA_ROWS):
        for c, val in enumerate(row):
            table[r * 8 + c] = val
    return table


_RGB_TO_YCC = torch.tensor([[0.299, 0.587, 0.114],
                            [-0.168736, -0.331264, 0.5],
                            [0.5, -0.418688, -0.081312]], dtype=torch.float32)
# rounding offsets: libjpeg adds ONE_HALF to Y and ONE_HALF - 1 (in 1/65536 units) to Cb, Cr
_YCC_OFFSET = torch.tensor([0.5, 128.5 - 2.0**-16, 128.5 - 2.0**-16], dtype=torch.float32)
_HALF = torch.full((3,), 0.5, dtype=torch.float32)
_YCC_TO_RGB = torch.tensor([[1.0, 0.0, 1.402],
                            [1.0, -0.344136, -0.714136],
                            [1.0, 1.772, 0.0]], dtype=torch.float32)


@functools.lru_cache(maxsize=8)
def _base_tables(device: torch.device) -> tuple[Tensor, Tensor]:
    """The Annex K luma and chroma tables ``(1, 64)`` long on ``device`` (made once per device)."""
    luma = torch.tensor(_LUMA, dtype=torch.long, device=device).reshape(1, 64)
    return luma, torch.tensor(_chroma_base(), dtype=torch.long, device=device).reshape(1, 64)


def quant_tables(quality: Tensor) -> tuple[Tensor, Tensor]:
    """Luma and chroma quantisation tables ``(B, 8, 8)`` for integer qualities ``(B,)`` in [1, 100]."""
    q = quality.to(torch.long).clamp(1, 100)
    scale = torch.where(q < 50, torch.div(5000, q, rounding_mode="floor"), 200 - 2 * q).reshape(-1, 1)
    out = []
    for b in _base_tables(q.device):
        table = torch.div(b * scale + 50, 100, rounding_mode="floor").clamp(1, 255)
        out.append(table.to(torch.float32).reshape(-1, 8, 8))
    return out[0], out[1]


@functools.lru_cache(maxsize=8)
def _dct_basis(device: torch.device) -> Tensor:
    """The 64 orthonormal 8x8 DCT-II basis images as rows of a ``(64, 64)`` matrix, row ``u * 8 + v``."""
    n = torch.arange(8, dtype=torch.float64)
    mat = torch.cos((2 * n[None, :] + 1) * n[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    mat[0] /= math.sqrt(2)
    basis = mat[:, None, :, None] * mat[None, :, None, :]  # (u, v, x, y)
    return basis.reshape(64, 64).to(device=device, dtype=torch.float32)


def _round_half_up(x: Tensor) -> Tensor:
    return torch.floor(x + 0.5)


def _dct_quantise(plane: Tensor, table: Tensor, basis: Tensor) -> Tensor:
    """Level shift, 8x8 DCT, quantise/dequantise, inverse DCT: ``(B, H, W)`` -> ``(B, H, W)``.

    Blocks become rows of 64 pixels, so both transforms are one matrix product each.
    """
    b, h, w = plane.shape
    blocks = (plane - 128.0).reshape(b, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4).reshape(b, -1, 64)
    t = table.reshape(b, 1, 64)
    coef = torch.round((blocks @ basis.T) / t) * t
    back = (coef @ basis).reshape(b, h // 8, w // 8, 8, 8).permute(0, 1, 3, 2, 4).reshape(b, h, w)
    return torch.clamp(_round_half_up(back + 128.0), 0.0, 255.0)


def _downsample_chroma(plane: Tensor) -> Tensor:
    """2x2 average as libjpeg's h2v2 downsampling: ``(sum + bias) >> 2`` with bias 1, 2, 1, 2..."""
    w = plane.shape[-1]
    s = F.avg_pool2d(plane, 2) * 4.0  # exact: the inputs are integers
    bias = 1.0 + (torch.arange(w // 2, device=plane.device) % 2).to(plane.dtype)
    return torch.floor((s + bias) / 4.0)


def _upsample_chroma(plane: Tensor, ch: Tensor, cw: Tensor) -> Tensor:
    """Libjpeg's h2v2 fancy upsampling: ``(B, h, w)`` -> ``(B, 2h, 2w)``, edges replicated at ``(ch, cw)``."""
    b, h, w = plane.shape
    # replicating beyond each sample's chroma size makes the neighbour of an edge sample the edge
    # itself, as libjpeg does at the image border
    plane = replicate_outside(plane[:, None], ch, cw)[:, 0]
    padded = F.pad(plane[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    this = padded[:, 1:-1, :]
    col_up = 3.0 * this + padded[:, :-2, :]  # column sums for the upper output row of each pair
    col_dn = 3.0 * this + padded[:, 2:, :]
    out = []
    for colsum in (col_up, col_dn):
        mid = colsum[:, :, 1:-1]
        even = torch.floor((3.0 * mid + colsum[:, :, :-2] + 8.0) / 16.0)
        odd = torch.floor((3.0 * mid + colsum[:, :, 2:] + 7.0) / 16.0)
        out.append(torch.stack((even, odd), dim=-1).reshape(b, h, 2 * w))
    return torch.stack(out, dim=2).reshape(b, 2 * h, 2 * w)


def _mix_channels(planes: list[Tensor], matrix: Tensor, offset: Tensor) -> Tensor:
    """Colour conversion ``matrix @ planes + offset``: three (B, H, W) planes -> (B, 3, H, W).

    ``matrix @ planes + offset`` for three ``(B, H, W)`` planes -> ``(B, 3, H, W)``, as plain
    element-wise arithmetic written into one output (a 1x1 convolution or einsum is several times
    slower on a CPU for three channels).
    """
    first = planes[0]
    out = torch.empty((first.shape[0], 3, *first.shape[1:]), device=first.device, dtype=first.dtype)
    for i, (row, off) in enumerate(zip(matrix.tolist(), offset.tolist())):
        acc = out[:, i]
        torch.mul(planes[0], row[0], out=acc)
        acc.add_(off)
        for ch in (1, 2):
            if row[ch] != 0.0:
                acc.add_(planes[ch], alpha=row[ch])
    return out


def jpeg_compress(
    img: Tensor, quality: Tensor, height: Tensor | None = None, width: Tensor | None = None
) -> Tensor:
    """JPEG round trip of ``(B, 3, H, W)`` RGB in [0, 1] with per-sample ``quality`` ``(B,)``.

    ``height``/``width`` ``(B,)`` give each sample's valid top-left region (default: all of it); the
    output has the input's shape, holds multiples of 1/255 and is float32.
    """
    if img.ndim != 4 or img.shape[1] != 3:
        raise ValueError(f"jpeg_compress expects (B, 3, H, W) RGB, got {tuple(img.shape)}")
    b, _, h, w = img.shape
    device = img.device
    hv = torch.full((b,), h, device=device) if height is None else height.to(device)
    wv = torch.full((b,), w, device=device) if width is None else width.to(device)
    x = torch.round(img.to(torch.float32).clamp(0.0, 1.0) * 255.0)
    # libjpeg pads each image to whole 16x16 MCUs by repeating its last row and column
    hp, wp = -(-h // 16) * 16, -(-w // 16) * 16
    x = F.pad(x, (0, wp - w, 0, hp - h))
    x = replicate_outside(x, hv, wv)
    ycc = _mix_channels([x[:, 0], x[:, 1], x[:, 2]], _RGB_TO_YCC, _YCC_OFFSET).floor_()
    luma_t, chroma_t = quant_tables(quality.to(device))
    dct = _dct_basis(device)
    y = _dct_quantise(ycc[:, 0], luma_t, dct)
    ch = torch.div(hv + 1, 2, rounding_mode="floor")
    cw = torch.div(wv + 1, 2, rounding_mode="floor")
    small = _downsample_chroma(ycc[:, 1:])
    b2, _, h2, w2 = small.shape
    small = _dct_quantise(small.reshape(b2 * 2, h2, w2), chroma_t.repeat_interleave(2, dim=0), dct)
    chroma = _upsample_chroma(small, ch.repeat_interleave(2), cw.repeat_interleave(2)).reshape(b2, 2, hp, wp)
    # R = Y + round(1.402 (Cr - 128)), ...: Y is an integer, so one floor(... + 0.5) of the sum suffices
    chroma = chroma - 128.0
    rgb = _mix_channels([y, chroma[:, 0], chroma[:, 1]], _YCC_TO_RGB, _HALF).floor_()
    return (rgb.clamp_(0.0, 255.0) / 255.0)[:, :, :h, :w]
