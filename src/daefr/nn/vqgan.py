"""VQGAN encoder and decoder with the official DAEFR layout and state-dict key names.

Layout parameters are named as in the official ``ddconfig`` (``ch``, ``ch_mult``, ``num_res_blocks``,
``resolution``, ``attn_resolutions``, ``z_channels``, ``enable_mid``, ``head_size``, ``dropout``), so
an official config dict can be passed as keywords. The released DAEFR models use ``ch=64``,
``ch_mult=(1, 2, 2, 4, 4, 8)``, ``num_res_blocks=2``, ``resolution=512``, ``attn_resolutions=(16,)``,
``z_channels=256``: 512x512 images map to a 16x16x256 latent (the defaults below).

Activation checkpointing (``encoder.checkpointing = True``, off by default): during training each
ResnetBlock and attention block keeps only its input and recomputes its inside in the backward pass,
which trades about one extra forward for most of the activation memory (figures in
``benchmarks/RESULTS.md``, "Training"). Values and gradients are unchanged; the parity forward and
every no-grad forward do not go through it.

Submodule names mirror the official keys (``down.{level}.block.{i}``, ``down.{level}.attn.{i}``,
``down.{level}.downsample``, ``mid.block_1``/``attn_1``/``block_2``, ``up.{level}...``,
``norm_out``, ``conv_out``), so official weights load with a prefix mapping only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from daefr.nn.blocks import Downsample, MultiHeadAttnBlock, Normalize, ResnetBlock, Upsample, swish

__all__ = ["Decoder", "Encoder", "set_activation_checkpointing", "set_fused_attention"]

OFFICIAL_CH = 64
OFFICIAL_CH_MULT = (1, 2, 2, 4, 4, 8)


def _check_layout(ch: int, ch_mult: Sequence[int], num_res_blocks: int, resolution: int) -> tuple[int, ...]:
    mult = tuple(int(m) for m in ch_mult)
    if not mult or ch < 1 or num_res_blocks < 1 or any(m < 1 for m in mult):
        raise ValueError(f"invalid VQGAN layout: ch={ch}, ch_mult={list(ch_mult)}, num_res_blocks={num_res_blocks}")
    if resolution % 2 ** (len(mult) - 1):
        raise ValueError(f"resolution {resolution} is not divisible by 2**{len(mult) - 1} (ch_mult has {len(mult)} levels)")
    return mult


def _activate_out(h: Tensor, fast: bool) -> Tensor:
    """The final activation: official ``swish``, or (fast) one in-place ``silu`` on the full-size map."""
    return F.silu(h, inplace=not h.requires_grad) if fast else swish(h)


def _call(module: nn.Module, h: Tensor, checkpointed: bool) -> Tensor:
    """``module(h)``, through activation checkpointing when asked and gradients are being recorded."""
    wants_grad = h.requires_grad or any(p.requires_grad for p in module.parameters())
    if checkpointed and torch.is_grad_enabled() and wants_grad:
        return cast(Tensor, checkpoint(module, h, use_reentrant=False))
    return cast(Tensor, module(h))


class _Level(nn.Module):
    """One resolution level: ``block`` (ResnetBlocks), ``attn`` (attention after each block, or empty)."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()
        self.downsample: Downsample | None = None
        self.upsample: Upsample | None = None

    def run_blocks(self, h: Tensor, checkpointed: bool = False) -> Tensor:
        """Each ResnetBlock, followed by its attention block when the level has them (checkpointed: see module doc)."""
        for i, block in enumerate(self.block):
            h = _call(block, h, checkpointed)
            if len(self.attn) > 0:
                h = _call(self.attn[i], h, checkpointed)
        return h


class _Mid(nn.Module):
    """Bottleneck: ResnetBlock -> self-attention -> ResnetBlock (keys ``block_1``, ``attn_1``, ``block_2``)."""

    def __init__(self, channels: int, dropout: float, head_size: int, fused: bool) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.attn_1 = MultiHeadAttnBlock(channels, head_size, fused=fused)
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def run(self, h: Tensor, checkpointed: bool = False) -> Tensor:
        """block_1 -> attn_1 -> block_2 on (B, C, h, w)."""
        return self.run_second(self.run_first(h, checkpointed), checkpointed)

    def run_first(self, h: Tensor, checkpointed: bool = False) -> Tensor:
        """block_1 only (the encoder reports its output as a feature)."""
        return _call(self.block_1, h, checkpointed)

    def run_second(self, h: Tensor, checkpointed: bool = False) -> Tensor:
        """attn_1 -> block_2."""
        return _call(self.block_2, _call(self.attn_1, h, checkpointed), checkpointed)


