"""The ops of the built-in blind-face degradation, one class each: ranges, validation, sampling, application.

:class:`daefr.data.degradation.pipeline.Degradation` is built from these, in this order: :class:`Blur`,
:class:`Downscale`, :class:`Noise`, :class:`JPEG`, :class:`ColorShift`, :class:`Gray`, :class:`ColorJitter`.
Its parameters are theirs, drawn in that order from one generator. Used alone, each op degrades a whole
``(B, 3, H, W)`` batch in [0, 1] (output rounded to 8-bit levels by the base class); inside the pipeline
the first four run fused per size group (see :func:`daefr.data.degradation.pipeline.apply_degradation`),
with the same per-sample arithmetic.
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
    kornia_jpeg,
    resolve_blur_backend,
)
from daefr.data.degradation.base import DegradationOp
from daefr.data.degradation.color import JITTER_KEYS, color_jitter_pt, to_gray
from daefr.data.degradation.jpeg import jpeg_compress
from daefr.data.degradation.kernels import ISOTROPIC_TYPES, KERNEL_TYPES, kernel_type_index, mixed_kernels

F32 = torch.float32


def pair(value: Sequence[float], name: str) -> tuple[float, float]:
    """``[low, high]`` as floats; ValueError unless low <= high."""
    lo, hi = (float(v) for v in value)
    if not lo <= hi:
        raise ValueError(f"{name} must be [low, high] with low <= high, got {list(value)}")
    return lo, hi


def probability(value: float, name: str) -> float:
    """``value`` as a float; ValueError unless it lies in [0, 1]."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
    return float(value)


def sensor_noise(x: Tensor, p: dict[str, Tensor], gen: torch.Generator) -> Tensor:
    """Gaussian noise (``noise_sigma``, 8-bit units), or Poisson noise where ``poisson``; clipped to [0, 1].

    Draws the Gaussian noise, then the Poisson noise when any sample has it, from ``gen``.
    """
    noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=torch.float32)
    sigma = p["noise_sigma"] / 255.0
    if bool(p["poisson"].any()):
        shot = ops.poisson_noise(x, gen) * p["poisson_scale"].to(x)[:, None, None, None]
        mask = p["poisson"][:, None, None, None]
        return torch.where(mask, (x + shot).clamp(0.0, 1.0), ops.add_noise(x, noise, sigma))
    return ops.add_noise(x, noise, sigma)


def compress(x: Tensor, quality: Tensor, height: Tensor, width: Tensor, backend: str) -> Tensor:
    """JPEG of each sample's top-left ``(height, width)`` at its ``quality`` (0: left as it is)."""
    if not bool((quality > 0).any()):
        return x
    codec = kornia_jpeg if backend == "kornia" else jpeg_compress
    jpeg = codec(x, quality.clamp(min=1), height, width)
    return jpeg if bool((quality > 0).all()) else torch.where((quality > 0)[:, None, None, None], jpeg, x)


def blur_kernels(p: dict[str, Tensor]) -> Tensor:
    """The per-sample kernels ``(B, K, K)`` of :class:`Blur` parameters."""
    return mixed_kernels(p["kernel_type"], p["sigma_x"], p["sigma_y"], p["theta"], p["beta"], p["kernel_size"])


