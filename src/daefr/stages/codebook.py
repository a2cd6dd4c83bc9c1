"""``CodebookStage``: learn a VQGAN codebook on HQ faces (HQ codebook) or on degraded faces (LQ codebook).

Per batch: generator update with L1 + LPIPS + adaptive hinge GAN + VQ loss
(:class:`daefr.losses.vqgan_loss.VQGANLoss`), then a discriminator update on the same batch (real = target,
fake = the reconstruction). With ``official_quirks`` (default) this is the official loop: the discriminator
sees the reconstruction recomputed by the already-updated generator, and it steps in every batch (on
exactly-zero gradients before ``disc_start``, which only advances its Adam step count). Without it the
discriminator reuses the generator step's reconstruction (one forward less) and starts at ``disc_start``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from daefr.errors import ConfigError
from daefr.models.vqgan import VQGAN
from daefr.registry import REGISTRY
from daefr.stages.init_weights import init_autoencoder
from daefr.stages.manual import DEFAULT_LOSS, ManualOptimisationStage, set_loss_quirks, split_special
from daefr.stages.reporting import CodeUsage, ImageQuality, log_panel, make_panel


class CodebookStage(ManualOptimisationStage):
    """Codebook learning (DAEFR stage 1), run once with ``target: hq`` and once with ``target: lq``.

    Args:
        encoder, decoder, codebook: registry specs (groups ``encoders``, ``decoders``, ``codebooks``).
        loss: ``losses`` spec of the VQGAN loss (default ``{name: vqgan}``: official weights, LPIPS on).
        target: ``hq`` reconstructs ``batch["hq"]``; ``lq`` reconstructs the degraded ``batch["lq"]``.
        init_from: checkpoint (ours or official) to start from; its autoencoder and discriminator load.
        special_params_lr_scale: LR factor of the decoder attention parameters (official 1.0).
        **kwargs: optimisation options of :class:`daefr.stages.manual.ManualOptimisationStage`.
    """

    def __init__(
        self,
        encoder: dict[str, Any] | str = "vqgan",
        decoder: dict[str, Any] | str = "vqgan",
        codebook: dict[str, Any] | str = "vq",
        loss: dict[str, Any] | None = None,
        target: Literal["hq", "lq"] = "hq",
        init_from: str | None = None,
        special_params_lr_scale: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if target not in ("hq", "lq"):
            raise ConfigError(f"target must be 'hq' or 'lq', got {target!r}")
        self.save_hyperparameters()
        self.target = target
        self.special_params_lr_scale = float(special_params_lr_scale)
        self.vqgan = VQGAN(encoder, decoder, codebook)
        self.loss = REGISTRY.build("losses", loss or DEFAULT_LOSS)
        set_loss_quirks(self.loss, self.official_quirks)
        if init_from:
            init_autoencoder(self.vqgan, self.loss.discriminator, init_from, target)
        self.quality = ImageQuality()
        self.usage = CodeUsage(int(self.vqgan.quantize.n_embed))

    # ----- structure -----------------------------------------------------------------------------
    def ema_module(self) -> nn.Module:
        """The VQGAN, the weights the EMA averages."""
        return self.vqgan

    def compiled_modules(self) -> list[nn.Module]:
        """The VQGAN's encoder and decoder."""
        return [self.vqgan.encoder, self.vqgan.decoder]

    def configure_optimizers(self) -> Any:
        """Adam for the VQGAN (decoder attention at a scaled learning rate) and for the discriminator, with schedulers."""
        lr = self.effective_learning_rate()
        rank_zero_info(f"CodebookStage({self.target}): learning rate {lr:.3e}")
        normal, special = split_special(list(self.vqgan.named_parameters()), "decoder_attn")
        groups = [{"params": normal, "lr": lr}]
        if special:
            groups.append({"params": special, "lr": lr * self.special_params_lr_scale})
        opt_g = self.make_adam(groups, lr)
        opt_d = self.make_adam(self.loss.discriminator.parameters(), lr)
        return [opt_g, opt_d], [self.make_scheduler(opt_g), self.make_scheduler(opt_d)]

    # ----- training ------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """One VQGAN step on the ``target`` images: generator update, then discriminator update."""
        x = self.images(batch, self.target)
        opt_g, opt_d = self.optimizer_list()
        step = self.global_step  # the official loop gives both optimizers of a batch the same step
        closes = self.begin_micro_batch(batch_idx)
        with self.frozen(self.loss.discriminator):
            recon, cb_loss, info = self.vqgan(x)
            g_loss, logs = self.loss.generator_loss(cb_loss, x, recon, step, self.vqgan.last_layer)
        self.optimise(opt_g, g_loss, closes, "train/total_loss", main=True)
        if self.official_quirks:
            with torch.no_grad():  # official: a new forward pass, after the generator update
                recon = self.vqgan(x)[0]
        if self.official_quirks or self.loss.gan_active(step):
            d_loss, d_logs = self.loss.discriminator_loss(x, recon.detach(), step)
            logs.update(d_logs)
            self.optimise(opt_d, d_loss, closes, "train/disc_loss")
        if closes:
            self.end_window([opt_g, opt_d])
        logs["train/perplexity"] = info.perplexity.detach()
        logs["train/codes_in_use"] = info.codes_in_use.detach().float()
        self.log_dict(logs, on_step=True, on_epoch=False)
        self.log("train/loss", logs["train/total_loss"], prog_bar=True, on_step=True, on_epoch=False)

    # ----- evaluation ----------------------------------------------------------------------------
    def evaluation_step(self, batch: dict[str, Any], batch_idx: int, split: str) -> None:
        """Reconstruct the ``target`` images; update quality and code-usage metrics."""
        x = self.images(batch, self.target)
        recon, _, info = self.vqgan(x)
        self.quality.update(recon, x)
        self.usage.update(info.indices)
        self.log(f"{split}/rec_loss", (x - recon).abs().mean(), on_epoch=True, sync_dist=True, batch_size=x.shape[0])
        if batch_idx == 0 and self.val_panels > 0:
            cols = [c for c in (batch.get("lq"), recon, batch.get("hq")) if isinstance(c, torch.Tensor)]
            log_panel(self, f"{split}/panel", make_panel(cols, self.val_panels), "input | reconstruction | HQ")

    def evaluation_epoch_end(self, split: str) -> None:
        """Log and reset the reconstruction quality and code-usage metrics of ``split``."""
        self.log_epoch_metrics(split, self.quality, self.usage)
