"""Inference-only rewrites of the VQGAN blocks: same weights and state-dict keys, fewer passes over memory.

:func:`set_fast` is the one switch of the fast path for any module tree (the restorer's
``set_fast`` calls it): fused attention, fused blocks (swapped in by :func:`fuse_vqgan_blocks`,
swapped back by :func:`unfuse_vqgan_blocks`) and in-place final activations of the VQGAN encoder and
decoder. The default blocks in :mod:`daefr.nn.blocks` keep the official numerics. What changes, and
why it is faster on a CPU:

* :class:`FastResnetBlock`: ``F.silu`` (one fused kernel) instead of ``x * sigmoid(x)`` (three passes
  and two temporaries), computed in place, and the residual added in place. Same maths; the result
  differs from the parity block by float rounding only (SiLU's kernel rounds differently, ~1 ulp).
* :class:`SubpixelUpsample`: nearest x2 upsampling followed by a 3x3 convolution equals, exactly in
  real arithmetic, four 2x2 convolutions of the low-resolution map (one per output phase) whose
  kernels are sums of rows/columns of the 3x3 kernel. That is 16 instead of 36 multiply-adds per
  input-output channel pair and low-resolution pixel (2.25x fewer), and the 4x larger upsampled map
  is never materialised.

Both modules take their parameters from the block they replace (no copy), so a converted module
shares storage with the original and its ``state_dict`` keys are unchanged. They are meant for
``eval()`` inference: ``FastResnetBlock`` writes into intermediate tensors in place, which autograd
allows, but dropout is applied as in the original block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from daefr.nn.blocks import ResnetBlock, Upsample
from daefr.nn.vqgan import Decoder, Encoder, set_fused_attention

__all__ = ["FastResnetBlock", "SubpixelUpsample", "fuse_vqgan_blocks", "set_fast", "subpixel_kernels",
           "unfuse_vqgan_blocks"]


class FastResnetBlock(nn.Module):
    """Drop-in for :class:`~daefr.nn.blocks.ResnetBlock` sharing its modules: (B, C_in, H, W) -> (B, C_out, H, W)."""

    source: ResnetBlock  #: the replaced parity block (shares every module; :func:`unfuse_vqgan_blocks`)

    def __init__(self, block: ResnetBlock) -> None:
        super().__init__()
        self.in_channels = block.in_channels
        self.out_channels = block.out_channels
        self.norm1 = block.norm1
        self.conv1 = block.conv1
        self.norm2 = block.norm2
        self.dropout = block.dropout
        self.conv2 = block.conv2
        self.nin_shortcut = block.nin_shortcut
        object.__setattr__(self, "source", block)  # not a submodule: its modules are registered above

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out, H, W); same function as the parity block."""
        # norm outputs are fresh tensors, so activating them in place is safe
        h = self.conv1(F.silu(self.norm1(x), inplace=True))
        h = self.conv2(self.dropout(F.silu(self.norm2(h), inplace=True)))
        skip = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return h.add_(skip) if not h.requires_grad else h + skip


def subpixel_kernels(weight: Tensor) -> Tensor:
    """(C_out, C_in, 3, 3) kernel -> (4 * C_out, C_in, 2, 2): one 2x2 kernel per output phase (a, b).

    Output channel ``(2a + b) * C_out + o`` is phase (row parity a, column parity b) of channel ``o``.
    Rows: phase 0 reads low-res rows (i-1, i) with kernel rows (w0, w1 + w2); phase 1 reads (i, i+1)
    with (w0 + w1, w2). Columns likewise.
    """
    w0, w1, w2 = weight[:, :, 0], weight[:, :, 1], weight[:, :, 2]
    rows = (torch.stack((w0, w1 + w2), dim=2), torch.stack((w0 + w1, w2), dim=2))  # (O, I, 2, 3) each
    phases = []
    for a in (0, 1):
        r = rows[a]
        c0, c1, c2 = r[..., 0], r[..., 1], r[..., 2]
        phases.append(torch.stack((c0, c1 + c2), dim=3))  # b = 0
        phases.append(torch.stack((c0 + c1, c2), dim=3))  # b = 1
    return torch.cat(phases, dim=0)


