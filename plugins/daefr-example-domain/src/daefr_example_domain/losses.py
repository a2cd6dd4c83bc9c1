"""Pixel losses offered by the example plugin."""

from __future__ import annotations

import torch
from torch import nn


class CharbonnierLoss(nn.Module):
    """Charbonnier (smooth L1) loss ``mean(sqrt((x - y)^2 + eps^2))`` on (B, C, H, W) tensors."""

    def __init__(self, eps: float = 1e-3) -> None:
        super().__init__()
        if eps <= 0:
            raise ValueError(f"eps must be positive, got {eps}")
        self.eps = eps

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar loss between two tensors of the same shape."""
        return torch.sqrt((prediction - target) ** 2 + self.eps**2).mean()
