"""VQGAN autoencoder: encoder -> quant_conv -> codebook -> post_quant_conv -> decoder.

Submodule names follow the official ``vqvae.*`` keys (``encoder``, ``quant_conv``, ``quantize``,
``post_quant_conv``, ``decoder``), so an official codebook-stage checkpoint maps by prefix only
(see :mod:`daefr.interop.keymap`). Images are (B, 3, H, W) in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from torch import Tensor, nn

from daefr.nn.contracts import Codebook, QuantizerOutput
from daefr.nn.quantizer import VectorQuantizer
from daefr.nn.vqgan import Decoder, Encoder, set_fused_attention
from daefr.registry import REGISTRY

__all__ = ["VQGAN", "ComponentSpec"]

#: A registry spec (``"name"``, ``{"name": ..., **kwargs}``, ``{"class_path": ..., "init_args": ...}``).
ComponentSpec = str | Mapping[str, Any]


def _component(group: str, value: nn.Module | ComponentSpec) -> nn.Module:
    return value if isinstance(value, nn.Module) else cast(nn.Module, REGISTRY.build(group, value))


class VQGAN(nn.Module):
    """VQGAN autoencoder from modules or registry specs (groups ``encoders``, ``decoders``, ``codebooks``).

    The defaults build the official full-size layout (512x512 -> 16x16x256, 1024 codes). ``encoder``
    must expose ``z_channels``; ``codebook`` must expose ``embed_dim`` and follow
    :class:`daefr.nn.contracts.Codebook`; ``decoder`` takes ``z_channels`` channels. ``quant_conv`` and
    ``post_quant_conv`` are 1x1 convolutions between ``z_channels`` and ``embed_dim``.
    """

    def __init__(
        self,
        encoder: nn.Module | ComponentSpec = "vqgan",
        decoder: nn.Module | ComponentSpec = "vqgan",
        codebook: nn.Module | ComponentSpec = "vq",
    ) -> None:
        super().__init__()
        self.encoder = _component("encoders", encoder)
        self.decoder = _component("decoders", decoder)
        self.quantize = cast(Codebook, _component("codebooks", codebook))
        z_enc = int(getattr(self.encoder, "z_channels"))  # noqa: B009 - contract attribute
        z_dec = int(getattr(self.decoder, "z_channels", z_enc))
        embed_dim = int(self.quantize.embed_dim)
        self.quant_conv = nn.Conv2d(z_enc, embed_dim, kernel_size=1)
        self.post_quant_conv = nn.Conv2d(embed_dim, z_dec, kernel_size=1)

    @classmethod
    def from_official_config(
        cls,
        *,
        ch: int,
        ch_mult: Sequence[int],
        num_res_blocks: int,
        resolution: int,
        attn_resolutions: Sequence[int],
        z_channels: int,
        embed_dim: int,
        n_embed: int,
        dropout: float = 0.0,
        enable_mid: bool = True,
        head_size: int = 1,
        in_channels: int = 3,
        out_ch: int = 3,
        beta: float = 0.25,
        fused_attention: bool = False,
    ) -> VQGAN:
        """Build the built-in components from official ``ddconfig`` keywords (``double_z`` must be false)."""
        layout: dict[str, Any] = dict(
            ch=ch, ch_mult=tuple(ch_mult), num_res_blocks=num_res_blocks, resolution=resolution,
            attn_resolutions=tuple(attn_resolutions), z_channels=z_channels, dropout=dropout,
            enable_mid=enable_mid, head_size=head_size, fused_attention=fused_attention,
        )
        return cls(
            Encoder(in_channels=in_channels, **layout),
            Decoder(out_ch=out_ch, **layout),
            VectorQuantizer(n_embed=n_embed, embed_dim=embed_dim, beta=beta),
        )

    @property
    def last_layer(self) -> Tensor:
        """Weight of the decoder's last layer (for the adaptive GAN weight)."""
        return cast(Tensor, getattr(self.decoder, "last_layer"))  # noqa: B009 - contract attribute

    def encode_pre_quant(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> pre-quantization features (B, embed_dim, h, w) (after quant_conv)."""
        return cast(Tensor, self.quant_conv(self.encoder(x)))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor, QuantizerOutput]:
        """(B, 3, H, W) -> (quant (B, embed_dim, h, w), codebook loss (0-d), QuantizerOutput)."""
        info = self.quantize(self.encode_pre_quant(x))
        return info.quant, info.loss, info

    def decode(self, quant: Tensor) -> Tensor:
        """(B, embed_dim, h, w) -> (B, 3, H, W), nominally in [-1, 1] (not clamped)."""
        return cast(Tensor, self.decoder(self.post_quant_conv(quant)))

    def decode_indices(self, indices: Tensor) -> Tensor:
        """(B, h, w) int64 codebook indices -> (B, 3, H, W)."""
        return self.decode(self.quantize.lookup(indices))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, QuantizerOutput]:
        """(B, 3, H, W) in [-1, 1] -> (reconstruction (B, 3, H, W), codebook loss, QuantizerOutput)."""
        quant, loss, info = self.encode(x)
        return self.decode(quant), loss, info

    def set_fused_attention(self, enabled: bool) -> int:
        """Switch all attention blocks to the fused SDPA path (or back); returns how many were switched."""
        return set_fused_attention(self, enabled)
