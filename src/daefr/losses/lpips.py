"""LPIPS perceptual distance (VGG16 variant), frozen, with weights loaded from local files.

Layout of the module's own state dict is the one the official DAEFR/taming checkpoints store under
``loss.perceptual_loss.``: ``scaling_layer.shift/scale``, ``net.slice{1..5}.{N}.weight/bias`` (N is the
index of the layer inside torchvision's ``vgg16().features``) and ``lin{0..4}.model.1.weight``.

Weight files (looked up in ``$DAEFR_WEIGHTS_DIR`` when no path is given):

* ``vgg16-397923af.pth`` -- torchvision's ImageNet VGG16 state dict (``features.N.weight/bias``),
  also found in the torch.hub cache (``~/.cache/torch/hub/checkpoints``);
* ``vgg.pth`` -- the LPIPS v0.1 linear heads (``lin0.model.1.weight`` ... ``lin4.model.1.weight``)
  as shipped by the ``lpips`` package (``lpips/weights/v0.1/vgg.pth``) and by taming-transformers;
* or one combined file (``weights_path``) in the official layout: the module's own keys, possibly
  under a prefix such as ``loss.perceptual_loss.`` (a whole official training checkpoint works).

The width of each VGG stage is read from the files, so tests can use tiny random networks saved in
exactly these formats (see :mod:`daefr.testing.weights`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from daefr.errors import CheckpointError
from daefr.nn.quantizer import float32_region
from daefr.utils.weights import load_state_dict_file, resolve_weights

VGG16_WIDTHS: tuple[int, int, int, int, int] = (64, 128, 256, 512, 512)
# Index (in torchvision's vgg16().features) of each conv layer, grouped by the LPIPS slice that ends
# at relu1_2, relu2_2, relu3_3, relu4_3, relu5_3. Max-pools sit at 4, 9, 16, 23 (start of slices 2-5).
VGG16_CONV_INDICES: tuple[tuple[int, ...], ...] = ((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28))
# Published LPIPS input normalisation for inputs in [-1, 1] (ImageNet mean/std mapped to that range).
LPIPS_SHIFT: tuple[float, float, float] = (-0.030, -0.088, -0.188)
LPIPS_SCALE: tuple[float, float, float] = (0.458, 0.448, 0.450)

VGG_FILE = "vgg16-397923af.pth"
LIN_FILE = "vgg.pth"
VGG_SOURCE = "https://download.pytorch.org/models/vgg16-397923af.pth (torchvision VGG16 ImageNet weights)"
LIN_SOURCE = (
    "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth "
    "(LPIPS v0.1 linear heads; also inside the `lpips` pip package)"
)


class ScalingLayer(nn.Module):
    """Map images in [-1, 1] to VGG's normalised input: ``(x - shift) / scale``."""

    shift: Tensor
    scale: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, 3, H, W) normalised."""
        return (x - self.shift) / self.scale


class VGG16Trunk(nn.Module):
    """VGG16 convolutional stack up to relu5_3, split in five slices; returns the five relu taps."""

    def __init__(self, widths: Sequence[int] = VGG16_WIDTHS) -> None:
        super().__init__()
        if len(widths) != 5:
            raise ValueError(f"VGG16 has 5 stages, got widths {tuple(widths)}")
        self.widths = tuple(int(w) for w in widths)
        in_ch = 3
        for stage, convs in enumerate(VGG16_CONV_INDICES):
            block = nn.Sequential()
            if stage > 0:
                block.add_module(str(convs[0] - 1), nn.MaxPool2d(kernel_size=2, stride=2))
            for idx in convs:
                block.add_module(str(idx), nn.Conv2d(in_ch, self.widths[stage], kernel_size=3, padding=1))
                block.add_module(str(idx + 1), nn.ReLU(inplace=False))
                in_ch = self.widths[stage]
            self.add_module(f"slice{stage + 1}", block)

    def forward(self, x: Tensor) -> list[Tensor]:
        """(B, 3, H, W) normalised -> five maps (B, C_k, H / 2^k, W / 2^k), k = 0..4."""
        taps = []
        for stage in range(5):
            x = getattr(self, f"slice{stage + 1}")(x)
            taps.append(x)
        return taps


class LinearHead(nn.Module):
    """LPIPS 1x1 linear head: dropout then a bias-free 1x1 conv to one channel."""

    def __init__(self, channels: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(dropout), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, h, w) -> (B, 1, h, w)."""
        return self.model(x)  # type: ignore[no-any-return]


