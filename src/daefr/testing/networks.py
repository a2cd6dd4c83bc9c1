"""Conformance checks for network components, to call from a plugin's tests.

Conformance checks for network components (groups ``encoders``, ``decoders``, ``codebooks``,
``associations``): call them from your plugin's tests. Each raises ``AssertionError`` with the reason.

Contracts (see :mod:`daefr.nn.contracts`):

* encoder: ``z_channels``, ``downsample_factor``; ``(B, 3, H, W)`` in [-1, 1] -> ``(B, z_channels, H/f, W/f)``;
* decoder: ``z_channels``, ``upsample_factor``, ``last_layer`` (a parameter of the decoder);
  ``(B, z_channels, h, w)`` -> ``(B, 3, h*f, w*f)``;
* codebook: ``n_embed``, ``embed_dim``, ``codebook`` (n_embed, embed_dim); ``forward(z)`` ->
  :class:`~daefr.nn.contracts.QuantizerOutput` with a straight-through ``quant`` of z's shape and dtype,
  indices (B, h, w) int64 in range, 0-d loss/perplexity/codes_in_use; ``lookup(indices)`` gives the
  code vectors of ``quant``;
* association: ``forward(hq_feat, lq_feat)`` with (B, C, h, w) features -> an object with a 0-d ``loss``
  that is lower for matching pairs than for mismatched ones;
* fusion: ``forward(lq_feat, hq_feat)``, both (B, C, h, w) -> (B, C, h, w), depending on both inputs;
* predictor: ``n_tokens``, ``n_embed``, ``in_channels``; ``(B, in_channels, h, w)`` with h*w = n_tokens ->
  logits (B, n_tokens, n_embed).

No check modifies its inputs; every check leaves the component's train/eval mode as it found it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from daefr.nn.contracts import QuantizerOutput

__all__ = ["check_association", "check_codebook", "check_decoder", "check_encoder", "check_fusion", "check_predictor"]


def _seeded(*shape: int, seed: int = 0) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _params(module: Any) -> list[nn.Parameter]:
    return list(module.parameters()) if isinstance(module, nn.Module) else []


def check_encoder(encoder: Any, size: int = 32, batch: int = 2) -> None:
    """Encoder contract on (batch, 3, size, size) inputs in [-1, 1]; ``size`` must suit its layout."""
    f = int(encoder.downsample_factor)
    z_channels = int(encoder.z_channels)
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    before = x.clone()
    with torch.no_grad():
        z = encoder(x)
    assert isinstance(z, Tensor), f"encoder returned {type(z).__name__}, expected a Tensor"
    assert tuple(z.shape) == (batch, z_channels, size // f, size // f), f"encoder output shape {tuple(z.shape)}"
    assert torch.isfinite(z).all(), "encoder output has NaN/Inf"
    assert torch.equal(x, before), "encoder modified its input"


def check_decoder(decoder: Any, latent: int = 4, batch: int = 2) -> None:
    """Decoder contract on (batch, z_channels, latent, latent) inputs."""
    f = int(decoder.upsample_factor)
    z = _seeded(batch, int(decoder.z_channels), latent, latent)
    before = z.clone()
    with torch.no_grad():
        img = decoder(z)
    assert tuple(img.shape) == (batch, 3, latent * f, latent * f), f"decoder output shape {tuple(img.shape)}"
    assert torch.isfinite(img).all(), "decoder output has NaN/Inf"
    assert torch.equal(z, before), "decoder modified its input"
    last = decoder.last_layer
    assert any(last is p for p in _params(decoder)), "decoder.last_layer is not one of its parameters"


def check_codebook(codebook: Any, batch: int = 2, height: int = 3, width: int = 4) -> None:
    """Codebook contract in eval mode (forward, indices, lookup, straight-through gradient)."""
    n_embed, embed_dim = int(codebook.n_embed), int(codebook.embed_dim)
    assert tuple(codebook.codebook.shape) == (n_embed, embed_dim), "codebook table shape"
    was_training = bool(getattr(codebook, "training", False))
    if isinstance(codebook, nn.Module):
        codebook.eval()
    try:
        z = _seeded(batch, embed_dim, height, width).requires_grad_(True)
        before = z.detach().clone()
        out = codebook(z)
        assert isinstance(out, QuantizerOutput), f"forward returned {type(out).__name__}, not QuantizerOutput"
        assert out.quant.shape == z.shape and out.quant.dtype == z.dtype, "quant must match z's shape and dtype"
        assert out.indices.shape == (batch, height, width) and out.indices.dtype == torch.int64, "indices"
        assert 0 <= int(out.indices.min()) and int(out.indices.max()) < n_embed, "indices out of range"
        for name in ("loss", "perplexity", "codes_in_use"):
            value = getattr(out, name)
            assert value.ndim == 0 and torch.isfinite(value.float()), f"{name} must be a finite 0-d tensor"
        assert int(out.codes_in_use) == out.indices.unique().numel(), "codes_in_use != distinct indices"
        looked_up = codebook.lookup(out.indices)
        assert looked_up.shape == z.shape, f"lookup shape {tuple(looked_up.shape)}"
        assert torch.allclose(looked_up, out.quant.detach(), atol=1e-5), "lookup(indices) differs from quant"
        out.quant.sum().backward()
        assert z.grad is not None and torch.isfinite(z.grad).all(), "no gradient reaches z (straight-through)"
        assert torch.equal(z.detach(), before), "codebook modified its input"
    finally:
        if isinstance(codebook, nn.Module):
            codebook.train(was_training)
            codebook.zero_grad(set_to_none=True)


def check_association(association: Any, channels: int = 8, batch: int = 2, size: int = 2) -> None:
    """Association contract: 0-d finite loss, lower for matching HQ/LQ tokens than for shuffled ones."""
    hq = _seeded(batch, channels, size, size, seed=1)
    noisy = hq + 0.05 * _seeded(batch, channels, size, size, seed=2)
    before = hq.clone()
    with torch.no_grad():
        matched = association(hq, noisy).loss
        shuffled = association(hq, noisy.flip(0).flip(-1)).loss
    assert matched.ndim == 0 and torch.isfinite(matched), "loss must be a finite 0-d tensor"
    assert matched < shuffled, f"matching pairs ({float(matched):.4f}) must score below shuffled ({float(shuffled):.4f})"
    assert torch.equal(hq, before), "association modified its input"


def check_fusion(fusion: Any, channels: int, batch: int = 2, size: int = 4) -> None:
    """Fusion contract: shape kept, finite, both inputs matter and receive gradients, inputs untouched."""
    lq = _seeded(batch, channels, size, size, seed=3).requires_grad_(True)
    hq = _seeded(batch, channels, size, size, seed=4).requires_grad_(True)
    before = (lq.detach().clone(), hq.detach().clone())
    out = fusion(lq, hq)
    assert isinstance(out, Tensor) and out.shape == lq.shape, f"fusion output {getattr(out, 'shape', out)}"
    assert torch.isfinite(out).all(), "fusion output has NaN/Inf"
    out.square().mean().backward()
    for name, t in (("lq_feat", lq), ("hq_feat", hq)):
        assert t.grad is not None and t.grad.abs().sum() > 0, f"the fused output does not depend on {name}"
    assert torch.equal(lq.detach(), before[0]) and torch.equal(hq.detach(), before[1]), "fusion modified its input"
    if isinstance(fusion, nn.Module):
        fusion.zero_grad(set_to_none=True)


def check_predictor(predictor: Any, batch: int = 2) -> None:
    """Predictor contract on a latent grid of ``n_tokens`` positions (square when possible, else 1 x T)."""
    tokens, n_embed, channels = int(predictor.n_tokens), int(predictor.n_embed), int(predictor.in_channels)
    side = int(tokens**0.5)
    h, w = (side, side) if side * side == tokens else (1, tokens)
    feat = _seeded(batch, channels, h, w, seed=5)
    before = feat.clone()
    with torch.no_grad():
        logits = predictor(feat)
    assert isinstance(logits, Tensor), f"predictor returned {type(logits).__name__}, expected a Tensor"
    assert tuple(logits.shape) == (batch, tokens, n_embed), f"logits shape {tuple(logits.shape)}"
    assert torch.isfinite(logits).all(), "logits have NaN/Inf"
    assert torch.equal(feat, before), "predictor modified its input"
