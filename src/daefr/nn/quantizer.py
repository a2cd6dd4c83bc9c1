"""Vector quantizer with the official (legacy taming-transformers) numerics.

* nearest code by ``sum(z^2) + sum(e^2) - 2 z.e`` then ``argmin`` (first index on ties);
* loss ``mean((zq.detach() - z)^2) + beta * mean((zq - z.detach())^2)``: note the legacy ordering,
  which puts weight 1 on the encoder (commitment) side and ``beta`` on the codebook side, the
  opposite of the VQ-VAE paper; the forward value is ``(1 + beta) * mse`` either way;
* straight-through value ``z + (zq - z).detach()`` (differs from the plain code rows by rounding).

Under mixed precision (autocast, bf16/fp16 inputs) the whole quantizer runs in float32: nearest-code
search in reduced precision would change indices. ``quant`` comes back in the input's dtype, the
loss in float32. In float32 this changes nothing.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from daefr.nn.contracts import Codebook, QuantizerOutput, code_usage_stats

__all__ = ["VectorQuantizer", "float32_region", "init_codebook", "nearest_codes"]


def float32_region(t: Tensor) -> contextlib.AbstractContextManager[object]:
    """Context that disables autocast on ``t``'s device (so float32 maths stays float32)."""
    if t.device.type in ("cpu", "cuda"):
        return torch.autocast(t.device.type, enabled=False)
    return contextlib.nullcontext()


def nearest_codes(flat: Tensor, codebook: Tensor) -> Tensor:
    """Index of the nearest code for each row: (N, C), (K, C) -> (N,) int64 (official distance formula)."""
    distances = (
        torch.sum(flat**2, dim=1, keepdim=True)
        + torch.sum(codebook**2, dim=1)
        - 2 * torch.matmul(flat, codebook.t())
    )
    return torch.argmin(distances, dim=1)


def init_codebook(module: Any, who: str, n_embed: int, embed_dim: int, beta: float) -> None:
    """Check and set a codebook's ``n_embed``, ``embed_dim`` and loss weight ``beta`` (shared by every codebook)."""
    if n_embed < 1 or embed_dim < 1:
        raise ValueError(f"{who} needs n_embed >= 1 and embed_dim >= 1, got {n_embed}, {embed_dim}")
    module.n_embed, module.embed_dim, module.beta = n_embed, embed_dim, beta


class VectorQuantizer(Codebook):
    """Codebook ``vq``: ``n_embed`` learned codes of size ``embed_dim``; key ``embedding.weight``.

    ``forward(z (B, embed_dim, h, w)) -> QuantizerOutput``; ``beta`` weights the codebook-side term
    (legacy ordering, see module doc). Codes start uniform in ``[-1/n_embed, 1/n_embed]``.
    """

    beta: float  #: weight of the loss term (see the class doc)

    def __init__(self, n_embed: int = 1024, embed_dim: int = 256, beta: float = 0.25) -> None:
        super().__init__()
        init_codebook(self, "VectorQuantizer", n_embed, embed_dim, beta)
        # pass the table so nn.Embedding skips its own normal_ init (slow on the meta device)
        self.embedding = nn.Embedding(n_embed, embed_dim, _weight=torch.empty(n_embed, embed_dim))
        nn.init.uniform_(self.embedding.weight, -1.0 / n_embed, 1.0 / n_embed)

    @property
    def codebook(self) -> Tensor:
        """(n_embed, embed_dim) code vectors."""
        return self.embedding.weight

    def forward(self, z: Tensor) -> QuantizerOutput:
        """(B, embed_dim, h, w) -> QuantizerOutput (quant straight-through, indices (B, h, w))."""
        if z.ndim != 4 or z.shape[1] != self.embed_dim:
            raise ValueError(f"VectorQuantizer expects (B, {self.embed_dim}, h, w), got {tuple(z.shape)}")
        b, _, h, w = z.shape
        with float32_region(z):
            z_last = z.float().permute(0, 2, 3, 1).contiguous()  # (B, h, w, C)
            flat = z_last.view(-1, self.embed_dim)
            codebook = self.embedding.weight.float()
            indices = nearest_codes(flat, codebook)
            zq = F.embedding(indices, codebook).view(z_last.shape)
            loss = torch.mean((zq.detach() - z_last) ** 2) + self.beta * torch.mean((zq - z_last.detach()) ** 2)
            zq = z_last + (zq - z_last).detach()
        perplexity, in_use = code_usage_stats(indices, self.n_embed)
        return QuantizerOutput(
            quant=zq.permute(0, 3, 1, 2).to(z.dtype).contiguous(),  # same dtype as the input
            loss=loss,
            indices=indices.view(b, h, w),
            perplexity=perplexity,
            codes_in_use=in_use,
        )
