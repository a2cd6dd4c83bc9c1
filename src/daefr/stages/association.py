"""``AssociationStage``: train the HQ and LQ autoencoders together with a patch-level CLIP loss (stage 2).

Each branch keeps its own VQGAN loss and discriminator; the association loss on the pre-quantization
features (``quant_conv`` outputs) is added to both branches (``branch_loss + association_weight * clip``).

With ``official_quirks`` (default) the four optimizers run as in the official loop, each after its own
forward pass: HQ autoencoder (CLIP against the current LQ encoder, gradient to the HQ branch only), HQ
discriminator (on the updated HQ reconstruction), LQ autoencoder (CLIP against the *updated* HQ encoder,
gradient to the LQ branch only), LQ discriminator; the discriminators step in every batch (zero gradients
before ``disc_start``). Without it, one forward pass and one backward of
``hq_loss + lq_loss + association_weight * clip_loss`` feed all four optimizers (the discriminators from
``disc_start`` on); each branch then gets the gradient of its official objective at the pre-update weights.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from daefr.models.vqgan import VQGAN
from daefr.registry import REGISTRY
from daefr.stages.init_weights import init_autoencoder
from daefr.stages.manual import DEFAULT_LOSS, ManualOptimisationStage, set_loss_quirks, split_special
from daefr.stages.reporting import CodeUsage, ImageQuality, log_panel, make_panel

Spec = dict[str, Any] | str


class _Branches(nn.Module):
    """The two autoencoders as one module (the EMA / compile target)."""

    def __init__(self, hq: VQGAN, lq: VQGAN) -> None:
        super().__init__()
        self.hq = hq
        self.lq = lq


class AssociationStage(ManualOptimisationStage):
    """Association (DAEFR stage 2) of an HQ and an LQ autoencoder.

    Args:
        encoder, decoder, codebook: registry specs of the HQ branch.
        lq_encoder, lq_decoder, lq_codebook: specs of the LQ branch (None = same as the HQ branch).
        loss, lq_loss: ``losses`` specs of the branch VQGAN losses (``lq_loss`` None = same as ``loss``).
        association: ``associations`` spec (default ``{name: patch_clip}``: temperature 0.07).
        association_weight: factor on the association loss in each branch (official 1.0).
        init_hq_from, init_lq_from: HQ / LQ codebook-stage checkpoints (ours or official).
        init_from: an association-stage checkpoint (both branches; ours or official).
        special_params_lr_scale: LR factor of decoder + post_quant_conv parameters (official 1.0).
        **kwargs: optimisation options of :class:`daefr.stages.manual.ManualOptimisationStage`.
    """

    def __init__(
        self,
        encoder: Spec = "vqgan",
        decoder: Spec = "vqgan",
        codebook: Spec = "vq",
        lq_encoder: Spec | None = None,
        lq_decoder: Spec | None = None,
        lq_codebook: Spec | None = None,
        loss: dict[str, Any] | None = None,
        lq_loss: dict[str, Any] | None = None,
        association: Spec | None = None,
        association_weight: float = 1.0,
        init_hq_from: str | None = None,
        init_lq_from: str | None = None,
        init_from: str | None = None,
        special_params_lr_scale: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.association_weight = float(association_weight)
        self.special_params_lr_scale = float(special_params_lr_scale)
        self.hq = VQGAN(encoder, decoder, codebook)
        self.lq = VQGAN(lq_encoder or encoder, lq_decoder or decoder, lq_codebook or codebook)
        self.loss_hq = REGISTRY.build("losses", loss or DEFAULT_LOSS)
        self.loss_lq = REGISTRY.build("losses", lq_loss or loss or DEFAULT_LOSS)
        self.association = REGISTRY.build("associations", association or {"name": "patch_clip"})
        set_loss_quirks(self.loss_hq, self.official_quirks)
        set_loss_quirks(self.loss_lq, self.official_quirks)
        for path, branch, vq, disc in (
            (init_from or init_hq_from, "hq", self.hq, self.loss_hq.discriminator),
            (init_from or init_lq_from, "lq", self.lq, self.loss_lq.discriminator),
        ):
            if path:
                init_autoencoder(vq, disc, path, branch)  # type: ignore[arg-type]
        self.quality_hq, self.quality_lq = ImageQuality(), ImageQuality()
        self.usage_hq = CodeUsage(int(self.hq.quantize.n_embed))
        self.usage_lq = CodeUsage(int(self.lq.quantize.n_embed))

    # ----- structure -----------------------------------------------------------------------------
    def ema_module(self) -> nn.Module:
        """Both branches (HQ and LQ autoencoders), the weights the EMA averages."""
        return _Branches(self.hq, self.lq)

    def compiled_modules(self) -> list[nn.Module]:
        """The encoders and decoders of both branches."""
        return [self.hq.encoder, self.hq.decoder, self.lq.encoder, self.lq.decoder]

    def configure_optimizers(self) -> Any:
        """Adam for each branch's autoencoder and each branch's discriminator (four optimizers, with schedulers)."""
        lr = self.effective_learning_rate()
        rank_zero_info(f"AssociationStage: learning rate {lr:.3e}")
        optimizers = []
        for vq in (self.hq, self.lq):
            normal, special = split_special(list(vq.named_parameters()), "decoder")
            groups = [{"params": normal, "lr": lr}]
            if special:
                groups.append({"params": special, "lr": lr * self.special_params_lr_scale})
            optimizers.append(self.make_adam(groups, lr))
        optimizers.append(self.make_adam(self.loss_hq.discriminator.parameters(), lr))
        optimizers.append(self.make_adam(self.loss_lq.discriminator.parameters(), lr))
        return optimizers, [self.make_scheduler(o) for o in optimizers]

    def _branch(self, vq: VQGAN, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Any]:
        z = vq.encode_pre_quant(x)
        info = vq.quantize(z)
        return z, vq.decode(info.quant), info

    # ----- training ------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """One association step: generator then discriminator updates of the HQ and LQ branches."""
        hq_img, lq_img = self.images(batch, "hq"), self.images(batch, "lq")
        opts = self.optimizer_list()
        step = self.global_step  # the official loop gives all four optimizers of a batch the same step
        closes = self.begin_micro_batch(batch_idx)
        if self.official_quirks:
            logs, info_hq, info_lq = self._official_step(hq_img, lq_img, opts, step, closes)
        else:
            logs, info_hq, info_lq = self._joint_step(hq_img, lq_img, opts, step, closes)
        if closes:
            self.end_window(opts)
        for name, info in (("hq", info_hq), ("lq", info_lq)):
            logs[f"train/{name}/perplexity"] = info.perplexity.detach()
            logs[f"train/{name}/codes_in_use"] = info.codes_in_use.detach().float()
        self.log_dict(logs, on_step=True, on_epoch=False)
        self.log("train/loss", logs["train/total_loss"], prog_bar=True, on_step=True, on_epoch=False)

    def _autoencoder_turn(
        self, name: str, img: torch.Tensor, other: torch.Tensor, step: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], Any]:
        """Loss of one branch's autoencoder (branch loss + CLIP against the other, frozen branch)."""
        vq, other_vq = (self.hq, self.lq) if name == "hq" else (self.lq, self.hq)
        loss_fn = self.loss_hq if name == "hq" else self.loss_lq
        z, rec, info = self._branch(vq, img)
        with torch.no_grad():  # official: the other branch is frozen by the optimizer toggle
            z_other = other_vq.encode_pre_quant(other)
        assoc = self.association(z, z_other) if name == "hq" else self.association(z_other, z)
        with self.frozen(loss_fn.discriminator):
            g, logs = loss_fn.generator_loss(info.loss, img, rec, step, vq.last_layer, f"train/{name}")
        total = g + self.association_weight * assoc.loss
        logs[f"train/{name}/clip_loss"] = assoc.loss.detach()
        logs[f"train/{name}/total_loss"] = total.detach()
        return total, logs, info

    def _official_step(
        self, hq_img: torch.Tensor, lq_img: torch.Tensor, opts: list[Any], step: int, closes: bool
    ) -> tuple[dict[str, torch.Tensor], Any, Any]:
        opt_hq, opt_lq, opt_dhq, opt_dlq = opts
        logs: dict[str, torch.Tensor] = {}
        infos = {}
        for name, img, other, opt, opt_d, loss_fn in (
            ("hq", hq_img, lq_img, opt_hq, opt_dhq, self.loss_hq), ("lq", lq_img, hq_img, opt_lq, opt_dlq, self.loss_lq)
        ):
            total, branch_logs, infos[name] = self._autoencoder_turn(name, img, other, step)
            logs.update(branch_logs)
            self.optimise(opt, total, closes, f"train/{name}/total_loss", main=name == "hq")
            with torch.no_grad():  # official: a new forward pass, after this branch's update
                rec = self._branch(self.hq if name == "hq" else self.lq, img)[1]
            d_loss, d_logs = loss_fn.discriminator_loss(img, rec, step, f"train/{name}")
            logs.update(d_logs)
            self.optimise(opt_d, d_loss, closes, f"train/{name}/disc_loss")
        logs["train/clip_loss"] = logs["train/hq/clip_loss"]
        logs["train/total_loss"] = logs["train/hq/total_loss"] + logs["train/lq/total_loss"]
        return logs, infos["hq"], infos["lq"]

    def _joint_step(
        self, hq_img: torch.Tensor, lq_img: torch.Tensor, opts: list[Any], step: int, closes: bool
    ) -> tuple[dict[str, torch.Tensor], Any, Any]:
        opt_hq, opt_lq, opt_dhq, opt_dlq = opts
        with self.frozen(self.loss_hq.discriminator, self.loss_lq.discriminator):
            z_hq, rec_hq, info_hq = self._branch(self.hq, hq_img)
            z_lq, rec_lq, info_lq = self._branch(self.lq, lq_img)
            assoc = self.association(z_hq, z_lq)
            g_hq, logs = self.loss_hq.generator_loss(info_hq.loss, hq_img, rec_hq, step, self.hq.last_layer, "train/hq")
            g_lq, logs_lq = self.loss_lq.generator_loss(info_lq.loss, lq_img, rec_lq, step, self.lq.last_layer, "train/lq")
        logs.update(logs_lq)
        total = g_hq + g_lq + self.association_weight * assoc.loss
        logs.update({"train/clip_loss": assoc.loss.detach(), "train/total_loss": total.detach()})
        if self.finite_or_skip({"train/total_loss": total}):
            self.backward_scaled(total)
        discs: list[Any] = []
        for loss_fn, target, rec, opt, name in (
            (self.loss_hq, hq_img, rec_hq, opt_dhq, "hq"), (self.loss_lq, lq_img, rec_lq, opt_dlq, "lq")
        ):
            if loss_fn.gan_active(step):
                d_loss, d_logs = loss_fn.discriminator_loss(target, rec.detach(), step, f"train/{name}")
                logs.update(d_logs)
                if self.finite_or_skip({f"train/{name}/disc_loss": d_loss}):
                    self.backward_scaled(d_loss)
                discs.append(opt)
        if closes:
            for i, opt in enumerate([opt_hq, opt_lq, *discs]):
                self.step_optimizer(opt, main=i == 0)
        return logs, info_hq, info_lq

    # ----- evaluation ----------------------------------------------------------------------------
    def evaluation_step(self, batch: dict[str, Any], batch_idx: int, split: str) -> None:
        """Reconstruct HQ and LQ images with their branches; update quality and code-usage metrics."""
        hq_img, lq_img = self.images(batch, "hq"), self.images(batch, "lq")
        z_hq, rec_hq, info_hq = self._branch(self.hq, hq_img)
        z_lq, rec_lq, info_lq = self._branch(self.lq, lq_img)
        assoc = self.association(z_hq, z_lq)
        n = hq_img.shape[0]
        self.log(f"{split}/clip_loss", assoc.loss, on_epoch=True, sync_dist=True, batch_size=n)
        # top-1 retrieval: an HQ token's best LQ match is the token at the same image and position
        hits = (assoc.logits.argmax(dim=1) == torch.arange(assoc.logits.shape[0], device=assoc.logits.device))
        self.log(f"{split}/association_top1", hits.float().mean(), on_epoch=True, sync_dist=True, batch_size=n)
        self.quality_hq.update(rec_hq, hq_img)
        self.quality_lq.update(rec_lq, lq_img)
        self.usage_hq.update(info_hq.indices)
        self.usage_lq.update(info_lq.indices)
        if batch_idx == 0 and self.val_panels > 0:
            panel = make_panel([lq_img, rec_lq, rec_hq, hq_img], self.val_panels)
            log_panel(self, f"{split}/panel", panel, "LQ | LQ reconstruction | HQ reconstruction | HQ")

    def evaluation_epoch_end(self, split: str) -> None:
        """Log and reset the HQ and LQ branches' epoch metrics under ``{split}/hq`` and ``{split}/lq``."""
        for name, quality, usage in (("hq", self.quality_hq, self.usage_hq), ("lq", self.quality_lq, self.usage_lq)):
            values = self.log_epoch_metrics(f"{split}/{name}", quality, usage)
            if name == "hq":
                self.log(f"{split}/psnr", values["psnr"], sync_dist=True)  # checkpoint monitor: HQ reconstruction quality
