"""Codebook variants beside the official quantizer (``codebooks/vq``): cosine and EMA codebooks.

Both follow :class:`daefr.nn.contracts.Codebook`: ``forward(z (B, embed_dim, h, w)) -> QuantizerOutput``
with a straight-through ``quant``, ``lookup(indices (B, h, w))`` and the ``codebook`` table. They exist
because the official quantizer collapses on small data (a handful of codes in use); neither is used by
the released checkpoints.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from daefr.nn.contracts import Codebook, QuantizerOutput, code_usage_stats
from daefr.nn.quantizer import init_codebook

__all__ = ["CosineCodebook", "EMACodebook"]


def _flatten(z: Tensor, embed_dim: int, who: str) -> tuple[Tensor, tuple[int, int, int, int]]:
    if z.ndim != 4 or z.shape[1] != embed_dim:
        raise ValueError(f"{who} expects (B, {embed_dim}, h, w), got {tuple(z.shape)}")
    b, c, h, w = z.shape
    return z.permute(0, 2, 3, 1).reshape(-1, c), (b, c, h, w)


def _unflatten(flat: Tensor, shape: tuple[int, int, int, int]) -> Tensor:
    b, c, h, w = shape
    return flat.view(b, h, w, c).permute(0, 3, 1, 2).contiguous()


class CosineCodebook(Codebook):
    """l2-normalised codebook (``codebooks/cosine``): codes and latents live on the unit sphere.

    The nearest code maximises cosine similarity; ``quant`` is the unit-norm code (straight-through
    from the unit-norm latent). Loss: ``mse(sg(q), z_n) * beta + mse(q, sg(z_n))`` (commitment ``beta``
    on the encoder side, codebook term on the codes). Keeps many more codes alive than Euclidean VQ.
    """

    beta: float  #: weight of the loss term (see the class doc)

    def __init__(self, n_embed: int = 1024, embed_dim: int = 256, beta: float = 0.25) -> None:
        super().__init__()
        init_codebook(self, "CosineCodebook", n_embed, embed_dim, beta)
        self.embedding = nn.Embedding(n_embed, embed_dim)
        nn.init.normal_(self.embedding.weight)

    @property
    def codebook(self) -> Tensor:
        """(n_embed, embed_dim) unit-norm code vectors."""
        return F.normalize(self.embedding.weight, dim=1)

    def forward(self, z: Tensor) -> QuantizerOutput:
        """(B, embed_dim, h, w) -> QuantizerOutput; ``quant`` is unit-norm along channels."""
        flat, shape = _flatten(z, self.embed_dim, "CosineCodebook")
        z_n = F.normalize(flat, dim=1)
        codes = self.codebook
        indices = torch.argmax(z_n @ codes.t(), dim=1)
        q = codes[indices]
        loss = F.mse_loss(q, z_n.detach()) + self.beta * F.mse_loss(z_n, q.detach())
        q = z_n + (q - z_n).detach()
        perplexity, in_use = code_usage_stats(indices, self.n_embed)
        b, _, h, w = shape
        return QuantizerOutput(_unflatten(q, shape), loss, indices.view(b, h, w), perplexity, in_use)


class EMACodebook(Codebook):
    """Codebook updated by exponential moving averages, with dead-code restart (``codebooks/ema``).

    Codes are not trained by gradients: in training mode each forward moves every code towards the
    mean of the latents assigned to it (``decay``), with Laplace smoothing ``eps``. A code whose
    smoothed usage falls below ``dead_threshold`` is restarted at a random latent of the batch. Loss:
    ``beta * mse(z, sg(q))`` (commitment only). Statistics are summed over ranks under DDP.
    """

    embed_sum: Tensor
    cluster_size: Tensor
    beta: float  #: weight of the loss term (see the class doc)

    def __init__(
        self,
        n_embed: int = 1024,
        embed_dim: int = 256,
        beta: float = 0.25,
        decay: float = 0.99,
        eps: float = 1e-5,
        dead_threshold: float = 1e-3,
    ) -> None:
        super().__init__()
        init_codebook(self, "EMACodebook", n_embed, embed_dim, beta)
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMACodebook decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.eps = eps
        self.dead_threshold = dead_threshold
        self.embedding = nn.Embedding(n_embed, embed_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_embed, 1.0 / n_embed)
        self.embedding.weight.requires_grad_(False)  # updated by EMA, never by an optimizer
        self.register_buffer("cluster_size", torch.ones(n_embed))
        self.register_buffer("embed_sum", self.embedding.weight.detach().clone())

    @property
    def codebook(self) -> Tensor:
        """(n_embed, embed_dim) code vectors."""
        return self.embedding.weight

    @torch.no_grad()
    def _ema_update(self, flat: Tensor, indices: Tensor) -> None:
        onehot = F.one_hot(indices, self.n_embed).to(flat.dtype)
        counts = onehot.sum(0)
        sums = onehot.t() @ flat
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.n_embed * self.eps) * total
        self.embedding.weight.copy_(self.embed_sum / smoothed.unsqueeze(1))
        dead = self.cluster_size < self.dead_threshold
        n_dead = int(dead.sum())
        if n_dead:
            picks = flat[torch.randint(0, flat.shape[0], (n_dead,), device=flat.device)]
            if dist.is_available() and dist.is_initialized():
                dist.broadcast(picks, src=0)  # every rank restarts the same codes identically
            self.embedding.weight[dead] = picks
            self.embed_sum[dead] = picks
            self.cluster_size[dead] = 1.0

    def forward(self, z: Tensor) -> QuantizerOutput:
        """(B, embed_dim, h, w) -> QuantizerOutput; updates the codes in training mode."""
        flat, shape = _flatten(z, self.embed_dim, "EMACodebook")
        codes = self.embedding.weight
        distances = flat.pow(2).sum(1, keepdim=True) + codes.pow(2).sum(1) - 2 * flat @ codes.t()
        indices = torch.argmin(distances, dim=1)
        if self.training and torch.is_grad_enabled():
            self._ema_update(flat.detach().float(), indices)
        q = self.embedding.weight[indices].detach()
        loss = self.beta * F.mse_loss(flat, q)
        q = flat + (q - flat).detach()
        perplexity, in_use = code_usage_stats(indices, self.n_embed)
        b, _, h, w = shape
        return QuantizerOutput(_unflatten(q, shape), loss, indices.view(b, h, w), perplexity, in_use)
