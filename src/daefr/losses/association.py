"""Association loss of DAEFR's second stage: a symmetric CLIP loss over latent patches.

Both feature maps (B, C, h, w) (the pre-quantization features after ``quant_conv`` of the HQ and of
the LQ autoencoder) become B*h*w tokens ordered (batch, y, x), are L2-normalised (no epsilon, as
the official code) and compared with ``logits = (exp(logit_scale) * hq_n) @ lq_n.T``. Every token
is its own class: the positive of an HQ token is the LQ token of the same image and position, and
every other token in the batch (other positions of the same image included) is a negative.
``loss = (CE(logits, arange) + CE(logits.T, arange)) / 2``. The temperature is fixed (0.07 in
DAEFR: the official ``logit_scale`` parameter is in no optimizer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from daefr.nn.quantizer import float32_region

__all__ = ["AssociationOutput", "PatchCLIPLoss", "patch_tokens"]


@dataclass
class AssociationOutput:
    """``loss`` = (hq_loss + lq_loss) / 2; ``logits`` (N_hq, N_lq) rows are HQ tokens."""

    loss: Tensor
    hq_loss: Tensor
    lq_loss: Tensor
    logits: Tensor


def patch_tokens(feat: Tensor) -> Tensor:
    """(B, C, h, w) -> (B*h*w, C) L2-normalised tokens ordered (batch, y, x); no epsilon (official)."""
    if feat.ndim != 4:
        raise ValueError(f"patch_tokens expects (B, C, h, w) features, got shape {tuple(feat.shape)}")
    flat = feat.permute(0, 2, 3, 1).reshape(-1, feat.shape[1])
    return flat / flat.norm(dim=1, keepdim=True)


class PatchCLIPLoss(nn.Module):
    """Association ``patch_clip``: ``forward(hq_feat, lq_feat) -> AssociationOutput``; inputs (B, C, h, w).

    ``temperature``: fixed softmax temperature (official 0.07); stored as the buffer ``logit_scale``
    = log(1 / temperature), which is what the official checkpoints hold under ``logit_scale``.

    ``gather_negatives`` (default off, the official behaviour): under ``torch.distributed`` with more
    than one process, the tokens of every rank are all-gathered and used as extra negatives; each
    rank keeps gradients for its own tokens only. Every rank must then pass features of the same
    shape. Averaged over ranks, the loss equals the single-process loss on the concatenated batch.
    Without an initialised process group (or with one process) it computes the official loss.

    Under autocast the loss is computed in float32. Loading a state dict (e.g. an official
    checkpoint's ``logit_scale``) sets the temperature from that state.
    """

    logit_scale: Tensor

    def __init__(self, temperature: float = 0.07, gather_negatives: bool = False) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"PatchCLIPLoss temperature must be > 0, got {temperature}")
        self.gather_negatives = gather_negatives
        self.register_buffer("logit_scale", torch.tensor(math.log(1.0 / temperature), dtype=torch.float32))

    @property
    def temperature(self) -> float:
        """1 / exp(logit_scale)."""
        return float(torch.exp(-self.logit_scale))

    def forward(self, hq_feat: Tensor, lq_feat: Tensor) -> AssociationOutput:
        """(B, C, h, w) HQ and LQ features -> AssociationOutput (scalar losses, (N, N) logits)."""
        if hq_feat.shape != lq_feat.shape:
            raise ValueError(f"HQ features {tuple(hq_feat.shape)} and LQ features {tuple(lq_feat.shape)} differ")
        with float32_region(hq_feat):  # low-precision logits would blur the 1e-3-level differences
            return self._loss(hq_feat.float(), lq_feat.float())

    def _loss(self, hq_feat: Tensor, lq_feat: Tensor) -> AssociationOutput:
        hq_n, lq_n = patch_tokens(hq_feat), patch_tokens(lq_feat)
        scale = self.logit_scale.float().exp()
        if self.gather_negatives and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            hq_all, lq_all = _gather_with_local_grad(hq_n), _gather_with_local_grad(lq_n)
            offset = dist.get_rank() * hq_n.shape[0]
            return clip_loss_with_negatives(hq_n, lq_n, hq_all, lq_all, offset, scale)
        logits = (scale * hq_n) @ lq_n.t()  # official evaluation order (scale applied before the product)
        targets = torch.arange(logits.shape[0], device=logits.device)
        hq_loss = F.cross_entropy(logits, targets)
        lq_loss = F.cross_entropy(logits.t(), targets)
        return AssociationOutput((hq_loss + lq_loss) / 2, hq_loss, lq_loss, logits)


def clip_loss_with_negatives(
    hq_local: Tensor, lq_local: Tensor, hq_all: Tensor, lq_all: Tensor, offset: int, scale: Tensor
) -> AssociationOutput:
    """CLIP loss of local tokens (N, C) against all tokens (M, C); local token i is global token offset+i."""
    targets = torch.arange(hq_local.shape[0], device=hq_local.device) + offset
    logits = (scale * hq_local) @ lq_all.t()  # (N, M)
    hq_loss = F.cross_entropy(logits, targets)
    lq_loss = F.cross_entropy((scale * lq_local) @ hq_all.t(), targets)
    return AssociationOutput((hq_loss + lq_loss) / 2, hq_loss, lq_loss, logits)


def _gather_with_local_grad(tokens: Tensor) -> Tensor:
    """All-gather (N, C) tokens from every rank -> (world*N, C); the local slice keeps its autograd graph."""
    parts = [torch.empty_like(tokens) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tokens.detach().contiguous())
    parts[dist.get_rank()] = tokens
    return torch.cat(parts, dim=0)
