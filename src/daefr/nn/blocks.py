"""VQGAN building blocks with the official DAEFR numerics (see ``../shared/parity/README.md``).

Every block reproduces the official layout and state-dict key names (``norm1``, ``conv1``, ``q``,
``proj_out``, ...), so official checkpoints load with a plain prefix mapping.

Numerical details that matter (each changes the parity tensors if altered):

* :class:`Normalize` is GroupNorm with 32 groups and ``eps=1e-6`` (not torch's default 1e-5).
* :class:`Downsample` pads right/bottom by one pixel, then a 3x3 stride-2 convolution without padding.
* :class:`MultiHeadAttnBlock` scales ``q`` by ``int(C / heads) ** -0.5`` *before* ``q @ k``, splits
  channels head-major (channel ``= head * (C / heads) + j``) and, as cross-attention, takes key and
  value from ``norm1(x)``, the query from ``norm2(y)`` and adds the residual to ``x``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "Downsample",
    "MultiHeadAttnBlock",
    "Normalize",
    "ResnetBlock",
    "Upsample",
    "swish",
]


def swish(x: Tensor) -> Tensor:
    """``x * sigmoid(x)`` written out as the official code does (bitwise equal to its result)."""
    return x * torch.sigmoid(x)


class Normalize(nn.GroupNorm):
    """GroupNorm(32 groups, eps 1e-6, affine) over ``channels``; keys ``weight`` and ``bias``."""

    def __init__(self, channels: int, num_groups: int = 32, eps: float = 1e-6) -> None:
        if channels % num_groups:
            raise ValueError(f"Normalize: {channels} channels are not divisible into {num_groups} groups")
        super().__init__(num_groups=num_groups, num_channels=channels, eps=eps, affine=True)


class ResnetBlock(nn.Module):
    """Pre-activation residual block: (B, C_in, H, W) -> (B, C_out, H, W).

    norm1 -> swish -> conv1 (3x3) -> norm2 -> swish -> dropout -> conv2 (3x3), plus the input, which
    goes through a 1x1 ``nin_shortcut`` when ``in_channels != out_channels``.
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.norm1 = Normalize(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.norm2 = Normalize(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.nin_shortcut: nn.Conv2d | None = None
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out, H, W)."""
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(self.dropout(swish(self.norm2(h))))
        skip = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return skip + h


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 conv: (B, C, H, W) -> (B, C, 2H, 2W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, 2H, 2W)."""
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Downsample(nn.Module):
    """Asymmetric pad (right/bottom 1) then a 3x3 stride-2 conv: (B, C, H, W) -> (B, C, H/2, W/2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2)); official padding, not symmetric padding 1."""
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class MultiHeadAttnBlock(nn.Module):
    """Multi-head spatial attention over (B, C, H, W) maps, usable as self- and cross-attention.

    Constructor (kept stable; the DAEFR fusion module builds on it):

    * ``in_channels``: C, divisible by ``head_size`` and by 32 (GroupNorm).
    * ``head_size``: the NUMBER OF HEADS (the official name, kept for config compatibility); each
      head has ``C // head_size`` channels. The VQGAN blocks use 1, DAEFR's fusion uses 8.
    * ``fused``: use ``torch.nn.functional.scaled_dot_product_attention`` (same maths, other
      rounding; off by default so the parity numerics hold). Can be toggled later via ``.fused``.
      Measured on the ``vqgan_tiny`` fixture (CPU, 1 thread): max abs deviation from the official
      tensors z 4.1e-6 and recon 7.4e-6 with the fused path, against 3.9e-6 / 8.7e-6 with the default
      path (same size as thread-count noise); no index changes. Checked in ``test_parity_vqgan.py``.

    Call ``block(x)`` for self-attention (q, k, v from ``norm1(x)``) or ``block(x, y)`` for
    cross-attention: keys and values from ``norm1(x)``, queries from ``norm2(y)``. The output is
    ``x + proj_out(attention)``, i.e. the residual is on the key/value input ``x``; DAEFR calls it
    as ``cross_attention(hq_feat, lq_feat)``. ``x`` and ``y`` must have the same shape.
    ``norm2`` exists (and is in the state dict) even when only self-attention is used.
    """

    def __init__(self, in_channels: int, head_size: int = 1, *, fused: bool = False) -> None:
        super().__init__()
        if head_size < 1 or in_channels % head_size:
            raise ValueError(f"MultiHeadAttnBlock: {in_channels} channels cannot be split into {head_size} heads")
        self.in_channels = in_channels
        self.head_size = head_size
        self.num_heads = head_size
        self.head_dim = in_channels // head_size
        self.fused = fused
        self.norm1 = Normalize(in_channels)
        self.norm2 = Normalize(in_channels)
        self.q = nn.Conv2d(in_channels, in_channels, kernel_size=1)
        self.k = nn.Conv2d(in_channels, in_channels, kernel_size=1)
        self.v = nn.Conv2d(in_channels, in_channels, kernel_size=1)
        self.proj_out = nn.Conv2d(in_channels, in_channels, kernel_size=1)

    @property
    def scale(self) -> float:
        """Query scale ``int(C / heads) ** -0.5`` (the official per-head scaling)."""
        return float(int(self.head_dim) ** -0.5)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """(B, C, H, W) [, query source (B, C, H, W)] -> (B, C, H, W) = x + attention output."""
        kv_in = self.norm1(x)
        if y is None:
            q_in = kv_in
        else:
            if y.shape != x.shape:
                raise ValueError(f"MultiHeadAttnBlock: query input {tuple(y.shape)} must match {tuple(x.shape)}")
            q_in = self.norm2(y)
        b, c, h, w = x.shape
        heads, dim = self.num_heads, self.head_dim
        # head-major split: channel = head * dim + j
        q = self.q(q_in).reshape(b, heads, dim, h * w).transpose(2, 3)  # (B, heads, HW, dim)
        k = self.k(kv_in).reshape(b, heads, dim, h * w)  # (B, heads, dim, HW)
        v = self.v(kv_in).reshape(b, heads, dim, h * w).transpose(2, 3)  # (B, heads, HW, dim)
        if self.fused:
            out = F.scaled_dot_product_attention(q, k.transpose(2, 3), v, scale=self.scale)
        else:
            weights = torch.matmul(q * self.scale, k)  # scale q first, as the official code does
            out = torch.matmul(torch.softmax(weights, dim=-1), v)  # (B, heads, HW, dim)
        out = out.transpose(2, 3).reshape(b, c, h, w)
        return x + self.proj_out(out)
