"""Batched degradation operations on ``(B, C, H, W)`` float32 images in [0, 1], per-sample parameters.

Per-sample image sizes (after a per-sample downscale) live in one tensor: sample ``i`` occupies the
top-left ``(h_i, w_i)`` of a common canvas; :func:`replicate_outside` fills the rest with its edge
pixels, which is what libjpeg does when it pads an image to whole blocks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def next_fast_len(n: int) -> int:
    """Smallest integer >= ``n`` whose only prime factors are 2, 3, 5 and 7 (fast FFT sizes)."""
    m = max(1, n)
    while True:
        rest = m
        for prime in (2, 3, 5, 7):
            while rest % prime == 0:
                rest //= prime
        if rest == 1:
            return m
        m += 1


def blur(img: Tensor, kernels: Tensor) -> Tensor:
    """Correlate each sample with its own kernel, reflect-101 borders (as ``cv2.filter2D``).

    ``img`` ``(B, C, H, W)`` float32, ``kernels`` ``(B, K, K)`` with odd ``K``. Computed by FFT, which
    costs the same for any kernel size (a 41x41 direct convolution is ~20x more arithmetic at 512x512);
    the result is a view into a larger buffer.
    """
    spec, p, (fh, fw) = _blurred_spectrum(img, kernels)
    h, w = img.shape[-2:]
    return torch.fft.irfft2(spec, s=(fh, fw))[:, :, p : p + h, p : p + w]


def blur_resize(
    img: Tensor,
    kernels: Tensor,
    out_h: Tensor,
    out_w: Tensor,
    canvas: tuple[int, int],
    spatial_blur: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> Tensor:
    """:func:`blur` followed by :func:`resize` to per-sample ``(out_h, out_w)`` on a ``canvas``, fused.

    Bilinear downscaling reads only two source rows per output row, so when the canvas has fewer than
    half the rows of the FFT grid the inverse FFT along the rows is evaluated for those rows only
    (for a 4x downscale that skips ~half of the inverse transform); otherwise this is blur + resize.
    ``spatial_blur(img, kernels)`` replaces the FFT blur (e.g. the kornia backend); then it is blur + resize.
    """
    b, c, h, w = img.shape
    if spatial_blur is not None:
        full_h = torch.full((b,), h, device=img.device, dtype=torch.long)
        full_w = torch.full((b,), w, device=img.device, dtype=torch.long)
        return resize(spatial_blur(img, kernels), full_h, full_w, out_h, out_w, canvas)
    spec, p, (fh, fw) = _blurred_spectrum(img, kernels)
    ch, cw = canvas
    if 2 * ch >= fh:
        blurred = torch.fft.irfft2(spec, s=(fh, fw))[:, :, p : p + h, p : p + w]
        full_h = torch.full((b,), h, device=img.device, dtype=torch.long)
        full_w = torch.full((b,), w, device=img.device, dtype=torch.long)
        return resize(blurred, full_h, full_w, out_h, out_w, canvas)
    full = torch.full((b,), h, device=img.device)
    ys = _source_coords(ch, out_h, full)
    y0 = torch.floor(ys)
    fy = (ys - y0).to(torch.float32)[:, None, :, None]
    y0 = y0.to(torch.long)
    y1 = torch.clamp(y0 + 1, max=h - 1)
    rows = torch.stack((y0, y1), dim=-1).reshape(b, 1, 2 * ch) + p  # rows of the padded grid
    cols = torch.fft.ifft(spec, dim=-2)
    del spec
    # ifft along dim -2 returns its result laid out as (B, C, fw // 2 + 1, fh): gathering the rows
    # along that contiguous last dim is ~2-5x faster than reshaping it (a full copy) or gathering dim -2
    flipped = cols.transpose(-1, -2)
    picked = flipped.gather(3, rows[:, :, None, :].expand(b, c, flipped.shape[2], 2 * ch)).transpose(-1, -2)
    lines = torch.fft.irfft(picked, n=fw, dim=-1)[..., p : p + w].reshape(b, c, ch, 2, w)
    top, bottom = lines[:, :, :, 0], lines[:, :, :, 1]
    vert = top + fy * (bottom - top)  # (B, C, ch, W)
    xs = _source_coords(cw, out_w, torch.full((b,), w, device=img.device))
    x0 = torch.floor(xs)
    fx = (xs - x0).to(torch.float32)[:, None, None, :]
    x0 = x0.to(torch.long)
    x1 = torch.clamp(x0 + 1, max=w - 1)
    left = vert.gather(3, x0[:, None, None, :].expand(b, c, ch, cw))
    right = vert.gather(3, x1[:, None, None, :].expand(b, c, ch, cw))
    return left + fx * (right - left)


def _blurred_spectrum(img: Tensor, kernels: Tensor) -> tuple[Tensor, int, tuple[int, int]]:
    """``rfft2`` of the reflect-padded images times the kernels' spectra; also the padding and FFT size."""
    b, c, h, w = img.shape
    k = kernels.shape[-1]
    if kernels.shape != (b, k, k) or k % 2 == 0:
        raise ValueError(f"kernels must be (B, K, K) with odd K for B={b}, got {tuple(kernels.shape)}")
    p = k // 2
    if p >= h or p >= w:
        raise ValueError(f"image {h}x{w} is too small for a {k}x{k} kernel (needs more than {p} pixels)")
    fh, fw = next_fast_len(h + 2 * p), next_fast_len(w + 2 * p)
    hp, wp = h + 2 * p, w + 2 * p
    # reflect-101 padding written straight into the zero-padded FFT buffer (one copy of the image)
    buf = torch.empty(b, c, fh, fw, device=img.device, dtype=torch.float32)
    buf[:, :, hp:, :] = 0.0
    buf[:, :, :hp, wp:] = 0.0
    buf[:, :, p : p + h, p : p + w] = img
    if p > 0:
        rows, cols = slice(p, p + h), slice(0, wp)
        buf[:, :, rows, :p] = buf[:, :, rows, p + 1 : 2 * p + 1].flip(-1)
        buf[:, :, rows, p + w : wp] = buf[:, :, rows, w - 1 : p + w - 1].flip(-1)
        buf[:, :, :p, cols] = buf[:, :, p + 1 : 2 * p + 1, cols].flip(-2)
        buf[:, :, p + h : hp, cols] = buf[:, :, h - 1 : p + h - 1, cols].flip(-2)
    spec = torch.fft.rfft2(buf)
    del buf
    # flipped kernels (correlation) with their centre at index (0, 0) of the FFT grid, wrapped around
    flipped = kernels.to(torch.float32).flip(-2, -1)
    kpad = torch.zeros(b, fh, fw, device=img.device, dtype=torch.float32)
    kpad[:, : p + 1, : p + 1] = flipped[:, p:, p:]
    kpad[:, : p + 1, fw - p :] = flipped[:, p:, :p]
    kpad[:, fh - p :, : p + 1] = flipped[:, :p, p:]
    kpad[:, fh - p :, fw - p :] = flipped[:, :p, :p]
    spec.mul_(torch.fft.rfft2(kpad)[:, None])
    return spec, p, (fh, fw)