class SubpixelUpsample(nn.Module):
    """Drop-in for :class:`~daefr.nn.blocks.Upsample` (nearest x2 + 3x3 conv) computed as four 2x2 convs.

    (B, C, H, W) -> (B, C, 2H, 2W). Uses the replaced block's ``conv`` (key ``conv.weight``/``conv.bias``).
    """

    source: Upsample  #: the replaced parity block (shares ``conv``)

    def __init__(self, block: Upsample) -> None:
        super().__init__()
        self.conv = block.conv
        object.__setattr__(self, "source", block)  # not a submodule: ``conv`` is registered above

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, 2H, 2W); equals ``conv(interpolate(x, 2, nearest))`` up to rounding."""
        b, _, h, w = x.shape
        c_out = self.conv.out_channels
        bias = self.conv.bias
        # padding=1 with a 2x2 kernel: out[r, c] reads x[r-1 : r+1, c-1 : c+1] -> (B, 4 * C_out, H + 1, W + 1)
        y = F.conv2d(x, subpixel_kernels(self.conv.weight).to(x.dtype),
                     None if bias is None else bias.to(x.dtype).repeat(4), padding=1)
        # phase (a, b) of channel o lives in channel (2a + b) * C_out + o at rows a..a+H-1, columns b..b+W-1
        if y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous():
            return self._interleave_channels_last(y, b, c_out, h, w)
        # NCHW (and every exporter): pixel_shuffle puts channel 4 * o + 2a + b at pixel (2i + a, 2j + b)
        phases = [y[:, (2 * a + bb) * c_out : (2 * a + bb + 1) * c_out, a : a + h, bb : bb + w]
                  for a in (0, 1) for bb in (0, 1)]
        return F.pixel_shuffle(torch.stack(phases, dim=2).reshape(b, 4 * c_out, h, w), 2)

    @staticmethod
    def _interleave_channels_last(y: Tensor, b: int, c_out: int, h: int, w: int) -> Tensor:
        """Four strided copies straight into a channels-last output (one pass over the output)."""
        src = y.permute(0, 2, 3, 1)  # (B, H + 1, W + 1, 4 * C_out), a contiguous view of channels-last memory
        out = torch.empty((b, 2 * h, 2 * w, c_out), dtype=y.dtype, device=y.device)
        view = out.view(b, h, 2, w, 2, c_out)
        for a in (0, 1):
            for bb in (0, 1):
                k = 2 * a + bb
                view[:, :, a, :, bb, :].copy_(src[:, a : a + h, bb : bb + w, k * c_out : (k + 1) * c_out])
        return out.permute(0, 3, 1, 2)  # (B, C_out, 2H, 2W) in channels-last memory


def fuse_vqgan_blocks(module: nn.Module) -> dict[str, int]:
    """Replace, in place, every ResnetBlock and Upsample inside ``module`` by its fast equivalent.

    Parameters are shared (not copied) and state-dict keys stay the same. Returns the counts
    ``{"resnet_blocks": n, "upsamples": m}``. Idempotent: already converted blocks are left alone.
    """
    counts = {"resnet_blocks": 0, "upsamples": 0}
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, ResnetBlock):
                setattr(parent, name, FastResnetBlock(child))
                counts["resnet_blocks"] += 1
            elif isinstance(child, Upsample):
                setattr(parent, name, SubpixelUpsample(child))
                counts["upsamples"] += 1
    return counts


def unfuse_vqgan_blocks(module: nn.Module) -> int:
    """Put back, in place, the parity block behind every fast block inside ``module``; returns the count."""
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, FastResnetBlock | SubpixelUpsample):
                setattr(parent, name, child.source)
                count += 1
    return count


def set_fast(module: nn.Module, enabled: bool) -> None:
    """The fast-path switch for every block inside ``module`` (reversible; weights and keys unchanged).

    On: fused attention (SDPA) in every attention block and in components with ``set_fused``, fused
    ResnetBlocks and sub-pixel upsampling, in-place final activations. Off: the official numerics.
    """
    set_fused_attention(module, enabled)
    for sub in module.modules():
        setter = getattr(sub, "set_fused", None)
        if callable(setter) and sub is not module:
            setter(enabled)
        if isinstance(sub, Encoder | Decoder):
            sub.fast = enabled
    if enabled:
        fuse_vqgan_blocks(module)
    else:
        unfuse_vqgan_blocks(module)
