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
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from daefr.data.degradation import ops
from daefr.data.degradation.backends import (
    BLUR_BACKENDS,
    JPEG_BACKENDS,
    check_backend,
    kornia_blur,
    kornia_jpeg,
    resolve_blur_backend,
)
from daefr.data.degradation.color import JITTER_KEYS, color_jitter_pt, no_jitter, to_gray
from daefr.data.degradation.jpeg import jpeg_compress
from daefr.data.degradation.kernels import ISOTROPIC_TYPES, KERNEL_TYPES, kernel_type_index, mixed_kernels

PARAM_KEYS: tuple[str, ...] = (
    "kernel_type",
    "kernel_size",
    "sigma_x",
    "sigma_y",
    "theta",
    "beta",
    "scale",
    "lq_height",
    "lq_width",
    "noise_sigma",
    "poisson",
    "poisson_scale",
    "noise_seed",
    "jpeg_quality",
    "color_shift",
    "gray",
    *JITTER_KEYS,
)
"""Keys of :attr:`DegradationOutput.params`; every value has the batch size as its first dimension.

The jitter keys (:data:`~daefr.data.degradation.color.JITTER_KEYS`) may be absent from replayed
params (recorded before they existed): the jitter is then off.
"""


@dataclass
class DegradationOutput:
    """``lq`` ``(B, 3, H, W)`` in [0, 1] on 8-bit levels, input dtype; ``params`` per-sample tensors (CPU).

    ``hq`` is the HQ batch with GFPGAN's ``gt_gray`` applied (the samples turned gray in ``lq`` are gray
    here too) when the module has ``gt_gray=True``; otherwise ``None`` (the HQ batch is unchanged).
    """

    lq: Tensor
    params: dict[str, Tensor] = field(default_factory=dict)
    hq: Tensor | None = None


def _pair(value: Sequence[float], name: str) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    if not lo <= hi:
        raise ValueError(f"{name} must be [low, high] with low <= high, got {list(value)}")
    return lo, hi


