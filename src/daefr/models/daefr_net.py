"""The full final-stage DAEFR network (training side): restorer + frozen target branch + losses.

Holds every part the official final-stage checkpoint has (877 keys for the released model):

* ``restorer`` (:class:`DAEFRRestorer`): LQ/HQ encoders, fusion, transformer (trained) and the frozen
  HQ codebook, post_quant_conv and HQ decoder;
* ``target_encoder`` + ``target_quant_conv``: frozen HQ codebook-stage encoder that turns the HQ image
  into the cross-entropy targets ``gt_idx`` and the feature target ``quant_gt`` (official
  ``Fixed_encoder`` / ``Fixed_quant_conv``, with the HQ codebook ``restorer.codebook``);
* ``assoc_hq_codebook`` / ``assoc_lq_codebook``: the association-stage codebooks, frozen and unused,
  kept so an official checkpoint round-trips completely.

Training loss (DESIGN section 1): ``loss = ce_loss + l2_weight * l2_loss`` with ``ce_loss`` =
cross-entropy of the logits against ``gt_idx`` and ``l2_loss`` = MSE(fused, quant_gt); ``l2_weight`` is 10
in the official setting. ``ce_loss``/``l2_loss`` are the unweighted official values.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from daefr.models.architectures import LAYOUT_KEYS
from daefr.models.restorer import DAEFRRestorer, build_component, restorer_arch
from daefr.nn.contracts import Codebook

__all__ = ["DAEFRNet"]

_FROZEN_RESTORER_PARTS = ("codebook", "post_quant_conv", "decoder")
_TRAINED_RESTORER_PARTS = ("lq_encoder", "lq_quant_conv", "hq_encoder", "hq_quant_conv", "fusion", "predictor")


class DAEFRNet(nn.Module):
    """Final-stage network; ``forward(lq, gt=None)`` -> dict of outputs, targets and losses (see :meth:`forward`).

    Frozen parts have ``requires_grad=False`` and stay in eval mode; :meth:`trainable_parameters` yields
    what the official optimizer trains (LQ/HQ encoders + quant_convs, fusion, predictor: 470 tensors for
    the released architecture).
    """

    def __init__(self, restorer: DAEFRRestorer, target_encoder: nn.Module, assoc_hq_codebook: nn.Module,
                 assoc_lq_codebook: nn.Module) -> None:
        super().__init__()
        self.restorer = restorer
        self.target_encoder = target_encoder
        embed_dim = int(restorer.codebook.embed_dim)
        self.target_quant_conv = nn.Conv2d(int(getattr(target_encoder, "z_channels")), embed_dim, 1)  # noqa: B009
        self.assoc_hq_codebook = cast(Codebook, assoc_hq_codebook)
        self.assoc_lq_codebook = cast(Codebook, assoc_lq_codebook)
        for module in self.frozen_modules():
            module.requires_grad_(False)
            module.eval()

    @classmethod
    def from_config(cls, arch: str | Mapping[str, Any] | None = None, *, fast: bool = False,
                    **overrides: Any) -> DAEFRNet:
        """Build from the same architecture name or keywords as :meth:`DAEFRRestorer.from_config` (default: release)."""
        cfg = restorer_arch(arch, **overrides)
        restorer = DAEFRRestorer.from_config(cfg, fast=fast)
        layout = {k: cfg[k] for k in LAYOUT_KEYS}
        layout["in_channels"] = cfg.get("in_channels", 3)
        target = build_component("encoders", cfg.get("hq_encoder", "vqgan"), **layout)
        cb_args = {"n_embed": cfg["n_embed"], "embed_dim": cfg["embed_dim"]}
        spec = cfg.get("codebook", "vq")
        assoc_hq = build_component("codebooks", spec, **cb_args)
        return cls(restorer, target, assoc_hq, build_component("codebooks", spec, **cb_args))

    # ----- parameter groups --------------------------------------------------------------------
    def frozen_modules(self) -> Iterator[nn.Module]:
        """Modules the final stage never trains (HQ codebook/decoder, target branch, association codebooks)."""
        for name in _FROZEN_RESTORER_PARTS:
            yield getattr(self.restorer, name)
        yield from (self.target_encoder, self.target_quant_conv, self.assoc_hq_codebook, self.assoc_lq_codebook)

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the official final-stage optimizer (encoders + quant_convs, fusion, predictor)."""
        for name in _TRAINED_RESTORER_PARTS:
            yield from getattr(self.restorer, name).parameters()

    def train(self, mode: bool = True) -> DAEFRNet:
        """Like ``nn.Module.train`` but the frozen parts stay in eval mode."""
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    # ----- targets and losses --------------------------------------------------------------------
    @torch.no_grad()
    def compute_targets(self, gt: Tensor) -> tuple[Tensor, Tensor]:
        """HQ image (B, 3, H, W) in [-1, 1] -> (gt_idx (B, T) int64, quant_gt (B, embed_dim, h, w)).

        Official ``encode_to_gt``: frozen target encoder + quant_conv, then the HQ codebook's nearest codes
        (``quant_gt`` is the straight-through value, numerically the code rows up to ~1e-7).
        """
        z = self.target_quant_conv(self.target_encoder(gt))
        info = self.restorer.codebook(z)
        return info.indices.reshape(gt.shape[0], -1), info.quant

    def forward(self, lq: Tensor, gt: Tensor | None = None, *, l2_weight: float = 10.0,
                decode: bool = True) -> dict[str, Tensor]:
        """LQ (and HQ) images (B, 3, H, W) in [-1, 1] -> outputs, targets and losses.

        Keys: ``restored`` (B, 3, H, W) (absent with ``decode=False``), ``logits`` (B, T, n_embed),
        ``indices`` (B, T), ``lq_feat``/``hq_feat``/``fused`` (B, C, h, w), ``gt_idx`` (B, T),
        ``quant_gt`` (B, C, h, w), ``ce_loss``, ``l2_loss``, ``loss`` = ce + l2_weight * l2 (0-d), and the
        official ``z_info`` of the HQ codebook on ``lq_feat``: ``lq_codes`` (B, T), ``lq_code_perplexity``.
        Without ``gt`` the targets come from the HQ codebook applied to ``lq_feat`` (official behaviour of
        ``forward(lq)``); those losses are only diagnostic.
        """
        r = self.restorer
        out = r.forward_intermediates(lq, decode=decode)
        with torch.no_grad():
            lq_info = r.codebook(out["lq_feat"])
        if gt is None:
            gt_idx, quant_gt = lq_info.indices.reshape(lq.shape[0], -1), lq_info.quant
        else:
            gt_idx, quant_gt = self.compute_targets(gt)
        logits = out["logits"]
        ce_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), gt_idx.reshape(-1))
        l2_loss = F.mse_loss(out["fused"], quant_gt)
        out.update(gt_idx=gt_idx, quant_gt=quant_gt, ce_loss=ce_loss, l2_loss=l2_loss,
                   loss=ce_loss + l2_weight * l2_loss, lq_codes=lq_info.indices.reshape(lq.shape[0], -1),
                   lq_code_perplexity=lq_info.perplexity)
        return out

    # ----- initialisation from the earlier stages -------------------------------------------------
    @torch.no_grad()
    def init_from_stages(self, hq_codebook: nn.Module, association_hq: nn.Module, association_lq: nn.Module) -> None:
        """Copy weights as the official ``init_from_ckpt_two`` does, from three :class:`daefr.models.vqgan.VQGAN`.

        ``hq_codebook`` (HQ codebook stage) gives the target branch, HQ codebook, post_quant_conv and
        decoder; ``association_hq``/``association_lq`` (the association stage's branches) give the HQ/LQ
        encoders + quant_convs and the associated codebooks. Fusion and predictor keep their values.
        """
        sources = {"hq": hq_codebook, "assoc_hq": association_hq, "assoc_lq": association_lq}
        # (our submodule path, source model, its submodule): the official init_from_ckpt_two rules
        table = [
            ("restorer.lq_encoder", "assoc_lq", "encoder"), ("restorer.lq_quant_conv", "assoc_lq", "quant_conv"),
            ("restorer.hq_encoder", "assoc_hq", "encoder"), ("restorer.hq_quant_conv", "assoc_hq", "quant_conv"),
            ("target_encoder", "hq", "encoder"), ("target_quant_conv", "hq", "quant_conv"),
            ("restorer.codebook", "hq", "quantize"), ("restorer.post_quant_conv", "hq", "post_quant_conv"),
            ("restorer.decoder", "hq", "decoder"), ("assoc_hq_codebook", "assoc_hq", "quantize"),
            ("assoc_lq_codebook", "assoc_lq", "quantize"),
        ]
        for ours, source, theirs in table:
            src = sources[source].get_submodule(theirs)
            self.get_submodule(ours).load_state_dict(copy.deepcopy(src.state_dict()), strict=True)
