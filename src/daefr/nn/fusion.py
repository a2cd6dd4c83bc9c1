"""Cross-attention fusion of the LQ-branch and HQ-branch latents (DAEFR stage 3).

Official call: ``cross_attention(z_h_HQ, z_h)`` with ``MultiHeadAttnBlock(256, head_size=8)``: keys and
values come from ``norm1(hq_feat)``, queries from ``norm2(lq_feat)``, and the residual is added to
``hq_feat``. Swapping the two inputs changes every predicted index (parity README), so the argument
names here say which is which.
"""

from __future__ import annotations

from torch import Tensor, nn

from daefr.nn.blocks import MultiHeadAttnBlock

__all__ = ["CrossAttentionFusion", "SingleBranchFusion"]


class CrossAttentionFusion(nn.Module):
    """Fuse ``lq_feat`` and ``hq_feat`` (both (B, C, h, w)) -> (B, C, h, w) = hq_feat + attention.

    ``channels`` is C (256 in the official model), ``head_size`` the number of heads (official name,
    8 in the official fusion). ``fused`` selects ``scaled_dot_product_attention`` (off = parity).
    Weights live in ``attn`` (official keys ``cross_attention.*`` map to ``attn.*``).
    """

    def __init__(self, channels: int = 256, head_size: int = 8, fused: bool = False) -> None:
        super().__init__()
        self.channels = channels
        self.attn = MultiHeadAttnBlock(channels, head_size, fused=fused)

    @property
    def fused(self) -> bool:
        """Whether the fused attention path is on."""
        return bool(self.attn.fused)

    def set_fused(self, fused: bool) -> None:
        """Switch between the parity path (False) and fused attention (True)."""
        self.attn.fused = bool(fused)

    def forward(self, lq_feat: Tensor, hq_feat: Tensor) -> Tensor:
        """LQ-encoder latent (query) and HQ-encoder latent (key/value, residual) -> fused (B, C, h, w)."""
        if lq_feat.shape != hq_feat.shape or lq_feat.dim() != 4 or lq_feat.shape[1] != self.channels:
            raise ValueError(
                f"fusion expects two (B, {self.channels}, h, w) maps of the same shape, "
                f"got lq_feat {tuple(lq_feat.shape)} and hq_feat {tuple(hq_feat.shape)}"
            )
        out: Tensor = self.attn(hq_feat, lq_feat)
        return out


class SingleBranchFusion(nn.Module):
    """No fusion: pass one branch's latent on, (B, C, h, w) -> (B, C, h, w), for single-encoder ablations.

    ``branch="hq"`` predicts codes from the HQ encoder alone (a CodeFormer-like restorer: one encoder,
    initialised from the HQ codebook/association stage, fine-tuned on LQ inputs); ``branch="lq"`` from the
    LQ encoder alone. The other encoder still runs but receives no gradient (under DDP set
    ``find_unused_parameters``).
    """

    def __init__(self, channels: int = 256, branch: str = "hq") -> None:
        super().__init__()
        if branch not in ("hq", "lq"):
            raise ValueError(f"single_branch fusion: branch must be 'hq' or 'lq', got {branch!r}")
        self.channels, self.branch = channels, branch

    def forward(self, lq_feat: Tensor, hq_feat: Tensor) -> Tensor:
        """The chosen branch's latent, unchanged."""
        return hq_feat if self.branch == "hq" else lq_feat