class Degradation(nn.Module):
    """Random blind-face degradation of a batch, configured by parameter ranges (official pipeline).

    Ranges are ``[low, high]``, sampled uniformly per sample: ``sigma_range`` (blur, pixels; also the
    second axis of anisotropic kernels), ``rotation_range`` (radians), ``scale_range`` (downscale
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
        if len(kernel_list) == 0 or len(kernel_list) != len(kernel_prob):
            raise ValueError("kernel_list and kernel_prob must be non-empty and of the same length")
        if any(p < 0 for p in kernel_prob) or sum(kernel_prob) <= 0:
            raise ValueError(f"kernel_prob must be non-negative with a positive sum, got {list(kernel_prob)}")
        self.kernel_list = tuple(kernel_list)
        self.kernel_types = kernel_type_index(kernel_list)
        self.kernel_prob = tuple(float(p) for p in kernel_prob)
        self.kernel_sizes = tuple(int(k) for k in kernel_sizes)
        if not self.kernel_sizes or any(k < 1 or k % 2 == 0 for k in self.kernel_sizes):
            raise ValueError(f"kernel_sizes must be odd positive integers, got {list(kernel_sizes)}")
        self.sigma_range = _pair(sigma_range, "sigma_range")
        if self.sigma_range[0] <= 0:
            raise ValueError(f"sigma_range must be positive, got {list(sigma_range)}")
        self.rotation_range = _pair(rotation_range, "rotation_range")
        self.betag_range = _pair(betag_range, "betag_range")
        self.betap_range = _pair(betap_range, "betap_range")
        self.scale_range = _pair(scale_range, "scale_range")
        if self.scale_range[0] <= 0:
            raise ValueError(f"scale_range must be positive, got {list(scale_range)}")
        self.noise_range = _pair(noise_range, "noise_range")
        self.poisson_scale_range = _pair(poisson_scale_range, "poisson_scale_range")
        self.jpeg_range = None if jpeg_range is None else _pair(jpeg_range, "jpeg_range")
        if self.jpeg_range is not None and not (1 <= self.jpeg_range[0] and self.jpeg_range[1] <= 100):
            raise ValueError(f"jpeg_range must lie in [1, 100], got {list(self.jpeg_range)}")
        for name, p in (("poisson_prob", poisson_prob), ("color_jitter_prob", color_jitter_prob),
                        ("gray_prob", gray_prob), ("color_jitter_pt_prob", color_jitter_pt_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
        self.poisson_prob = float(poisson_prob)
        self.color_jitter_prob = float(color_jitter_prob)
        self.color_jitter_shift = float(color_jitter_shift)
        self.gray_prob = float(gray_prob)
        self.gt_gray = bool(gt_gray)
        self.color_jitter_pt_prob = float(color_jitter_pt_prob)
        self.brightness_range = _pair(brightness_range, "brightness_range")
        self.contrast_range = _pair(contrast_range, "contrast_range")
        self.saturation_range = _pair(saturation_range, "saturation_range")
        self.hue_range = _pair(hue_range, "hue_range")
        if min(self.brightness_range[0], self.contrast_range[0], self.saturation_range[0]) < 0:
            raise ValueError("brightness_range, contrast_range and saturation_range must be non-negative")
        if not (-0.5 <= self.hue_range[0] and self.hue_range[1] <= 0.5):
            raise ValueError(f"hue_range must lie in [-0.5, 0.5] (turns), got {list(hue_range)}")
        self.blur_backend = check_backend(blur_backend, BLUR_BACKENDS, "blur")
        self.jpeg_backend = check_backend(jpeg_backend, JPEG_BACKENDS, "JPEG")

    def extra_repr(self) -> str:
        return (f"kernels={list(self.kernel_list)}, sizes={list(self.kernel_sizes)}, sigma={self.sigma_range}, "
                f"scale={self.scale_range}, noise={self.noise_range}, jpeg={self.jpeg_range}, "
                f"blur_backend={self.blur_backend}, jpeg_backend={self.jpeg_backend}")

    # ----- sampling ------------------------------------------------------------------------------
    def sample_params(self, batch: int, height: int, width: int,
                      generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Draw the per-sample parameters (CPU tensors, see :data:`PARAM_KEYS`) for a batch of ``(H, W)``."""
        dev = generator.device if generator is not None else torch.device("cpu")

        def uniform(lo_hi: tuple[float, float], *shape: int) -> Tensor:
            u = torch.rand(*(shape or (batch,)), generator=generator, device=dev, dtype=torch.float64).cpu()
            return lo_hi[0] + (lo_hi[1] - lo_hi[0]) * u

        prob = torch.tensor(self.kernel_prob, dtype=torch.float64, device=dev)
        choice = torch.multinomial(prob, batch, replacement=True, generator=generator).cpu()
        kernel_type = torch.tensor(self.kernel_types, dtype=torch.long)[choice]
        size_idx = torch.randint(len(self.kernel_sizes), (batch,), generator=generator, device=dev).cpu()
        kernel_size = torch.tensor(self.kernel_sizes, dtype=torch.long)[size_idx]
        sigma_x = uniform(self.sigma_range)
        sigma_y = uniform(self.sigma_range)
        theta = uniform(self.rotation_range)
        iso = torch.isin(kernel_type, torch.tensor(ISOTROPIC_TYPES))
        sigma_y = torch.where(iso, sigma_x, sigma_y)
        theta = torch.where(iso, torch.zeros_like(theta), theta)
        is_plateau = kernel_type >= KERNEL_TYPES.index("plateau_iso")
        beta = torch.where(is_plateau, uniform(self.betap_range), uniform(self.betag_range))
        scale = uniform(self.scale_range)
        lq_h, lq_w = ops.lq_sizes(height, width, scale)
        noise_sigma = uniform(self.noise_range)
        poisson = uniform((0.0, 1.0)) < self.poisson_prob
        poisson_scale = uniform(self.poisson_scale_range)
        seed = torch.randint(0, 2**62, (1,), generator=generator, device=dev).cpu().expand(batch).clone()
        if self.jpeg_range is None:
            quality = torch.zeros(batch, dtype=torch.long)
        else:
            quality = torch.floor(uniform(self.jpeg_range)).clamp(1, 100).to(torch.long)
        jitter_on = uniform((0.0, 1.0)) < self.color_jitter_prob
        shift = uniform((-self.color_jitter_shift, self.color_jitter_shift), batch, 3) / 255.0
        shift = torch.where(jitter_on[:, None], shift, torch.zeros_like(shift))
        gray = uniform((0.0, 1.0)) < self.gray_prob
        f32 = torch.float32
        # drawn last, so the parameters above are the same as before the jitter existed
        jitter_pt = uniform((0.0, 1.0)) < self.color_jitter_pt_prob
        jitter_order = torch.argsort(uniform((0.0, 1.0), batch, 4), dim=1)
        jitter = {"jitter_pt": jitter_pt, "jitter_order": jitter_order,
                  "brightness": uniform(self.brightness_range).to(f32),
                  "contrast": uniform(self.contrast_range).to(f32),
                  "saturation": uniform(self.saturation_range).to(f32), "hue": uniform(self.hue_range).to(f32)}
        return {
            "kernel_type": kernel_type, "kernel_size": kernel_size, "sigma_x": sigma_x.to(f32),
            "sigma_y": sigma_y.to(f32), "theta": theta.to(f32), "beta": beta.to(f32), "scale": scale.to(f32),
            "lq_height": lq_h, "lq_width": lq_w, "noise_sigma": noise_sigma.to(f32), "poisson": poisson,
            "poisson_scale": poisson_scale.to(f32), "noise_seed": seed, "jpeg_quality": quality,
            "color_shift": shift.to(f32), "gray": gray, **jitter,
        }

    # ----- application ---------------------------------------------------------------------------
    def forward(self, hq: Tensor, generator: torch.Generator | None = None) -> DegradationOutput:
        """Degrade ``hq`` ``(B, 3, H, W)`` in [0, 1] with freshly drawn per-sample parameters."""
        _check_input(hq)
        params = self.sample_params(hq.shape[0], hq.shape[2], hq.shape[3], generator)
        return self._degrade_with(hq, params)

    def replay(self, hq: Tensor, params: dict[str, Tensor]) -> DegradationOutput:
        """Apply the given ``params`` (as returned by :meth:`forward`) exactly; same params -> same ``lq``."""
        _check_input(hq)
        return self._degrade_with(hq, dict(params))

    def _degrade_with(self, hq: Tensor, params: dict[str, Tensor]) -> DegradationOutput:
        lq = apply_degradation(hq, params, blur_backend=self.blur_backend, jpeg_backend=self.jpeg_backend)
        gray_hq = None
        if self.gt_gray:
            gray_hq = to_gray(hq.detach().to(torch.float32), params["gray"]).to(hq.dtype)
        return DegradationOutput(lq, params, gray_hq)