class Blur(DegradationOp):
    """Blur with a random kernel per sample (official kernel types, sizes, sigmas and shapes).

    Type from ``kernel_list``/``kernel_prob`` (see
    :data:`~daefr.data.degradation.kernels.KERNEL_TYPES`), odd size from ``kernel_sizes``, sigmas from
    ``sigma_range`` (pixels), rotation from ``rotation_range`` (radians), shape beta from ``betag_range``
    (generalized) or ``betap_range`` (plateau); ``backend`` ``auto``/``fft``/``kornia``.
    """

    param_keys = ("kernel_type", "kernel_size", "sigma_x", "sigma_y", "theta", "beta")

    def __init__(self, kernel_list: Sequence[str] = ("iso", "aniso"), kernel_prob: Sequence[float] = (0.5, 0.5),
                 kernel_sizes: Sequence[int] = (41,), sigma_range: Sequence[float] = (0.1, 10.0),
                 rotation_range: Sequence[float] = (-math.pi, math.pi), betag_range: Sequence[float] = (0.5, 4.0),
                 betap_range: Sequence[float] = (1.0, 2.0), backend: str = "auto") -> None:
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
        self.sigma_range = pair(sigma_range, "sigma_range")
        if self.sigma_range[0] <= 0:
            raise ValueError(f"sigma_range must be positive, got {list(sigma_range)}")
        self.rotation_range = pair(rotation_range, "rotation_range")
        self.betag_range = pair(betag_range, "betag_range")
        self.betap_range = pair(betap_range, "betap_range")
        self.backend = check_backend(backend, BLUR_BACKENDS, "blur")

    def sample_params(self, batch: int, height: int, width: int,
                      generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Draw each sample's kernel type, size, sigmas, rotation and beta."""
        dev = generator.device if generator is not None else torch.device("cpu")
        prob = torch.tensor(self.kernel_prob, dtype=torch.float64, device=dev)
        choice = torch.multinomial(prob, batch, replacement=True, generator=generator).cpu()
        kernel_type = torch.tensor(self.kernel_types, dtype=torch.long)[choice]
        size_idx = torch.randint(len(self.kernel_sizes), (batch,), generator=generator, device=dev).cpu()
        sigma_x = self.uniform(self.sigma_range, generator, batch)
        sigma_y = self.uniform(self.sigma_range, generator, batch)
        theta = self.uniform(self.rotation_range, generator, batch)
        iso = torch.isin(kernel_type, torch.tensor(ISOTROPIC_TYPES))
        is_plateau = kernel_type >= KERNEL_TYPES.index("plateau_iso")
        beta_p = self.uniform(self.betap_range, generator, batch)
        beta = torch.where(is_plateau, beta_p, self.uniform(self.betag_range, generator, batch))
        return {"kernel_type": kernel_type, "kernel_size": torch.tensor(self.kernel_sizes, dtype=torch.long)[size_idx],
                "sigma_x": sigma_x.to(F32), "sigma_y": torch.where(iso, sigma_x, sigma_y).to(F32),
                "theta": torch.where(iso, torch.zeros_like(theta), theta).to(F32), "beta": beta.to(F32)}

    def apply_params(self, hq: Tensor, params: dict[str, Tensor]) -> Tensor:
        """Blur ``hq`` (B, 3, H, W) in [0, 1] with each sample's kernel -> (B, 3, H, W) clamped to [0, 1]."""
        kernels = blur_kernels({k: v.to(hq.device) for k, v in params.items()})
        blur = kornia_blur if resolve_blur_backend(self.backend, kernels.shape[-1]) == "kornia" else ops.blur
        return blur(hq.to(torch.float32), kernels).clamp(0.0, 1.0)


class Downscale(DegradationOp):
    """Bilinear downscale by a random factor per sample.

    Bilinear downscale by a factor from ``scale_range`` to ``floor(size / scale)`` per sample (< 1 upscales);
    alone, the op resizes back to the input size.
    """

    param_keys = ("scale", "lq_height", "lq_width")

    def __init__(self, scale_range: Sequence[float] = (0.8, 8.0)) -> None:
        super().__init__()
        self.scale_range = pair(scale_range, "scale_range")
        if self.scale_range[0] <= 0:
            raise ValueError(f"scale_range must be positive, got {list(scale_range)}")

    def sample_params(self, batch: int, height: int, width: int,
                      generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Draw each sample's scale and the downscaled size ``lq_height``/``lq_width`` it gives."""
        scale = self.uniform(self.scale_range, generator, batch)
        lq_h, lq_w = ops.lq_sizes(height, width, scale)
        return {"scale": scale.to(F32), "lq_height": lq_h, "lq_width": lq_w}

    def apply_params(self, hq: Tensor, params: dict[str, Tensor]) -> Tensor:
        """Downscale ``hq`` (B, 3, H, W) to each sample's LQ size and resize back to (B, 3, H, W)."""
        b, _, h, w = hq.shape
        lq_h, lq_w = params["lq_height"], params["lq_width"]
        full_h, full_w = torch.full((b,), h, dtype=torch.long), torch.full((b,), w, dtype=torch.long)
        small = ops.resize(hq.to(torch.float32), full_h, full_w, lq_h, lq_w, (int(lq_h.max()), int(lq_w.max())))
        return ops.upscale(small, lq_h, lq_w, (h, w))


class Noise(DegradationOp):
    """Gaussian or Poisson sensor noise of random strength per sample.

    Gaussian noise with sigma from ``noise_range`` (8-bit units), or, with probability ``poisson_prob``,
    Poisson noise scaled by ``poisson_scale_range``; drawn from a generator seeded by ``noise_seed``.
    """

    param_keys = ("noise_sigma", "poisson", "poisson_scale", "noise_seed")

    def __init__(self, noise_range: Sequence[float] = (0.0, 20.0), poisson_prob: float = 0.0,
                 poisson_scale_range: Sequence[float] = (0.05, 3.0)) -> None:
        super().__init__()
        self.noise_range = pair(noise_range, "noise_range")
        self.poisson_prob = probability(poisson_prob, "poisson_prob")
        self.poisson_scale_range = pair(poisson_scale_range, "poisson_scale_range")

    def sample_params(self, batch: int, height: int, width: int,
                      generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Draw each sample's Gaussian sigma, Poisson choice and scale, and its noise seed."""
        noise_sigma = self.uniform(self.noise_range, generator, batch)
        poisson = self.uniform((0.0, 1.0), generator, batch) < self.poisson_prob
        poisson_scale = self.uniform(self.poisson_scale_range, generator, batch)
        return {"noise_sigma": noise_sigma.to(F32), "poisson": poisson, "poisson_scale": poisson_scale.to(F32),
                "noise_seed": self.draw_seed(batch, generator)}

    def apply_params(self, hq: Tensor, params: dict[str, Tensor]) -> Tensor:
        """Add each sample's noise to ``hq`` (B, 3, H, W) in [0, 1] -> (B, 3, H, W)."""
        p = {k: v.to(hq.device) for k, v in params.items()}
        return sensor_noise(hq.to(torch.float32), p, self.seeded_generator(params, hq.device))


class JPEG(DegradationOp):
    """JPEG compression at a random quality per sample.

    JPEG with a quality from ``jpeg_range`` (``floor`` of a uniform draw, as the official code; ``None``:
    no JPEG, quality parameter 0); ``backend`` ``libjpeg`` or ``kornia``.
    """

    param_keys = ("jpeg_quality",)

    def __init__(self, jpeg_range: Sequence[float] | None = (60.0, 100.0), backend: str = "libjpeg") -> None:
        super().__init__()
        self.jpeg_range = None if jpeg_range is None else pair(jpeg_range, "jpeg_range")
        if self.jpeg_range is not None and not (1 <= self.jpeg_range[0] and self.jpeg_range[1] <= 100):
            raise ValueError(f"jpeg_range must lie in [1, 100], got {list(self.jpeg_range)}")
        self.backend = check_backend(backend, JPEG_BACKENDS, "JPEG")

    def sample_params(self, batch: int, height: int, width: int,
                      generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Draw each sample's JPEG quality (all 0 when ``jpeg_range`` is None)."""
        if self.jpeg_range is None:
            return {"jpeg_quality": torch.zeros(batch, dtype=torch.long)}
        quality = torch.floor(self.uniform(self.jpeg_range, generator, batch)).clamp(1, 100).to(torch.long)
        return {"jpeg_quality": quality}

    def apply_params(self, hq: Tensor, params: dict[str, Tensor]) -> Tensor:
        """JPEG-compress ``hq`` (B, 3, H, W) in [0, 1] at each sample's quality -> (B, 3, H, W)."""
        b, _, h, w = hq.shape
        size = (torch.full((b,), h, dtype=torch.long, device=hq.device), torch.full((b,), w, dtype=torch.long, device=hq.device))
        return compress(hq.to(torch.float32), params["jpeg_quality"].to(hq.device), *size, self.backend)


class ColorShift(DegradationOp):
    """With probability ``prob``, add a per-channel shift uniform in ``[-shift, shift] / 255`` (GFPGAN's colour jitter)."""

    param_keys = ("color_shift",)

    def __init__(self, prob: float = 0.0, shift: float = 20.0) -> None:
        super().__init__()
        self.prob = probability(prob, "color_jitter_prob")
        self.shift = float(shift)

    def sample_params(self, batch: int, height: int, width: int,
                      generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Draw each sample's on/off and per-channel shift (B, 3)."""
        on = self.uniform((0.0, 1.0), generator, batch) < self.prob
        shift = self.uniform((-self.shift, self.shift), generator, batch, 3) / 255.0
        return {"color_shift": torch.where(on[:, None], shift, torch.zeros_like(shift)).to(F32)}

    def apply_params(self, hq: Tensor, params: dict[str, Tensor]) -> Tensor:
        """Add each sample's colour shift to ``hq`` (B, 3, H, W) in [0, 1]."""
        return ops.color_shift(hq.to(torch.float32), params["color_shift"])


class Gray(DegradationOp):
    """With probability ``prob``, turn the sample gray (luma x 3); ``gt_gray`` turns its HQ image gray too."""

    param_keys = ("gray",)

    def __init__(self, prob: float = 0.0, gt_gray: bool = False) -> None:
        super().__init__()
        self.prob = probability(prob, "gray_prob")
        self.gt_gray = bool(gt_gray)

    def sample_params(self, batch: int, height: int, width: int,
                      generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Draw which samples turn gray (``gray``, (B,) bool)."""
        return {"gray": self.uniform((0.0, 1.0), generator, batch) < self.prob}

    def apply_params(self, hq: Tensor, params: dict[str, Tensor]) -> Tensor:
        """Turn the chosen samples of ``hq`` (B, 3, H, W) gray (luma repeated over 3 channels)."""
        return to_gray(hq.to(torch.float32), params["gray"])

    def apply_to_hq(self, hq: Tensor, params: dict[str, Tensor]) -> Tensor | None:
        """The HQ image with the chosen samples gray when ``gt_gray``, else None."""
        return to_gray(hq.to(torch.float32), params["gray"]) if self.gt_gray else None


class ColorJitter(DegradationOp):
    """GFPGAN's torchvision-style colour jitter, with probability ``prob``.

    With probability ``prob``, GFPGAN's torchvision-style jitter: brightness, contrast, saturation and hue
    factors from their ranges, in a random order per sample (see :mod:`daefr.data.degradation.color`).
    """

    param_keys = JITTER_KEYS

    def __init__(self, prob: float = 0.0, brightness_range: Sequence[float] = (0.5, 1.5),
                 contrast_range: Sequence[float] = (0.5, 1.5), saturation_range: Sequence[float] = (0.0, 1.5),
                 hue_range: Sequence[float] = (-0.1, 0.1)) -> None:
        super().__init__()
        self.prob = probability(prob, "color_jitter_pt_prob")
        self.brightness_range = pair(brightness_range, "brightness_range")
        self.contrast_range = pair(contrast_range, "contrast_range")
        self.saturation_range = pair(saturation_range, "saturation_range")
        self.hue_range = pair(hue_range, "hue_range")
        if min(self.brightness_range[0], self.contrast_range[0], self.saturation_range[0]) < 0:
            raise ValueError("brightness_range, contrast_range and saturation_range must be non-negative")
        if not (-0.5 <= self.hue_range[0] and self.hue_range[1] <= 0.5):
            raise ValueError(f"hue_range must lie in [-0.5, 0.5] (turns), got {list(hue_range)}")

    def sample_params(self, batch: int, height: int, width: int,
                      generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Draw each sample's on/off, factor order and brightness/contrast/saturation/hue factors."""
        on = self.uniform((0.0, 1.0), generator, batch) < self.prob
        order = torch.argsort(self.uniform((0.0, 1.0), generator, batch, 4), dim=1)
        factors = {name: self.uniform(getattr(self, f"{name}_range"), generator, batch).to(F32)
                   for name in ("brightness", "contrast", "saturation", "hue")}
        return {"jitter_pt": on, "jitter_order": order, **factors}

    def apply_params(self, hq: Tensor, params: dict[str, Tensor]) -> Tensor:
        """Jitter the colours of ``hq`` (B, 3, H, W) in [0, 1] with each sample's factors."""
        return color_jitter_pt(hq.to(torch.float32), params)
