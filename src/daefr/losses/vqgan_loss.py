"""VQGAN training loss: pixel (L1) + LPIPS + adaptive-weight hinge PatchGAN + VQ loss (DAEFR codebook stages).

Generator objective (taming-transformers / DAEFR ``VQLPIPSWithDiscriminator`` semantics)::

    nll   = mean(pixel_weight * |x - x_rec|) + perceptual_weight * mean(LPIPS(x, x_rec))
    g     = -mean(D(x_rec))
    w     = clamp(|grad_last(nll)| / (|grad_last(g)| + 1e-4), 0, 1e4) * disc_weight    (detached)
    loss  = nll + w * disc_factor(step) * g + codebook_weight * codebook_loss

with ``disc_factor(step) = 0`` before ``disc_start`` (so the GAN term, and the discriminator update, are off
until then). ``grad_last`` is the gradient at the decoder's last layer weight. Discriminator objective
(hinge): ``disc_factor * 0.5 * (mean(relu(1 - D(x))) + mean(relu(1 + D(x_rec))))``.

``official_quirks`` (set by the training stages from their own option, default on there) reproduces the
official training: before ``disc_start`` the discriminator and the adaptive weight are still evaluated and
multiplied by ``disc_factor = 0`` (this updates the discriminator's BatchNorm running statistics and logs
``g_loss``/``d_weight``), and LPIPS follows the module's train mode, so its dropout (p=0.5) acts during
training. Without it (the default of a standalone loss) the discriminator is not evaluated before
``disc_start`` and LPIPS always runs in eval mode.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from daefr.errors import ConfigError, WeightsNotFoundError
from daefr.registry import REGISTRY

DEFAULT_DISCRIMINATOR: dict[str, Any] = {"name": "patchgan"}
DEFAULT_PERCEPTUAL = "lpips"
"""Perceptual loss of a ``{name: vqgan}`` loss unless ``perceptual_weight: 0`` (the paper trains with LPIPS)."""


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Hinge discriminator loss on logits of any shape; scalar."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def vanilla_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating (softplus) discriminator loss; scalar."""
    return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())


def adaptive_gan_weight(
    nll_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor, max_weight: float = 1e4
) -> torch.Tensor:
    """Grad-norm ratio ``|dnll/dW| / (|dg/dW| + 1e-4)`` at ``last_layer``, clamped to [0, max_weight], detached."""
    nll_grads = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)[0]
    g_grads = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    ratio = torch.linalg.vector_norm(nll_grads.float()) / (torch.linalg.vector_norm(g_grads.float()) + 1e-4)
    return ratio.clamp(0.0, max_weight).detach()