def _unit_normalise(feat: Tensor, eps: float = 1e-10) -> Tensor:
    # LPIPS divides by the channel L2 norm plus eps (not max(norm, eps)); kept for parity.
    return feat / (feat.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


def _widths_from_vgg(sd: Mapping[str, Tensor], key_of: Any) -> tuple[int, ...]:
    widths = []
    for convs in VGG16_CONV_INDICES:
        key = key_of(convs[0])
        if key not in sd:
            raise CheckpointError(f"VGG16 weights lack {key!r}; is this a VGG16 state dict?")
        widths.append(int(sd[key].shape[0]))
    return tuple(widths)


class LPIPS(nn.Module):
    """Learned perceptual distance (LPIPS, VGG16): inputs (B, 3, H, W) in [-1, 1] -> (B,) or a mean.

    Frozen: parameters never require grad and the module stays in eval mode (dropout off) unless
    ``dropout_in_train=True``. That switch reproduces the official training, where Lightning's
    ``model.train()`` also puts the LPIPS heads (dropout p=0.5) in train mode.
    Pass ``pretrained=False`` to get random weights (only for tests and shape checks); ``widths``
    applies then (with weight files the stage widths are read from the files). ``weights_path`` reads
    one plain ``torch.save`` state dict in the official layout (prefix detected); for an official
    Lightning training checkpoint use ``daefr.interop.official_reader.read_official_checkpoint`` and
    :meth:`from_official_state_dict` (``prefix=None``), as ``daefr evaluate --lpips-weights`` does.
    """

    def __init__(
        self,
        vgg_path: str | os.PathLike[str] | None = None,
        lin_path: str | os.PathLike[str] | None = None,
        weights_path: str | os.PathLike[str] | None = None,
        pretrained: bool = True,
        reduction: str = "none",
        dropout_in_train: bool = False,
        widths: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if reduction not in ("none", "mean", "sum"):
            raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
        self.reduction = reduction
        self.dropout_in_train = dropout_in_train
        state: dict[str, Tensor] | None = None
        if pretrained:
            state = _load_weight_files(vgg_path, lin_path, weights_path)
            widths = _widths_from_vgg(state, lambda i: _own_vgg_key(i))
        self._build(tuple(widths) if widths is not None else VGG16_WIDTHS)
        if state is not None:
            self._load_own(state, source=str(weights_path or f"{vgg_path or VGG_FILE} + {lin_path or LIN_FILE}"))
        self.requires_grad_(False)
        self.train(False)

    def _build(self, widths: Sequence[int]) -> None:
        self.scaling_layer = ScalingLayer()
        self.net = VGG16Trunk(widths)
        for k, ch in enumerate(self.net.widths):
            self.add_module(f"lin{k}", LinearHead(ch))

    def _load_own(self, state: Mapping[str, Tensor], source: str) -> None:
        own = self.state_dict()
        missing = [k for k in own if k not in state and not k.startswith("scaling_layer.")]
        if missing:
            raise CheckpointError(f"LPIPS weights from {source} lack {len(missing)} keys, e.g. {missing[:3]}")
        for key, value in own.items():
            if key in state and tuple(state[key].shape) != tuple(value.shape):
                raise CheckpointError(
                    f"LPIPS weights from {source}: {key!r} has shape {tuple(state[key].shape)}, "
                    f"expected {tuple(value.shape)}"
                )
        with torch.no_grad():
            for key, value in own.items():
                if key in state:  # scaling buffers are published constants; files may omit them
                    value.copy_(state[key].to(value.dtype))

    @classmethod
    def from_official_state_dict(
        cls, sd: Mapping[str, Tensor], prefix: str | None = "loss.perceptual_loss.", **kwargs: Any
    ) -> LPIPS:
        """Build from an official-layout state dict; ``prefix=None`` detects it from the keys."""
        if prefix is None:
            prefix = _detect_prefix(sd)
        inner = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
        if not inner:
            raise CheckpointError(f"no LPIPS keys with prefix {prefix!r} in the state dict")
        model = cls(pretrained=False, widths=_widths_from_vgg(inner, _own_vgg_key), **kwargs)
        model._load_own(inner, source=f"state dict (prefix {prefix!r})")
        return model

    def train(self, mode: bool = True) -> LPIPS:
        """Keep eval mode (dropout off) unless ``dropout_in_train`` asks for the official behaviour."""
        return super().train(mode and self.dropout_in_train)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """Distance between (B, 3, H, W) images in [-1, 1]: (B,) for reduction 'none', else a scalar.

        Always computed in float32, also under bf16/fp16 autocast: in bf16 the distance of a close
        reconstruction is off by ~27% (docs/cluster.md, "Mixed precision"), and only a float32 VGG fixes it.
        """
        if input.shape != target.shape or input.dim() != 4 or input.shape[1] != 3:
            raise ValueError(f"LPIPS expects two (B, 3, H, W) tensors of equal shape, got {input.shape} and {target.shape}")
        with float32_region(input):
            return self._distance(input.float(), target.float())

    def _distance(self, input: Tensor, target: Tensor) -> Tensor:
        feats_a = self.net(self.scaling_layer(input))
        feats_b = self.net(self.scaling_layer(target))
        total = input.new_zeros(input.shape[0])
        for k, (fa, fb) in enumerate(zip(feats_a, feats_b)):
            diff = (_unit_normalise(fa) - _unit_normalise(fb)).pow(2)
            total = total + getattr(self, f"lin{k}")(diff).mean(dim=(1, 2, 3))
        if self.reduction == "mean":
            return total.mean()
        if self.reduction == "sum":
            return total.sum()
        return total


def _own_vgg_key(index: int) -> str:
    for stage, convs in enumerate(VGG16_CONV_INDICES):
        if index in convs:
            return f"net.slice{stage + 1}.{index}.weight"
    raise KeyError(index)


def _detect_prefix(sd: Mapping[str, Tensor]) -> str:
    marker = "net.slice1.0.weight"
    for key in sd:
        if key.endswith(marker):
            return key[: -len(marker)]
    raise CheckpointError(f"no LPIPS weights found: no key ends with {marker!r}")


def _load_weight_files(
    vgg_path: str | os.PathLike[str] | None,
    lin_path: str | os.PathLike[str] | None,
    weights_path: str | os.PathLike[str] | None,
) -> dict[str, Tensor]:
    """Read the weight file(s) into the module's own key layout."""
    if weights_path is not None:
        file = resolve_weights(weights_path, "lpips_vgg_official.pth", "combined LPIPS weights", VGG_SOURCE)
        sd = load_state_dict_file(file)
        prefix = _detect_prefix(sd)
        return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    vgg_file = resolve_weights(vgg_path, VGG_FILE, "VGG16 ImageNet weights for LPIPS", VGG_SOURCE, search_torch_hub=True)
    lin_file = resolve_weights(lin_path, LIN_FILE, "LPIPS linear-head weights", LIN_SOURCE)
    vgg_sd = load_state_dict_file(vgg_file)
    lin_sd = load_state_dict_file(lin_file)
    state: dict[str, Tensor] = {}
    for stage, convs in enumerate(VGG16_CONV_INDICES):
        for idx in convs:
            for kind in ("weight", "bias"):
                src = f"features.{idx}.{kind}"
                if src not in vgg_sd:
                    raise CheckpointError(
                        f"{str(vgg_file)!r} lacks {src!r}: expected torchvision's vgg16 state dict ({VGG_FILE})"
                    )
                state[f"net.slice{stage + 1}.{idx}.{kind}"] = vgg_sd[src]
    for k in range(5):
        key = f"lin{k}.model.1.weight"
        if key not in lin_sd:
            raise CheckpointError(f"{str(lin_file)!r} lacks {key!r}: expected the LPIPS v0.1 {LIN_FILE} heads")
        state[key] = lin_sd[key]
    return state
