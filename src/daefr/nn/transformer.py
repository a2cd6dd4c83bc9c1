"""Code-prediction transformer: fused latent tokens -> logits over the HQ codebook entries.

The official layout (after CodeFormer): ``feat_emb`` lifts each latent token to the transformer width,
a stack of pre-LN self-attention layers works on sequence-first tensors ``(HW, B, C)``, a learned
position embedding is added to queries and keys only (never to values), and ``idx_pred_layer``
(LayerNorm + bias-free Linear) gives one logit per codebook entry. Parameter names match the official
state dict (``position_emb``, ``feat_emb``, ``ft_layers.N.*``, ``idx_pred_layer.{0,1}``), so the
official final-stage keys map by prefix alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class TransformerSALayer(nn.Module):
    """Pre-LN self-attention layer on ``(L, B, C)`` tokens; ``pos`` is added to queries and keys only.

    ``fused=False`` (default) is the parity path: :class:`torch.nn.MultiheadAttention` with explicit
    ``softmax(q k^T / sqrt(d)) v`` exactly as the official model calls it. ``fused=True`` asks the same
    module for ``scaled_dot_product_attention`` (no attention weights), which is faster and differs by
    float rounding only.
    """

    def __init__(self, embed_dim: int = 512, n_head: int = 8, dim_mlp: int = 1024, dropout: float = 0.0,
                 fused: bool = False) -> None:
        super().__init__()
        if embed_dim % n_head:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by n_head {n_head}")
        self.self_attn = nn.MultiheadAttention(embed_dim, n_head, dropout=dropout)
        self.linear1 = nn.Linear(embed_dim, dim_mlp)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_mlp, embed_dim)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.fused = fused

    def forward(self, tokens: Tensor, pos: Tensor | None = None) -> Tensor:
        """``tokens`` (L, B, C), ``pos`` broadcastable to it (e.g. (L, 1, C)) -> (L, B, C)."""
        normed = self.norm1(tokens)
        # Queries and keys see the position; values do not (official detail, see parity README).
        qk = normed if pos is None else normed + pos
        attended = self.self_attn(qk, qk, normed, need_weights=not self.fused)[0]
        tokens = tokens + self.dropout1(attended)
        hidden = self.linear1(self.norm2(tokens))
        # Exact (erf) GELU as the official model; the tanh approximation moves logits by ~7e-4.
        hidden = self.linear2(self.dropout(F.gelu(hidden)))
        return tokens + self.dropout2(hidden)


class CodeTransformer(nn.Module):
    """Predict HQ codebook indices from fused latents: ``(B, C, H, W)`` -> logits ``(B, H*W, n_embed)``.

    ``n_tokens`` is the latent grid size H*W the learned position embedding covers (16x16 = 256 for
    the official 512-px model). ``fused`` switches every layer to fused attention (off = parity).
    """

    def __init__(self, in_channels: int = 256, n_embed: int = 1024, n_tokens: int = 256,
                 embed_dim: int = 512, n_layers: int = 9, n_head: int = 8, dim_mlp: int = 1024,
                 dropout: float = 0.0, fused: bool = False) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.n_embed = n_embed
        self.n_tokens = n_tokens
        self.embed_dim = embed_dim
        # Official init: zeros, then loaded from the checkpoint; only the shape matters for loading.
        self.position_emb = nn.Parameter(torch.zeros(n_tokens, embed_dim))
        self.feat_emb = nn.Linear(in_channels, embed_dim)
        self.ft_layers = nn.ModuleList(
            TransformerSALayer(embed_dim, n_head, dim_mlp, dropout, fused) for _ in range(n_layers)
        )
        self.idx_pred_layer = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, n_embed, bias=False))

    @property
    def fused(self) -> bool:
        """Whether the layers use fused attention (``scaled_dot_product_attention``)."""
        return all(bool(getattr(layer, "fused", False)) for layer in self.ft_layers)

    def set_fused(self, fused: bool) -> None:
        """Switch every layer between the parity path (False) and fused attention (True)."""
        for layer in self.ft_layers:
            if isinstance(layer, TransformerSALayer):
                layer.fused = bool(fused)

    def forward(self, feat: Tensor) -> Tensor:
        """``feat`` (B, C, H, W) with H*W == n_tokens -> logits (B, H*W, n_embed), tokens in raster order."""
        if feat.dim() != 4 or feat.shape[1] != self.in_channels:
            raise ValueError(f"expected features (B, {self.in_channels}, H, W), got {tuple(feat.shape)}")
        b, _, h, w = feat.shape
        if h * w != self.n_tokens:
            raise ValueError(
                f"latent grid {h}x{w} has {h * w} tokens but the position embedding covers {self.n_tokens}; "
                "resize the input to the model's resolution"
            )
        tokens = self.feat_emb(feat.flatten(2).permute(2, 0, 1))  # (HW, B, embed_dim)
        pos = self.position_emb.unsqueeze(1)  # broadcast over the batch, same values as a repeat
        for layer in self.ft_layers:
            tokens = layer(tokens, pos)
        logits: Tensor = self.idx_pred_layer(tokens)  # (HW, B, n_embed)
        return logits.permute(1, 0, 2)