class Encoder(nn.Module):
    """VQGAN encoder: (B, in_channels, H, W) in [-1, 1] -> (B, z_channels, H/2^(L-1), W/2^(L-1)).

    ``L = len(ch_mult)``. Attention blocks follow every ResnetBlock of a level whose resolution (relative
    to ``resolution``) is in ``attn_resolutions``; ``enable_mid`` adds the bottleneck ``mid`` blocks;
    ``head_size`` is the number of attention heads (official name); ``double_z`` doubles the output
    channels (official option, unused by DAEFR); ``fused_attention`` switches every attention block
    to the fused SDPA path. Set ``checkpointing = True`` for activation checkpointing (module doc);
    ``fast = True`` (set by :func:`daefr.nn.fast_blocks.set_fast`) makes the final activation in place.
    """

    checkpointing: bool = False
    fast: bool = False

    def __init__(
        self,
        *,
        ch: int = OFFICIAL_CH,
        ch_mult: Sequence[int] = OFFICIAL_CH_MULT,
        num_res_blocks: int = 2,
        resolution: int = 512,
        attn_resolutions: Sequence[int] = (16,),
        z_channels: int = 256,
        in_channels: int = 3,
        dropout: float = 0.0,
        enable_mid: bool = True,
        head_size: int = 1,
        double_z: bool = False,
        fused_attention: bool = False,
    ) -> None:
        super().__init__()
        mult = _check_layout(ch, ch_mult, num_res_blocks, resolution)
        self.num_levels = len(mult)
        self.z_channels = z_channels
        self.downsample_factor = 2 ** (self.num_levels - 1)
        self.conv_in = nn.Conv2d(in_channels, ch, kernel_size=3, stride=1, padding=1)
        self.down = nn.ModuleList()
        in_mult = (1, *mult)
        res = resolution
        block_out = ch
        for level in range(self.num_levels):
            block_in, block_out = ch * in_mult[level], ch * mult[level]
            stage = _Level()
            for _ in range(num_res_blocks):
                stage.block.append(ResnetBlock(block_in, block_out, dropout))
                block_in = block_out
                if res in attn_resolutions:
                    stage.attn.append(MultiHeadAttnBlock(block_out, head_size, fused=fused_attention))
            if level != self.num_levels - 1:
                stage.downsample = Downsample(block_out)
                res //= 2
            self.down.append(stage)
        self.mid = _Mid(block_out, dropout, head_size, fused_attention) if enable_mid else None
        self.norm_out = Normalize(block_out)
        self.conv_out = nn.Conv2d(block_out, 2 * z_channels if double_z else z_channels, 3, 1, 1)

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """Intermediate maps named as the official encoder returns them.

        ``in`` (conv_in output), ``block_{level}`` (each level but the last, before its downsample),
        ``block_{L-1}_atten`` (after ``mid.block_1``; official name), ``mid_atten`` (after
        ``mid.block_2``), ``out`` (final output, (B, z_channels, h, w)).
        """
        feats: dict[str, Tensor] = {}
        feats["out"] = self._run(x, feats)
        return feats

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, z_channels, H/f, W/f); keeps no intermediate map alive."""
        return self._run(x, None)

    def _run(self, x: Tensor, feats: dict[str, Tensor] | None) -> Tensor:
        """The one encoder pass; records the official intermediate maps into ``feats`` when given."""
        record = feats.__setitem__ if feats is not None else (lambda name, value: None)
        h = self.conv_in(x)
        record("in", h)
        ckpt = self.checkpointing and self.training
        for level, stage in enumerate(cast(list[_Level], self.down)):
            h = stage.run_blocks(h, ckpt)
            if stage.downsample is not None:
                record(f"block_{level}", h)
                h = stage.downsample(h)
        if self.mid is not None:
            h = self.mid.run_first(h, ckpt)
            record(f"block_{self.num_levels - 1}_atten", h)
            h = self.mid.run_second(h, ckpt)
            record("mid_atten", h)
        return cast(Tensor, self.conv_out(_activate_out(self.norm_out(h), self.fast)))


class Decoder(nn.Module):
    """VQGAN decoder: (B, z_channels, h, w) -> (B, out_ch, h*2^(L-1), w*2^(L-1)), nominally [-1, 1].

    Mirror of :class:`Encoder` with ``num_res_blocks + 1`` ResnetBlocks per level; the output is not
    clamped (the official decoder has no final tanh). ``checkpointing = True``: see the module doc;
    ``fast = True``: the final activation runs in place (as in :class:`Encoder`).
    """

    checkpointing: bool = False
    fast: bool = False

    def __init__(
        self,
        *,
        ch: int = OFFICIAL_CH,
        ch_mult: Sequence[int] = OFFICIAL_CH_MULT,
        num_res_blocks: int = 2,
        resolution: int = 512,
        attn_resolutions: Sequence[int] = (16,),
        z_channels: int = 256,
        out_ch: int = 3,
        dropout: float = 0.0,
        enable_mid: bool = True,
        head_size: int = 1,
        fused_attention: bool = False,
    ) -> None:
        super().__init__()
        mult = _check_layout(ch, ch_mult, num_res_blocks, resolution)
        self.num_levels = len(mult)
        self.z_channels = z_channels
        self.upsample_factor = 2 ** (self.num_levels - 1)
        block_in = ch * mult[-1]
        res = resolution // self.upsample_factor
        self.conv_in = nn.Conv2d(z_channels, block_in, kernel_size=3, stride=1, padding=1)
        self.mid = _Mid(block_in, dropout, head_size, fused_attention) if enable_mid else None
        levels: list[_Level] = []
        for level in reversed(range(self.num_levels)):
            block_out = ch * mult[level]
            stage = _Level()
            for _ in range(num_res_blocks + 1):
                stage.block.append(ResnetBlock(block_in, block_out, dropout))
                block_in = block_out
                if res in attn_resolutions:
                    stage.attn.append(MultiHeadAttnBlock(block_out, head_size, fused=fused_attention))
            if level != 0:
                stage.upsample = Upsample(block_out)
                res *= 2
            levels.insert(0, stage)  # keep up[level] indexed by level, as the official keys are
        self.up = nn.ModuleList(levels)
        self.norm_out = Normalize(block_in)
        self.conv_out = nn.Conv2d(block_in, out_ch, kernel_size=3, stride=1, padding=1)

    @property
    def last_layer(self) -> Tensor:
        """Weight of ``conv_out`` (used for the adaptive GAN weight)."""
        return self.conv_out.weight

    def forward(self, z: Tensor) -> Tensor:
        """(B, z_channels, h, w) -> (B, out_ch, h*f, w*f)."""
        ckpt = self.checkpointing and self.training
        h = self.conv_in(z)
        if self.mid is not None:
            h = self.mid.run(h, ckpt)
        for stage in reversed(cast(list[_Level], self.up)):
            h = stage.run_blocks(h, ckpt)
            if stage.upsample is not None:
                h = stage.upsample(h)
        return cast(Tensor, self.conv_out(_activate_out(self.norm_out(h), self.fast)))


def set_fused_attention(module: nn.Module, enabled: bool) -> int:
    """Switch every :class:`MultiHeadAttnBlock` inside ``module`` to (or off) the fused path; returns the count."""
    count = 0
    for sub in module.modules():
        if isinstance(sub, MultiHeadAttnBlock):
            sub.fused = enabled
            count += 1
    return count


def set_activation_checkpointing(module: nn.Module, enabled: bool) -> int:
    """Switch activation checkpointing of every :class:`Encoder`/:class:`Decoder` in ``module``; returns the count."""
    count = 0
    for sub in module.modules():
        if isinstance(sub, Encoder | Decoder):
            sub.checkpointing = enabled
            count += 1
    return count
