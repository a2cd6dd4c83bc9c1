"""An attention-free convolutional encoder: strokes of text are local, so global attention buys little."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from daefr.nn.blocks import Downsample, Normalize, ResnetBlock


class PlainConvEncoder(nn.Module):
    """(B, in_channels, H, W) in [-1, 1] -> (B, z_channels, H / 2^(L-1), W / 2^(L-1)), L = len(ch_mult).

    ResNet blocks and strided downsampling only (no attention, no mid block); satisfies daefr's encoder
    contract (``z_channels``, ``downsample_factor``).
    """

    def __init__(self, ch: int = 32, ch_mult: Sequence[int] = (1, 2, 2), num_res_blocks: int = 1,
                 z_channels: int = 64, in_channels: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        if ch % 32 != 0:
            raise ValueError(f"ch must be a multiple of 32 (GroupNorm with 32 groups), got {ch}")
        self.z_channels = z_channels
        self.downsample_factor = 2 ** (len(ch_mult) - 1)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ch, 3, padding=1)]
        channels = ch
        for level, mult in enumerate(ch_mult):
            for _ in range(num_res_blocks):
                layers.append(ResnetBlock(channels, ch * mult, dropout))
                channels = ch * mult
            if level != len(ch_mult) - 1:
                layers.append(Downsample(channels))
        layers += [Normalize(channels), nn.SiLU(), nn.Conv2d(channels, z_channels, 3, padding=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Encode images to latents."""
        return self.layers(x)  # type: ignore[no-any-return]
