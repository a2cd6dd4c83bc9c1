"""Contracts of the network component groups (encoders, decoders, codebooks).

A plugin component conforms when it has the attributes and call signature below; the built-ins are
:class:`daefr.nn.vqgan.Encoder`, :class:`daefr.nn.vqgan.Decoder` and
:class:`daefr.nn.quantizer.VectorQuantizer`. Images are (B, 3, H, W) in [-1, 1]; latents are
(B, C, h, w) with ``h = H / downsample_factor``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

__all__ = [
    "CodePredictor",
    "Codebook",
    "Fusion",
    "ImageDecoder",
    "ImageEncoder",
    "QuantizerOutput",
    "code_usage_stats",
]


@runtime_checkable
class ImageEncoder(Protocol):
    """Encoder: ``forward(x (B, 3, H, W) in [-1, 1]) -> (B, z_channels, H/f, W/f)``, f = ``downsample_factor``."""

    z_channels: int
    downsample_factor: int

    def __call__(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, z_channels, H/f, W/f)."""
        ...


@runtime_checkable
class ImageDecoder(Protocol):
    """Decoder: ``forward(z (B, z_channels, h, w)) -> (B, 3, h*f, w*f)`` (nominally in [-1, 1], unclamped).

    ``last_layer`` is the weight of the final layer, used for the adaptive GAN weight of VQGAN training.
    """

    z_channels: int
    upsample_factor: int

    def __call__(self, z: Tensor) -> Tensor:
        """(B, z_channels, h, w) -> (B, 3, h*f, w*f)."""
        ...

    @property
    def last_layer(self) -> Tensor:
        """The weight of the final layer (for the adaptive GAN weight)."""
        ...


@dataclass
class QuantizerOutput:
    """Result of a codebook forward pass.

    * ``quant``: (B, C, h, w) quantized latent, straight-through (gradients flow to the input).
    * ``loss``: 0-d codebook/commitment loss (what the training stage adds with ``codebook_weight``).
    * ``indices``: (B, h, w) int64 codebook indices.
    * ``perplexity``: 0-d ``exp(entropy)`` of the code usage in this batch.
    * ``codes_in_use``: 0-d int64, number of distinct codes used in this batch.
    """

    quant: Tensor
    loss: Tensor
    indices: Tensor
    perplexity: Tensor
    codes_in_use: Tensor


class Codebook(nn.Module, metaclass=abc.ABCMeta):
    """Base class of codebooks (group ``codebooks``).

    Subclasses set ``n_embed`` and ``embed_dim`` and implement ``forward(z (B, embed_dim, h, w)) ->
    QuantizerOutput`` and ``codebook``, the (n_embed, embed_dim) table of code vectors; ``lookup(indices
    (B, h, w) int64) -> (B, embed_dim, h, w)`` reads that table.
    """

    n_embed: int
    embed_dim: int

    @abc.abstractmethod
    def forward(self, z: Tensor) -> QuantizerOutput:
        """(B, embed_dim, h, w) -> QuantizerOutput."""

    def lookup(self, indices: Tensor) -> Tensor:
        """(B, h, w) int64 -> (B, embed_dim, h, w): the rows of :attr:`codebook` (override for other tables)."""
        if indices.ndim != 3:
            raise ValueError(f"lookup expects indices of shape (B, h, w), got {tuple(indices.shape)}")
        return self.codebook[indices].permute(0, 3, 1, 2).contiguous()

    @property
    @abc.abstractmethod
    def codebook(self) -> Tensor:
        """(n_embed, embed_dim) code vectors."""


def code_usage_stats(indices: Tensor, n_embed: int) -> tuple[Tensor, Tensor]:
    """Perplexity ``exp(-sum p log(p + 1e-10))`` (official formula) and number of codes used, from indices."""
    flat = indices.reshape(-1)
    counts = torch.bincount(flat, minlength=n_embed).to(torch.float32)
    probs = counts / flat.numel()
    perplexity = torch.exp(-torch.sum(probs * torch.log(probs + 1e-10)))
    return perplexity, (counts > 0).sum()


@runtime_checkable
class Fusion(Protocol):
    """Fusion (group ``fusions``): ``forward(lq_feat, hq_feat)``, both (B, C, h, w) -> fused (B, C, h, w).

    ``lq_feat`` comes from the LQ encoder + quant_conv, ``hq_feat`` from the HQ encoder + quant_conv
    applied to the same LQ image; the official fusion queries with ``lq_feat`` and keeps ``hq_feat``
    as key/value and residual. Built-in: :class:`daefr.nn.fusion.CrossAttentionFusion`.
    """

    def __call__(self, lq_feat: Tensor, hq_feat: Tensor) -> Tensor:
        """``lq_feat``, ``hq_feat`` (B, C, h, w) -> fused (B, C, h, w)."""
        ...


@runtime_checkable
class CodePredictor(Protocol):
    """Predictor (group ``predictors``): ``forward(feat (B, C, h, w)) -> logits (B, h*w, n_embed)``.

    Tokens are in raster order (row-major over h, w); ``n_tokens`` is the h*w the predictor accepts
    (a learned position embedding fixes it), ``n_embed`` the size of the HQ codebook it predicts into.
    Built-in: :class:`daefr.nn.transformer.CodeTransformer`.
    """

    n_embed: int
    n_tokens: int

    def __call__(self, feat: Tensor) -> Tensor:
        """(B, C, h, w) -> logits (B, h*w, n_embed)."""
        ...
