"""A fidelity weight for DAEFR: blend the network's output with its input face, in pixels.

DAEFR has no fidelity knob inside the network (CodeFormer's ``w`` mixes encoder features; DAEFR's
restored face comes from predicted codebook indices alone). :class:`FidelityBlend` therefore mixes the
restored face with the face the network was given: ``w x input + (1 - w) x restored``; ``w = 0`` is
DAEFR's output unchanged, ``w = 1`` the input face. Identity and colours move towards the input as
``w`` grows; so do its blur and noise.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["FidelityBlend"]


class FidelityBlend(nn.Module):
    """``network`` (B, 3, S, S) in [-1, 1] -> same shape, blended with its input by ``weight`` in [0, 1]."""

    def __init__(self, network: nn.Module, weight: float) -> None:
        super().__init__()
        if not 0.0 <= float(weight) <= 1.0:
            raise ValueError(f"fidelity weight must be in [0, 1], got {weight}")
        self.network = network
        self.weight = float(weight)
        size = getattr(network, "input_size", None)
        if size is not None:
            self.input_size = size  # Restorer reads the face size from here

    def forward(self, lq: Tensor) -> Tensor:
        """(B, 3, S, S) in [-1, 1] -> ``(1 - weight) * network(lq) + weight * lq``."""
        restored = self.network(lq)
        return (1.0 - self.weight) * restored + self.weight * lq