class VQGANLoss(nn.Module):
    """L1 + LPIPS + adaptive hinge PatchGAN + codebook loss for one VQGAN autoencoder.

    Args:
        disc_start: generator step at which the GAN term and discriminator updates switch on.
        disc_weight: factor on the adaptive weight (0.8 in DAEFR).
        disc_factor: value of the GAN factor once active.
        codebook_weight: factor on the quantizer loss.
        pixel_weight: factor on the pixel loss.
        perceptual_weight: factor on LPIPS (default 1.0: on, as in the paper); 0 disables it (no weights
            file needed then).
        perceptual: ``losses`` spec of the perceptual loss (default ``"lpips"``, i.e. ``{name: lpips}`` with
            its weight files looked up as every other weight file) or ``None`` to disable; a missing weight
            file raises ``WeightsNotFoundError`` naming it and ``perceptual_weight: 0``.
        pixel_loss: ``losses`` spec replacing the L1 pixel loss (e.g. ``{name: charbonnier}``); None = L1.
        discriminator: ``discriminators`` spec (default ``{name: patchgan}``).
        disc_loss: ``hinge`` (official) or ``vanilla``.
        max_adaptive_weight: upper clamp of the adaptive weight (official 1e4).
        official_quirks: official GAN gating and LPIPS dropout (see the module docstring); the stages
            overwrite it with their own ``official_quirks`` through :meth:`set_official_quirks`.
    """

    def __init__(
        self,
        disc_start: int = 30001,
        disc_weight: float = 0.8,
        disc_factor: float = 1.0,
        codebook_weight: float = 1.0,
        pixel_weight: float = 1.0,
        perceptual_weight: float = 1.0,
        perceptual: Mapping[str, Any] | str | None = DEFAULT_PERCEPTUAL,
        pixel_loss: Mapping[str, Any] | str | None = None,
        discriminator: Mapping[str, Any] | str | None = None,
        disc_loss: Literal["hinge", "vanilla"] = "hinge",
        max_adaptive_weight: float = 1e4,
        official_quirks: bool = False,
    ) -> None:
        super().__init__()
        if disc_loss not in ("hinge", "vanilla"):
            raise ConfigError(f"disc_loss must be 'hinge' or 'vanilla', got {disc_loss!r}")
        self.disc_start = int(disc_start)
        self.disc_weight = float(disc_weight)
        self.disc_factor = float(disc_factor)
        self.codebook_weight = float(codebook_weight)
        self.pixel_weight = float(pixel_weight)
        self.max_adaptive_weight = float(max_adaptive_weight)
        self.disc_loss_name = disc_loss
        self._d_loss_fn = hinge_d_loss if disc_loss == "hinge" else vanilla_d_loss
        use_perceptual = perceptual_weight > 0 and perceptual is not None
        self.perceptual_weight = float(perceptual_weight) if use_perceptual else 0.0
        self.perceptual: nn.Module | None = build_perceptual(perceptual) if use_perceptual else None
        self.pixel_loss: nn.Module | None = REGISTRY.build("losses", pixel_loss) if pixel_loss is not None else None
        self.discriminator: nn.Module = REGISTRY.build("discriminators", discriminator or DEFAULT_DISCRIMINATOR)
        self.official_quirks = False
        self.set_official_quirks(official_quirks)

    def set_official_quirks(self, enabled: bool) -> None:
        """Switch the official GAN gating and LPIPS train-mode dropout on or off (keeps the current mode)."""
        self.official_quirks = bool(enabled)
        if self.perceptual is not None and hasattr(self.perceptual, "dropout_in_train"):
            setattr(self.perceptual, "dropout_in_train", self.official_quirks)  # noqa: B010 - LPIPS switch
        self.train(self.training)

    def train(self, mode: bool = True) -> VQGANLoss:
        """Switch train/eval mode; the perceptual network stays in eval mode unless ``official_quirks``."""
        super().train(mode)
        if self.perceptual is not None:
            self.perceptual.train(mode and self.official_quirks)
        return self

    # ----- helpers -------------------------------------------------------------------------------
    def gan_active(self, global_step: int) -> bool:
        """Whether the GAN term and discriminator update are on at this generator step."""
        return self.disc_factor > 0 and global_step >= self.disc_start

    def _pixel(self, target: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        if self.pixel_loss is None:
            return (target - recon).abs().mean()
        return self.pixel_loss(recon, target)

    # ----- objectives ----------------------------------------------------------------------------
    def generator_loss(
        self,
        codebook_loss: torch.Tensor,
        target: torch.Tensor,
        recon: torch.Tensor,
        global_step: int,
        last_layer: torch.Tensor | None,
        split: str = "train",
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Autoencoder loss for (B, 3, H, W) ``target``/``recon`` in [-1, 1]; returns (scalar, log dict)."""
        rec = self.pixel_weight * self._pixel(target.contiguous(), recon.contiguous())
        nll = rec
        logs: dict[str, torch.Tensor] = {}
        if self.perceptual is not None:
            p_loss = self.perceptual(target.contiguous(), recon.contiguous()).mean()
            nll = nll + self.perceptual_weight * p_loss
            logs[f"{split}/p_loss"] = p_loss.detach()
        cb = codebook_loss.mean()
        zero = torch.zeros((), device=target.device)
        g_loss, d_weight = zero, zero
        active = self.gan_active(global_step)
        loss = nll
        if active or self.official_quirks:  # official: evaluated and multiplied by 0 before disc_start
            g_loss = -self.discriminator(recon.contiguous()).float().mean()  # a float32 mean under autocast
            if last_layer is not None and torch.is_grad_enabled() and last_layer.requires_grad:
                d_weight = adaptive_gan_weight(nll, g_loss, last_layer, self.max_adaptive_weight)
            d_weight = d_weight * self.disc_weight
            loss = loss + d_weight * (self.disc_factor if active else 0.0) * g_loss
        loss = loss + self.codebook_weight * cb  # official order: nll + GAN term + codebook term
        logs.update({
            f"{split}/rec_loss": rec.detach(),
            f"{split}/nll_loss": nll.detach(),
            f"{split}/quant_loss": cb.detach(),
            f"{split}/g_loss": g_loss.detach(),
            f"{split}/d_weight": d_weight.detach(),
            f"{split}/disc_factor": torch.tensor(self.disc_factor if active else 0.0),
            f"{split}/total_loss": loss.detach(),
        })
        return loss, logs

    def discriminator_loss(
        self, target: torch.Tensor, recon: torch.Tensor, global_step: int, split: str = "train"
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Discriminator loss on real ``target`` and detached ``recon``; returns (scalar, log dict)."""
        logits_real = self.discriminator(target.contiguous().detach()).float()
        logits_fake = self.discriminator(recon.contiguous().detach()).float()
        factor = self.disc_factor if self.gan_active(global_step) else 0.0
        d_loss = factor * self._d_loss_fn(logits_real, logits_fake)
        return d_loss, {
            f"{split}/disc_loss": d_loss.detach(),
            f"{split}/logits_real": logits_real.detach().mean(),
            f"{split}/logits_fake": logits_fake.detach().mean(),
        }


def build_perceptual(spec: Mapping[str, Any] | str | None) -> nn.Module:
    """Build the frozen perceptual loss from a ``losses`` spec; missing weight files raise a clear error."""
    spec = DEFAULT_PERCEPTUAL if spec is None else spec
    try:
        module: nn.Module = REGISTRY.build("losses", spec)
    except FileNotFoundError as exc:
        raise WeightsNotFoundError(
            f"perceptual loss (LPIPS, on by default with perceptual_weight 1.0): {str(exc).rstrip('.')}; provide the weights or "
            "set `perceptual_weight: 0` in the loss spec to train without it"
        ) from exc
    module.eval()
    for param in module.parameters():
        param.requires_grad_(False)
    return module
