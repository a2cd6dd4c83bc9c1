"""PatchGAN discriminator (pix2pix style) with the official DAEFR/VQGAN layout (keys ``main.N.*``)."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["PatchGANDiscriminator"]


class PatchGANDiscriminator(nn.Module):
    """Patch discriminator: (B, in_channels, H, W) in [-1, 1] -> (B, 1, h, w) real/fake logits.

    ``n_layers`` stride-2 4x4 convolutions (the first without normalisation, the others followed by
    BatchNorm), one stride-1 4x4 convolution with BatchNorm, and a stride-1 4x4 output convolution;
    widths ``ndf * min(2**i, 8)``; LeakyReLU(0.2) between. With the defaults (n_layers 3, ndf 64) the
    ``main`` indices and shapes equal the official ``loss.discriminator.main.*`` keys, and a
    256x256 input gives a 30x30 map. Weights start as the official init: conv N(0, 0.02),
    BatchNorm gain N(1, 0.02), bias 0.
    """

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3, init_weights: bool = True) -> None:
        super().__init__()
        if n_layers < 1 or ndf < 1:
            raise ValueError(f"PatchGANDiscriminator needs n_layers >= 1 and ndf >= 1, got {n_layers}, {ndf}")
        self.in_channels = in_channels
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, ndf, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        width = ndf
        for i in range(1, n_layers + 1):
            out = ndf * min(2**i, 8)
            stride = 2 if i < n_layers else 1
            # no conv bias before BatchNorm (it would be cancelled by the mean subtraction)
            layers += [
                nn.Conv2d(width, out, kernel_size=4, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            width = out
        layers.append(nn.Conv2d(width, 1, kernel_size=4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        if init_weights:
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official initialisation: conv weights N(0, 0.02); BatchNorm gains N(1, 0.02), biases 0."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_channels, H, W) -> (B, 1, h, w) logits (higher = more real)."""
        return self.main(x)
