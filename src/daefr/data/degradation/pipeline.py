"""The batched blind-face degradation: blur -> downscale -> noise -> JPEG -> resize back -> 8-bit.

Per-sample output sizes: each sample is downscaled to its own exact size ``floor(H / scale)`` x
``floor(W / scale)`` (as the official per-image pipeline does) and kept in the top-left of a canvas
padded to whole 16x16 JPEG blocks by edge replication; noise and JPEG run batched on the canvas, then
every sample is resized back from its own region to ``(H, W)``. Samples are processed in size
groups (sorted by canvas area, areas within 2x, see :func:`size_groups`) so small images do not pay
for the largest one (a batch of 16 at scale 0.8-8 makes 3-7 groups). All operations inside a group are
batched tensor ops (no per-image code), and each sample sees exactly
the arithmetic of a per-image pipeline (blur, resize and noise match OpenCV to float precision; JPEG
is within the bound the tests state).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from daefr.data.degradation import ops
from daefr.data.degradation.backends import (
    BLUR_BACKENDS,
    JPEG_BACKENDS,
    check_backend,
    kornia_blur,
    resolve_blur_backend,
)
from daefr.data.degradation.base import DegradationOp, DegradationOutput, check_params
from daefr.data.degradation.color import color_jitter_pt, to_gray
from daefr.data.degradation.steps import (
    JPEG,
    Blur,
    ColorJitter,
    ColorShift,
    Downscale,
    Gray,
    Noise,
    blur_kernels,
    compress,
    sensor_noise,
)

__all__ = ["PARAM_KEYS", "Degradation", "DegradationOutput", "apply_degradation", "size_groups"]

STEPS: tuple[type[DegradationOp], ...] = (Blur, Downscale, Noise, JPEG, ColorShift, Gray, ColorJitter)
"""The ops of the pipeline, in the order they apply and draw their parameters."""

PARAM_KEYS: tuple[str, ...] = tuple(key for step in STEPS for key in step.param_keys)
"""Keys of :attr:`DegradationOutput.params` (the ops' parameters); every value has the batch size first."""


class Degradation(DegradationOp):
    """Random blind-face degradation of a batch, configured by parameter ranges (official pipeline).

    Built from the ops of :mod:`daefr.data.degradation.steps` (each owns its ranges, checks and
    sampling). Ranges are ``[low, high]``, sampled uniformly per sample: ``sigma_range`` (blur, pixels;
    also the second axis of anisotropic kernels), ``rotation_range`` (radians), ``scale_range`` (downscale
    factor; < 1 upscales), ``noise_range`` (Gaussian sigma in 8-bit units), ``jpeg_range`` (quality,
    ``floor`` of a uniform draw as the official code does; ``None``: no JPEG, quality parameter 0).
    ``kernel_list``/``kernel_prob`` choose the kernel type per sample (see :data:`KERNEL_TYPES`),
    ``kernel_sizes`` its odd size (uniform).
    With probability ``poisson_prob`` a sample gets Poisson noise scaled by ``poisson_scale_range``
    instead of Gaussian noise. After resizing back, ``color_jitter_prob`` adds a per-channel shift in
    ``[-color_jitter_shift, color_jitter_shift] / 255`` and ``gray_prob`` turns the sample gray (and its
    HQ image too when ``gt_gray``, as GFPGAN's option of that name); then, with probability
    ``color_jitter_pt_prob``, GFPGAN's torchvision-style jitter (brightness, contrast, saturation, hue
    factors from ``brightness_range``, ``contrast_range``, ``saturation_range``, ``hue_range``, in a
    random order per sample, see :mod:`daefr.data.degradation.color`) changes the LQ image only.
    ``blur_backend`` (``auto``/``fft``/``kornia``) and ``jpeg_backend`` (``libjpeg``/``kornia``) choose
    the implementations (:mod:`daefr.data.degradation.backends`); the sampled parameters do not depend
    on them.
    Parameters are drawn on the CPU, so a seeded generator gives the same parameters on any device.
    """

    param_keys = PARAM_KEYS
    quantize_output = False  # apply_degradation rounds to 8-bit levels itself

    def __init__(
        self,
        kernel_list: Sequence[str] = ("iso", "aniso"),
        kernel_prob: Sequence[float] = (0.5, 0.5),
        kernel_sizes: Sequence[int] = (41,),
        sigma_range: Sequence[float] = (0.1, 10.0),
        rotation_range: Sequence[float] = (-math.pi, math.pi),
        betag_range: Sequence[float] = (0.5, 4.0),
        betap_range: Sequence[float] = (1.0, 2.0),
        scale_range: Sequence[float] = (0.8, 8.0),
        noise_range: Sequence[float] = (0.0, 20.0),
        poisson_prob: float = 0.0,
        poisson_scale_range: Sequence[float] = (0.05, 3.0),
        jpeg_range: Sequence[float] | None = (60.0, 100.0),
        color_jitter_prob: float = 0.0,
        color_jitter_shift: float = 20.0,
        gray_prob: float = 0.0,
        gt_gray: bool = False,
        color_jitter_pt_prob: float = 0.0,
        brightness_range: Sequence[float] = (0.5, 1.5),
        contrast_range: Sequence[float] = (0.5, 1.5),
        saturation_range: Sequence[float] = (0.0, 1.5),
        hue_range: Sequence[float] = (-0.1, 0.1),
        blur_backend: str = "auto",
        jpeg_backend: str = "libjpeg",
    ) -> None:
        super().__init__()
        self.blur = Blur(kernel_list, kernel_prob, kernel_sizes, sigma_range, rotation_range, betag_range,
                         betap_range, blur_backend)
        self.downscale = Downscale(scale_range)
        self.noise = Noise(noise_range, poisson_prob, poisson_scale_range)
        self.jpeg = JPEG(jpeg_range, jpeg_backend)
        self.color_shift = ColorShift(color_jitter_prob, color_jitter_shift)
        self.gray = Gray(gray_prob, gt_gray)
        self.color_jitter = ColorJitter(color_jitter_pt_prob, brightness_range, contrast_range, saturation_range,
                                        hue_range)
        # the ranges, as attributes of the pipeline
        self.kernel_sizes, self.sigma_range, self.rotation_range = (self.blur.kernel_sizes, self.blur.sigma_range,
                                                                    self.blur.rotation_range)
        self.scale_range, self.noise_range, self.jpeg_range = (self.downscale.scale_range, self.noise.noise_range,
                                                               self.jpeg.jpeg_range)
        self.gt_gray = self.gray.gt_gray
        self.blur_backend = check_backend(blur_backend, BLUR_BACKENDS, "blur")
        self.jpeg_backend = check_backend(jpeg_backend, JPEG_BACKENDS, "JPEG")

    @property
    def steps(self) -> tuple[DegradationOp, ...]:
        """The ops, in the order of :data:`STEPS`."""
        return (self.blur, self.downscale, self.noise, self.jpeg, self.color_shift, self.gray, self.color_jitter)

    def extra_repr(self) -> str:
        """The configured kernels, sizes, ranges and backends, for ``repr``."""
        return (f"kernels={list(self.blur.kernel_list)}, sizes={list(self.kernel_sizes)}, sigma={self.sigma_range}, "
                f"scale={self.scale_range}, noise={self.noise_range}, jpeg={self.jpeg_range}, "
                f"blur_backend={self.blur_backend}, jpeg_backend={self.jpeg_backend}")

    def sample_params(self, batch: int, height: int, width: int,
                      generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """The ops' per-sample parameters (CPU tensors, see :data:`PARAM_KEYS`), drawn op by op in order."""
        params: dict[str, Tensor] = {}
        for step in self.steps:
            params.update(step.sample_params(batch, height, width, generator))
        return params

    def apply_params(self, hq: Tensor, params: dict[str, Tensor]) -> Tensor:
        """Degrade ``hq`` (B, 3, H, W) in [0, 1] with the sampled ``params`` -> LQ (B, 3, H, W) in [0, 1]."""
        return apply_degradation(hq, params, blur_backend=self.blur_backend, jpeg_backend=self.jpeg_backend)

    def apply_to_hq(self, hq: Tensor, params: dict[str, Tensor]) -> Tensor | None:
        """The HQ image turned gray where the gray step asks it (``gt_gray``), else None."""
        return self.gray.apply_to_hq(hq, params)


@torch.no_grad()
def apply_degradation(hq: Tensor, params: dict[str, Tensor], max_group: int | None = None,
                      blur_backend: str = "auto", jpeg_backend: str = "libjpeg") -> Tensor:
    """Degrade ``hq`` ``(B, 3, H, W)`` in [0, 1] with explicit per-sample ``params`` (no randomness left).

    Samples run in size groups (see :func:`size_groups`) of at most ``max_group`` samples (default:
    no limit; a limit bounds peak memory). Noise is drawn group by group, in order, from one generator
    seeded with ``noise_seed``, so the same parameters and ``max_group`` always give the same result.
    ``blur_backend`` and ``jpeg_backend`` pick the implementations (see :mod:`.backends`).
    """
    b = hq.shape[0]
    check_params(params, PARAM_KEYS, b)
    check_backend(blur_backend, BLUR_BACKENDS, "blur")
    check_backend(jpeg_backend, JPEG_BACKENDS, "JPEG")
    dev = hq.device
    x = hq.detach()
    p = {k: v.to(dev) for k, v in params.items()}
    noise_gen = DegradationOp.seeded_generator(params, dev)
    if max_group is None:
        max_group = b
    groups = size_groups(params["lq_height"], params["lq_width"], max_group)
    backends = (blur_backend, jpeg_backend)
    if len(groups) == 1:
        out = _degrade(x, p, noise_gen, backends)
    else:
        out = torch.empty(x.shape, device=dev, dtype=torch.float32)
        for idx in groups:
            sel = idx.to(dev)
            part = {k: p[k].index_select(0, sel) for k in _GROUP_KEYS}
            out.index_copy_(0, sel, _degrade(x.index_select(0, sel), part, noise_gen, backends))
    # conditions on the CPU copies: no device synchronisation
    if bool((params["color_shift"] != 0).any()) or bool(params["gray"].any()) or bool(params["jitter_pt"].any()):
        out = ops.color_shift(out.div_(255.0), p["color_shift"])
        if bool(params["gray"].any()):
            out = to_gray(out, p["gray"])
        out = color_jitter_pt(out, params)
        return ops.quantize_8bit(out, inplace=True).to(hq.dtype)
    # _degrade returned 255 x the image, already in [0, 255] (bilinear interpolation of clipped
    # values): rounding and scaling are the only full-resolution passes left
    return out.round_().div_(255.0).to(hq.dtype)


def size_groups(lq_height: Tensor, lq_width: Tensor, max_group: int) -> list[Tensor]:
    """Sample indices grouped by downscaled size (areas within 2x, at most ``max_group`` each).

    Sorted by area, canvas areas within a group differ
    by less than 2x, at most ``max_group`` per group (largest sizes first).

    Noise and JPEG then run on a canvas close to each sample's own size instead of the batch's
    largest one (on average ~10x fewer pixels for scale 0.8-8); groups are a pure function of the
    sizes, so replaying the same parameters gives the same groups and the same noise.
    """
    area = (_ceil16(lq_height) * _ceil16(lq_width)).to(torch.float64)
    key = torch.floor(torch.log2(area)).to(torch.long)
    groups = []
    for k in torch.unique(key).flip(0).tolist():
        members = torch.nonzero(key == k).flatten()
        members = members[torch.sort(area[members], descending=True, stable=True).indices]
        groups += list(torch.split(members, max(1, max_group)))
    return groups


_GROUP_KEYS = ("kernel_type", "kernel_size", "sigma_x", "sigma_y", "theta", "beta", "lq_height", "lq_width",
               "noise_sigma", "poisson", "poisson_scale", "jpeg_quality")
"""The parameters :func:`_degrade` reads (the rest apply to the whole batch after it)."""

_BLUR_CHUNK_BYTES = 8 * 2**20
"""Largest padded float32 image batch one blur call gets (2 samples of 512x512 with a 41x41 kernel)."""


def _ceil16(v: Tensor) -> Tensor:
    return torch.div(v + 15, 16, rounding_mode="floor") * 16


def _degrade(x: Tensor, p: dict[str, Tensor], noise_gen: torch.Generator, backends: tuple[str, str]) -> Tensor:
    """Blur -> downscale -> noise -> JPEG -> resize back for one size group ``(b, 3, H, W)`` in [0, 1].

    Returns 255 x the result in float32 (the caller rounds to 8-bit levels); the image is clipped to
    [0, 1] after downscaling, where it is cheap.
    """
    kernels = blur_kernels(p)
    b, _, h, w = x.shape
    lq_h, lq_w = p["lq_height"], p["lq_width"]
    canvas = (int(_ceil16(lq_h).max()), int(_ceil16(lq_w).max()))
    spatial = kornia_blur if resolve_blur_backend(backends[0], kernels.shape[-1]) == "kornia" else None
    # the full-resolution blur runs a few samples at a time: its buffers then stay small enough for
    # the allocator to recycle them instead of mapping fresh pages (page faults were ~10% of the CPU
    # time at batch 16, 512x512); each sample's result does not depend on the chunking
    step = max(1, _BLUR_CHUNK_BYTES // (x.shape[1] * (x.shape[2] + kernels.shape[-1]) * (x.shape[3] + kernels.shape[-1]) * 4))
    if step >= b:
        x = ops.blur_resize(x, kernels, lq_h, lq_w, canvas, spatial)
    else:
        x = torch.cat([ops.blur_resize(x[i : i + step], kernels[i : i + step], lq_h[i : i + step],
                                       lq_w[i : i + step], canvas, spatial) for i in range(0, b, step)])
    x = x.clamp_(0.0, 1.0)
    x = sensor_noise(x, p, noise_gen)
    x = compress(x, p["jpeg_quality"], lq_h, lq_w, backends[1])
    return ops.upscale(x.mul_(255.0), lq_h, lq_w, (h, w))
