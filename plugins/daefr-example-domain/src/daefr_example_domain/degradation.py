"""Scanner / photocopy degradation for text crops: ink blur, fading, speckles, sensor noise, 8 bit."""

from __future__ import annotations

import kornia
import torch
from torch import Tensor

from daefr.data.degradation import DegradationOp


class ScanDegradation(DegradationOp):
    """Isotropic blur (``sigma_range`` px) -> fading towards the paper (``fade_range``: 1 keeps full contrast)
    -> speckles (dust and toner dots, probability per pixel in ``speckle_range``) -> Gaussian noise
    (``noise_range``, 8-bit units); sampling, replay, output and 8-bit rounding come from the base class."""

    param_keys = ("sigma", "fade", "speckle", "noise", "noise_seed")

    def __init__(self, sigma_range: tuple[float, float] = (0.4, 1.6), fade_range: tuple[float, float] = (0.45, 0.9),
                 speckle_range: tuple[float, float] = (0.0, 0.02), noise_range: tuple[float, float] = (0.0, 12.0),
                 kernel_size: int = 9) -> None:
        super().__init__()
        self.ranges = {"sigma": sigma_range, "fade": fade_range, "speckle": speckle_range, "noise": noise_range}
        if any(not 0 <= lo <= hi for lo, hi in self.ranges.values()) or kernel_size % 2 == 0:
            raise ValueError(f"ranges must be (low, high) with 0 <= low <= high and kernel_size odd, got "
                             f"{self.ranges}, kernel_size={kernel_size}")
        self.kernel_size = kernel_size

    def sample_params(self, batch: int, height: int, width: int,
                      generator: torch.Generator | None = None) -> dict[str, Tensor]:
        params = {k: self.uniform(r, generator, batch).to(torch.float32) for k, r in self.ranges.items()}
        return {**params, "noise_seed": self.draw_seed(batch, generator)}

    def apply_params(self, hq: Tensor, params: dict[str, Tensor]) -> Tensor:
        p = {k: v.to(hq.device)[:, None, None, None] for k, v in params.items()}
        x = kornia.filters.gaussian_blur2d(hq.float().clamp(0, 1), (self.kernel_size,) * 2,
                                           p["sigma"].clamp(min=1e-3).view(-1, 1).expand(-1, 2), border_type="reflect")
        paper = x.amax(dim=(2, 3), keepdim=True)
        x = paper - p["fade"] * (paper - x)
        gen = self.seeded_generator(params, hq.device)
        dots, dark = (torch.rand(x.shape[0], 1, *x.shape[2:], generator=gen, device=hq.device) for _ in range(2))
        x = torch.where(dots < p["speckle"], (dark >= 0.5).to(x), x)  # half the speckles dark, half white
        return x + torch.randn(x.shape, generator=gen, device=hq.device) * (p["noise"] / 255.0)