def _check_input(hq: Tensor) -> None:
    if not isinstance(hq, Tensor) or hq.ndim != 4 or hq.shape[1] != 3:
        shape = tuple(hq.shape) if isinstance(hq, Tensor) else type(hq).__name__
        raise ValueError(f"degradation expects RGB images (B, 3, H, W) in [0, 1], got {shape}")
    if not hq.is_floating_point():
        raise ValueError(f"degradation expects a floating-point tensor in [0, 1], got {hq.dtype}")


@torch.no_grad()
def apply_degradation(hq: Tensor, params: dict[str, Tensor], max_group: int | None = None,
                      blur_backend: str = "auto", jpeg_backend: str = "libjpeg") -> Tensor:
    """Degrade ``hq`` ``(B, 3, H, W)`` in [0, 1] with explicit per-sample ``params`` (no randomness left).

    Samples run in size groups (see :func:`size_groups`) of at most ``max_group`` samples (default:
    no limit; a limit bounds peak memory). Noise is drawn group by group, in order, from one generator
    seeded with ``noise_seed``, so the same parameters and ``max_group`` always give the same result.
    ``blur_backend`` and ``jpeg_backend`` pick the implementations (see :mod:`.backends`).
    """
    missing = [k for k in PARAM_KEYS if k not in params and k not in JITTER_KEYS]
    if missing:
        raise KeyError(f"degradation params lack {missing}; pass the dict that forward() returned")
    b = hq.shape[0]
    if not all(k in params for k in JITTER_KEYS):
        params = {**no_jitter(b), **params}
    if any(int(params[k].shape[0]) != b for k in PARAM_KEYS):
        raise ValueError(f"degradation params do not match the batch size {b}")
    check_backend(blur_backend, BLUR_BACKENDS, "blur")
    check_backend(jpeg_backend, JPEG_BACKENDS, "JPEG")
    dev = hq.device
    x = hq.detach()
    p = {k: v.to(dev) for k, v in params.items()}
    noise_gen = torch.Generator(device=dev)
    noise_gen.manual_seed(int(params["noise_seed"][0]))
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
    """Sample indices grouped by downscaled size: sorted by area, canvas areas within a group differ
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
    kernels = mixed_kernels(p["kernel_type"], p["sigma_x"], p["sigma_y"], p["theta"], p["beta"], p["kernel_size"])
    b, _, h, w = x.shape
    dev = x.device
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
    noise = torch.randn(x.shape, generator=noise_gen, device=dev, dtype=torch.float32)
    sigma = p["noise_sigma"] / 255.0
    if bool(p["poisson"].any()):
        shot = ops.poisson_noise(x, noise_gen) * p["poisson_scale"].to(x)[:, None, None, None]
        mask = p["poisson"][:, None, None, None]
        x = torch.where(mask, (x + shot).clamp(0.0, 1.0), ops.add_noise(x, noise, sigma))
    else:
        x = ops.add_noise(x, noise, sigma)
    quality = p["jpeg_quality"]
    if bool((quality > 0).any()):  # quality 0 means no JPEG for that sample
        codec = kornia_jpeg if backends[1] == "kornia" else jpeg_compress
        jpeg = codec(x, quality.clamp(min=1), lq_h, lq_w)
        x = jpeg if bool((quality > 0).all()) else torch.where((quality > 0)[:, None, None, None], jpeg, x)
    return ops.upscale(x.mul_(255.0), lq_h, lq_w, (h, w))
