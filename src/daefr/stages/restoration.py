"""``RestorationStage``: fusion + code prediction (DAEFR stage 3), HQ codebook and decoder frozen.

Loss = cross-entropy of the predicted code logits against the indices that the frozen HQ encoder +
HQ codebook give for the HQ image, plus ``l2_weight`` (official 10) x MSE between the fused features
and the HQ quantized features (:class:`daefr.models.daefr_net.DAEFRNet`). The trained restorer is
exported with :meth:`RestorationStage.export_restorer` (safetensors, read by ``daefr.load_restorer``
and ``daefr restore --weights``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from torch import nn

from daefr.errors import ConfigError
from daefr.interop.keymap_daefr import is_daefr_final_state_dict, load_official_into_net
from daefr.interop.restorer_io import save_restorer
from daefr.models.daefr_net import DAEFRNet
from daefr.models.restorer import build_component, restorer_arch
from daefr.models.vqgan import VQGAN
from daefr.nn.contracts import code_usage_stats
from daefr.stages.base import TrainingStage
from daefr.stages.callbacks import EMAWeights
from daefr.stages.init_weights import init_autoencoder, load_into, read_state_dict
from daefr.stages.reporting import CodeUsage, ImageQuality, log_panel, make_panel

log = logging.getLogger(__name__)

Spec = dict[str, Any] | str
_COMPONENTS = ("lq_encoder", "hq_encoder", "fusion", "predictor", "codebook", "decoder")
MANUAL_ONLY_OPTIONS = {"accumulate_grad_batches": "--trainer.accumulate_grad_batches",
                       "gradient_clip_val": "--trainer.gradient_clip_val",
                       "gradient_clip_algorithm": "--trainer.gradient_clip_algorithm"}
"""Options of the manual GAN stages -> the Trainer option that does the same for this stage."""
_LAYOUT = ("ch", "ch_mult", "num_res_blocks", "resolution", "attn_resolutions", "z_channels", "dropout",
           "enable_mid", "head_size")


def stage_vqgan(cfg: dict[str, Any], encoder_key: str) -> VQGAN:
    """A VQGAN with the restorer's layout and components, to read an earlier stage's branch into."""
    layout = {k: cfg[k] for k in _LAYOUT if k in cfg}
    encoder = build_component("encoders", cfg.get(encoder_key, "vqgan"), **layout, in_channels=cfg.get("in_channels", 3))
    decoder = build_component("decoders", cfg.get("decoder", "vqgan"), **layout, out_ch=cfg.get("out_ch", 3))
    codebook = build_component("codebooks", cfg.get("codebook", "vq"), n_embed=cfg["n_embed"], embed_dim=cfg["embed_dim"])
    return VQGAN(encoder, decoder, codebook)


class RestorationStage(TrainingStage):
    """Final DAEFR stage: trains LQ/HQ encoders, fusion and predictor; exports a :class:`DAEFRRestorer`.

    Args:
        arch: restorer architecture: preset name (``full`` = released model, ``tiny``) or a dict of official
            ddconfig keywords plus ``fusion_heads``, ``n_layers``, ``n_head``, ``dim_mlp``, ``transformer_dim``.
        lq_encoder, hq_encoder, fusion, predictor, codebook, decoder: registry specs replacing a component
            (None = the architecture's default).
        l2_weight: weight of the feature MSE (official 10).
        init_hq_codebook_from: HQ codebook-stage checkpoint (target branch, HQ codebook, decoder).
        init_association_from: association-stage checkpoint (LQ/HQ encoders); both ours or official.
        init_from: a final-stage checkpoint to start from instead (ours or the official DAEFR model).
        export_path: write the restorer (safetensors) there when fitting ends.
        log_rec_loss: also log ``train/rec_loss`` = mean |HQ - restored| (the official ``Rec_loss``; log only,
            no gradient), at the cost of one decoder pass per step under ``no_grad``.
        **kwargs: optimisation options of :class:`daefr.stages.base.TrainingStage`. This stage uses Lightning's
            automatic optimisation: accumulate and clip with the Trainer's ``accumulate_grad_batches`` and
            ``gradient_clip_val`` / ``gradient_clip_algorithm`` (the GAN stages' own options are refused here).
    """

    def __init__(
        self,
        arch: str | dict[str, Any] = "full",
        lq_encoder: Spec | None = None,
        hq_encoder: Spec | None = None,
        fusion: Spec | None = None,
        predictor: Spec | None = None,
        codebook: Spec | None = None,
        decoder: Spec | None = None,
        l2_weight: float = 10.0,
        init_hq_codebook_from: str | None = None,
        init_association_from: str | None = None,
        init_from: str | None = None,
        export_path: str | None = None,
        log_rec_loss: bool = False,
        **kwargs: Any,
    ) -> None:
        manual = sorted(set(kwargs) & set(MANUAL_ONLY_OPTIONS))
        if manual:
            raise ConfigError(
                f"RestorationStage does not take {', '.join(manual)}: it uses Lightning's automatic optimisation; "
                f"set {', '.join(MANUAL_ONLY_OPTIONS[k] for k in manual)} instead"
            )
        super().__init__(**kwargs)
        self.save_hyperparameters()
        specs = {"lq_encoder": lq_encoder, "hq_encoder": hq_encoder, "fusion": fusion, "predictor": predictor,
                 "codebook": codebook, "decoder": decoder}
        overrides = {k: v for k, v in specs.items() if v is not None}
        self.arch_config = restorer_arch(arch, **overrides)
        self.net = DAEFRNet.from_config(self.arch_config)
        self.l2_weight = float(l2_weight)
        self.export_path = export_path
        self.log_rec_loss = bool(log_rec_loss)
        if init_from:
            self._init_from_final(init_from)
        elif init_hq_codebook_from or init_association_from:
            self._init_from_stages(init_hq_codebook_from, init_association_from)
        self.quality = ImageQuality()
        self.usage = CodeUsage(int(self.net.restorer.n_embed))

    # ----- initialisation ------------------------------------------------------------------------
    def _init_from_stages(self, hq_path: str | None, assoc_path: str | None) -> None:
        if not (hq_path and assoc_path):
            raise ValueError("initialising from earlier stages needs both init_hq_codebook_from and init_association_from")
        hq, assoc_hq, assoc_lq = (stage_vqgan(self.arch_config, k) for k in ("hq_encoder", "hq_encoder", "lq_encoder"))
        init_autoencoder(hq, None, hq_path, "hq")
        init_autoencoder(assoc_hq, None, assoc_path, "hq")
        init_autoencoder(assoc_lq, None, assoc_path, "lq")
        self.net.init_from_stages(hq, assoc_hq, assoc_lq)
        log.info("restoration stage initialised from %s (HQ codebook) and %s (association)", hq_path, assoc_path)

    def _init_from_final(self, path: str) -> None:
        sd = read_state_dict(path)
        if is_daefr_final_state_dict(sd):
            load_official_into_net(self.net, sd, strict=True)
            return
        ours = {k[len("net."):]: v for k, v in sd.items() if k.startswith("net.")}
        load_into(self.net, ours, f"{path} (net.*)")

    # ----- structure -----------------------------------------------------------------------------
    def ema_module(self) -> nn.Module:
        """The restorer, the weights the EMA averages."""
        return self.net.restorer

    def compiled_modules(self) -> list[nn.Module]:
        """The restorer's LQ and HQ encoders and its predictor."""
        r = self.net.restorer
        return [r.lq_encoder, r.hq_encoder, r.predictor]

    def configure_optimizers(self) -> Any:
        """Adam over the trainable restorer parameters."""
        lr = self.effective_learning_rate()
        rank_zero_info(f"RestorationStage: learning rate {lr:.3e}")
        opt = self.make_adam(list(self.net.trainable_parameters()), lr)
        return [opt], [self.make_scheduler(opt)]

    # ----- training ------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """Code-prediction (and feature L2) loss of ``lq``, ``hq`` (B, 3, H, W) in [-1, 1]; returns the loss."""
        lq, hq = self.images(batch, "lq"), self.images(batch, "hq")
        out = self.net(lq, hq, l2_weight=self.l2_weight, decode=False)
        loss = out["loss"]
        self.finite_or_skip({"train/loss": loss})  # a NaN/Inf window changes no weight (on_before_optimizer_step)
        logs = {"train/ce_loss": out["ce_loss"].detach(), "train/l2_loss": out["l2_loss"].detach()}
        if self.log_rec_loss:  # official Rec_loss: decode of the predicted codes, logged only
            with torch.no_grad():
                fused = out["fused"]
                restored = self.net.restorer.decode_indices(out["indices"], (fused.shape[2], fused.shape[3]), fused)
                logs["train/rec_loss"] = (hq - restored).abs().mean()
        perplexity, in_use = code_usage_stats(out["indices"], int(self.net.restorer.n_embed))
        logs.update({
            "train/code_accuracy": (out["indices"] == out["gt_idx"]).float().mean(),
            "train/perplexity": perplexity,
            "train/codes_in_use": in_use.float(),
        })
        self.log_dict(logs, on_step=True, on_epoch=False)
        self.log("train/loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=False)
        return loss

    # ----- evaluation and prediction ---------------------------------------------------------------
    def evaluation_step(self, batch: dict[str, Any], batch_idx: int, split: str) -> None:
        """Restore ``lq`` (decoding the predicted codes); update quality and code-usage metrics against ``hq``."""
        lq, hq = self.images(batch, "lq"), self.images(batch, "hq")
        out = self.net(lq, hq, l2_weight=self.l2_weight, decode=True)
        n = lq.shape[0]
        self.log(f"{split}/ce_loss", out["ce_loss"], on_epoch=True, sync_dist=True, batch_size=n)
        self.log(f"{split}/l2_loss", out["l2_loss"], on_epoch=True, sync_dist=True, batch_size=n)
        acc = (out["indices"] == out["gt_idx"]).float().mean()
        self.log(f"{split}/code_accuracy", acc, on_epoch=True, sync_dist=True, batch_size=n)
        self.quality.update(out["restored"], hq)
        self.usage.update(out["indices"])
        if batch_idx == 0 and self.val_panels > 0:
            log_panel(self, f"{split}/panel", make_panel([lq, out["restored"], hq], self.val_panels), "LQ | restored | HQ")

    def evaluation_epoch_end(self, split: str) -> None:
        """Log and reset the restoration quality and code-usage metrics of ``split``."""
        self.log_epoch_metrics(split, self.quality, self.usage)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Restore ``batch["lq"]`` (B, 3, H, W) in [-1, 1] for a prediction writer.

        Returns ``{"restored": (B, 3, H, W) in [-1, 1]}`` plus the
        batch's non-image entries (keys, paths), for a prediction writer.
        """
        restored = self.net.restorer(self.images(batch, "lq")).clamp(-1.0, 1.0)
        extras = {k: v for k, v in batch.items() if k not in ("lq", "hq") and not isinstance(v, torch.Tensor)}
        return {"restored": restored, **extras}

    # ----- export --------------------------------------------------------------------------------
    def export_restorer(self, path: str | Path, use_ema: bool = True) -> Path:
        """Write the restorer (EMA weights when an :class:`EMAWeights` callback is attached) as safetensors."""
        ema = None
        if use_ema and self._trainer is not None:
            callbacks = getattr(self.trainer, "callbacks", [])
            ema = next((c for c in callbacks if isinstance(c, EMAWeights) and c.shadow), None)
        if ema is None:
            return save_restorer(self.net.restorer, path)
        with ema.applied(self), torch.no_grad():
            return save_restorer(self.net.restorer, path)

    @rank_zero_only
    def on_fit_end(self) -> None:
        """Export the restorer to ``export_path`` when one is set."""
        if self.export_path:
            written = self.export_restorer(self.export_path)
            rank_zero_info(f"RestorationStage: restorer exported to {written}")