def lq_sizes(height: int, width: int, scale: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample downscaled sizes ``(B,)`` long: ``floor(size / scale)`` (at least 1), as ``int(w // s)``."""
    s = scale.to(torch.float64)
    h = torch.floor(torch.full_like(s, float(height)) / s).clamp(min=1).to(torch.long)
    w = torch.floor(torch.full_like(s, float(width)) / s).clamp(min=1).to(torch.long)
    return h, w


def _source_coords(out_len: int, out_valid: Tensor, src_valid: Tensor) -> Tensor:
    """Pixel coordinates ``(B, out_len)`` in the source for bilinear resizing with half-pixel centres.

    Output positions beyond ``out_valid`` repeat the last valid one; source coordinates are clamped
    to the valid source range, as OpenCV's INTER_LINEAR does at the borders.
    """
    dev = out_valid.device
    pos = torch.arange(out_len, device=dev, dtype=torch.float64)[None, :]
    ov = out_valid.to(device=dev, dtype=torch.float64)[:, None]
    sv = src_valid.to(device=dev, dtype=torch.float64)[:, None]
    pos = torch.minimum(pos, ov - 1)
    src = (pos + 0.5) * (sv / ov) - 0.5
    return torch.minimum(src.clamp(min=0.0), sv - 1)


def resize(
    img: Tensor,
    src_h: Tensor,
    src_w: Tensor,
    out_h: Tensor,
    out_w: Tensor,
    canvas: tuple[int, int],
) -> Tensor:
    """Per-sample bilinear resize (``cv2.resize`` INTER_LINEAR semantics, no antialiasing).

    Sample ``i``'s top-left ``(src_h[i], src_w[i])`` region of ``img`` ``(B, C, Hs, Ws)`` becomes the
    top-left ``(out_h[i], out_w[i])`` of the ``(B, C, *canvas)`` result; the rest of the canvas repeats
    the edge pixels.
    """
    b, _, hs, ws = img.shape
    ch, cw = canvas
    ys = _source_coords(ch, out_h, src_h)
    xs = _source_coords(cw, out_w, src_w)
    # grid_sample (align_corners=False) maps a normalised coordinate g to pixel ((g + 1) * size - 1) / 2
    gy = ((2.0 * ys + 1.0) / hs - 1.0).to(torch.float32)
    gx = ((2.0 * xs + 1.0) / ws - 1.0).to(torch.float32)
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)
    return F.grid_sample(img, grid.to(img.device), mode="bilinear", padding_mode="border", align_corners=False)


def upscale(img: Tensor, src_h: Tensor, src_w: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize each sample's valid top-left region of ``img`` (B, C, h, w) to the full ``size``.

    :func:`resize` of each sample's top-left ``(src_h[i], src_w[i])`` of ``img`` ``(B, C, h, w)`` to the
    full ``size`` (the same bilinear weights), as two matrix products with per-sample interpolation
    matrices when the source canvas is small (cheaper than ``grid_sample`` there), else :func:`resize`.
    """
    b, _, h, w = img.shape
    oh, ow = size
    dev = img.device
    full_h = torch.full((b,), oh, device=dev, dtype=torch.long)
    full_w = torch.full((b,), ow, device=dev, dtype=torch.long)
    # measured on a CPU: the products cost ~ h (w + H) / H against grid_sample's ~100 per output pixel
    if h * (w + oh) >= 100 * oh or dev.type != "cpu":
        return resize(img, src_h, src_w, full_h, full_w, size)
    rows = _interp_matrix(oh, h, src_h.to(dev))  # (B, H, h)
    cols = _interp_matrix(ow, w, src_w.to(dev))  # (B, W, w)
    return rows[:, None] @ (img @ cols.transpose(1, 2)[:, None])


def _interp_matrix(out_len: int, in_len: int, src_valid: Tensor) -> Tensor:
    """Per-sample bilinear interpolation matrices (B, out_len, in_len).

    Bilinear interpolation weights ``(B, out_len, in_len)`` from each sample's first ``src_valid``
    source pixels to ``out_len`` outputs (half-pixel centres, clamped as :func:`_source_coords`).
    """
    b = src_valid.shape[0]
    dev = src_valid.device
    pos = _source_coords(out_len, torch.full((b,), out_len, device=dev), src_valid)
    x0 = torch.floor(pos)
    frac = (pos - x0).to(torch.float32)
    x0 = x0.to(torch.long)
    x1 = torch.minimum(x0 + 1, src_valid.to(torch.long)[:, None] - 1)
    mat = torch.zeros(b, out_len, in_len, device=dev, dtype=torch.float32)
    mat.scatter_add_(2, x0[:, :, None], (1.0 - frac)[:, :, None])
    mat.scatter_add_(2, x1[:, :, None], frac[:, :, None])
    return mat


def replicate_outside(img: Tensor, height: Tensor, width: Tensor) -> Tensor:
    """``img`` (B, C, H, W) with each sample's edge repeated beyond its own (height, width).

    ``img`` ``(B, C, H, W)`` where pixels beyond each sample's ``(height, width)`` repeat its edge
    (a new tensor; ``img`` itself when no sample has pixels beyond its size).
    """
    b, c, h, w = img.shape
    dev = img.device
    height, width = height.to(dev), width.to(dev)
    out = img
    # only the strip beyond the smallest size can need changes: it gets the (gathered, small) edge
    # column / row through a masked select; the rest is a plain copy (no in-place writes: autograd
    # goes through this for the differentiable kornia JPEG)
    w_min = int(width.min())
    if w_min < w:
        edge = img.gather(3, (width - 1)[:, None, None, None].expand(b, c, h, 1))
        inside = torch.arange(w_min, w, device=dev)[None, :] < width[:, None]
        strip = torch.where(inside[:, None, None, :], img[..., w_min:], edge)
        out = torch.cat((img[..., :w_min], strip), dim=-1)
    h_min = int(height.min())
    if h_min < h:
        edge = out.gather(2, (height - 1)[:, None, None, None].expand(b, c, 1, w))
        inside = torch.arange(h_min, h, device=dev)[None, :] < height[:, None]
        strip = torch.where(inside[:, None, :, None], out[..., h_min:, :], edge)
        out = torch.cat((out[..., :h_min, :], strip), dim=-2)
    return out


def add_noise(img: Tensor, noise: Tensor, sigma: Tensor) -> Tensor:
    """``clip(img + sigma * noise, 0, 1)`` with per-sample ``sigma`` ``(B,)`` in [0, 1] units."""
    return torch.addcmul(img, noise, sigma.to(img)[:, None, None, None]).clamp_(0.0, 1.0)


def poisson_noise(img: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Zero-mean Poisson (shot) noise of an 8-bit image: ``Poisson(255 x) / 255 - x``, same shape."""
    counts = torch.poisson(img.clamp(0.0, 1.0) * 255.0, generator=generator)
    return counts / 255.0 - img


def color_shift(img: Tensor, shift: Tensor) -> Tensor:
    """Add a per-sample, per-channel offset ``shift`` ``(B, C)`` and clip to [0, 1]."""
    return (img + shift.to(img)[:, :, None, None]).clamp_(0.0, 1.0)


def quantize_8bit(img: Tensor, inplace: bool = False) -> Tensor:
    """Round to the nearest of the 256 levels ``k / 255`` after clipping to [0, 1]."""
    x = img if inplace else img.clone()
    return x.mul_(255.0).clamp_(0.0, 255.0).round_().div_(255.0)
