"""Scanner / photocopy degradation for text crops: ink blur, fading, speckles, sensor noise, 8 bit."""

from __future__ import annotations

from dataclasses import dataclass

import kornia
import torch
from torch import Tensor, nn


@dataclass
class ScanOutput:
    """``lq`` (B, 3, H, W) in [0, 1] on 8-bit levels and the per-sample ``params`` that made it."""

    lq: Tensor
    params: dict[str, Tensor]


class ScanDegradation(nn.Module):
    """Batched scan degradation of (B, 3, H, W) images in [0, 1]; per-sample parameters, replayable.

    Steps: isotropic Gaussian blur (``sigma_range`` px) -> fading towards the paper (``fade_range``:
    1 keeps full contrast) -> speckles (dust and toner dots, probability per pixel in
    ``speckle_range``) -> Gaussian noise (``noise_range``, 8-bit units) -> quantisation to 8 bits.
    """

    def __init__(
        self,
        sigma_range: tuple[float, float] = (0.4, 1.6),
        fade_range: tuple[float, float] = (0.45, 0.9),
        speckle_range: tuple[float, float] = (0.0, 0.02),
        noise_range: tuple[float, float] = (0.0, 12.0),
        kernel_size: int = 9,
    ) -> None:
        super().__init__()
        for name, (lo, hi) in {"sigma_range": sigma_range, "fade_range": fade_range,
                               "speckle_range": speckle_range, "noise_range": noise_range}.items():
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be (low, high) with 0 <= low <= high, got {(lo, hi)}")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.ranges = {"sigma": sigma_range, "fade": fade_range, "speckle": speckle_range, "noise": noise_range}
        self.kernel_size = kernel_size

    def sample_params(self, batch: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Per-sample parameters (CPU tensors with first dimension ``batch``)."""
        out: dict[str, Tensor] = {}
        for name, (lo, hi) in self.ranges.items():
            u = torch.rand(batch, generator=generator, dtype=torch.float64)
            out[name] = (lo + (hi - lo) * u).to(torch.float32)
        seed = torch.randint(0, 2**62, (1,), generator=generator)
        out["noise_seed"] = seed.expand(batch).clone()
        return out

    def forward(self, hq: Tensor, generator: torch.Generator | None = None) -> ScanOutput:
        """Degrade ``hq`` with freshly drawn parameters."""
        return self.replay(hq, self.sample_params(hq.shape[0], generator))

    @torch.no_grad()
    def replay(self, hq: Tensor, params: dict[str, Tensor]) -> ScanOutput:
        """Apply the given parameters exactly (same params -> same ``lq``)."""
        if hq.ndim != 4 or hq.shape[1] != 3 or not hq.is_floating_point():
            raise ValueError(f"scan degradation expects float (B, 3, H, W) in [0, 1], got {tuple(hq.shape)} {hq.dtype}")
        dev = hq.device
        p = {k: v.to(dev) for k, v in params.items()}
        x = hq.detach().to(torch.float32).clamp(0, 1)
        sigma = p["sigma"].clamp(min=1e-3)[:, None].expand(-1, 2)
        x = kornia.filters.gaussian_blur2d(x, (self.kernel_size, self.kernel_size), sigma, border_type="reflect")
        paper = x.amax(dim=(2, 3), keepdim=True)
        x = paper - p["fade"][:, None, None, None] * (paper - x)
        gen = torch.Generator(device=dev)
        gen.manual_seed(int(params["noise_seed"][0]))
        dots = torch.rand(x.shape[0], 1, *x.shape[2:], generator=gen, device=dev)
        dark = torch.rand(x.shape[0], 1, *x.shape[2:], generator=gen, device=dev) < 0.5
        speckled = dots < p["speckle"][:, None, None, None]
        x = torch.where(speckled & dark, torch.zeros_like(x), torch.where(speckled, torch.ones_like(x), x))
        noise = torch.randn(x.shape, generator=gen, device=dev)
        x = x + noise * (p["noise"] / 255.0)[:, None, None, None]
        lq = torch.round(x.clamp(0, 1) * 255.0) / 255.0
        return ScanOutput(lq.to(hq.dtype), {k: v.clone() for k, v in params.items()})
