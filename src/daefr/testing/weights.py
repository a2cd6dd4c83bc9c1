"""Write tiny random networks in the official weight-file formats, so loading code is exercised for real.

Each writer seeds its own generator and returns the paths it wrote; the files have exactly the key
names of the published files, with small channel widths by default so tests stay fast.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

TINY_VGG_WIDTHS: tuple[int, int, int, int, int] = (4, 8, 8, 16, 16)


@dataclass(frozen=True)
class LPIPSWeightPaths:
    """Files written by :func:`write_random_lpips_weights`."""

    vgg: Path  # torchvision vgg16 layout: features.N.weight/bias (+ a classifier stub, as in the real file)
    lin: Path  # LPIPS package layout: lin{k}.model.1.weight
    official: Path  # official DAEFR/taming checkpoint layout: {"state_dict": {"loss.perceptual_loss.*": ...}}


def write_random_lpips_weights(
    directory: str | os.PathLike[str],
    widths: Sequence[int] = TINY_VGG_WIDTHS,
    seed: int = 0,
) -> LPIPSWeightPaths:
    """Write random LPIPS weights as ``vgg16-397923af.pth``, ``vgg.pth`` and ``lpips_official.ckpt``.

    The file names are the defaults that :class:`daefr.losses.lpips.LPIPS` looks for, so pointing
    ``$DAEFR_WEIGHTS_DIR`` at ``directory`` also works. Pass ``widths=VGG16_WIDTHS`` for full size.
    """
    from daefr.losses.lpips import LIN_FILE, VGG16_CONV_INDICES, VGG_FILE

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    vgg_sd: dict[str, torch.Tensor] = {}
    official: dict[str, torch.Tensor] = {}
    in_ch = 3
    for stage, convs in enumerate(VGG16_CONV_INDICES):
        width = int(widths[stage])
        for idx in convs:
            # He-style scale keeps activations alive through 13 random convs.
            weight = torch.randn(width, in_ch, 3, 3, generator=gen) * (2.0 / (in_ch * 9)) ** 0.5
            bias = torch.randn(width, generator=gen) * 0.01
            vgg_sd[f"features.{idx}.weight"] = weight
            vgg_sd[f"features.{idx}.bias"] = bias
            official[f"loss.perceptual_loss.net.slice{stage + 1}.{idx}.weight"] = weight
            official[f"loss.perceptual_loss.net.slice{stage + 1}.{idx}.bias"] = bias
            in_ch = width
    # The real torchvision file also has the classifier; a small stand-in keeps the key layout honest.
    vgg_sd["classifier.0.weight"] = torch.randn(8, in_ch * 49, generator=gen) * 0.01
    vgg_sd["classifier.0.bias"] = torch.zeros(8)
    lin_sd = {f"lin{k}.model.1.weight": torch.rand(1, int(widths[k]), 1, 1, generator=gen) * 0.1 for k in range(5)}
    for key, value in lin_sd.items():
        official[f"loss.perceptual_loss.{key}"] = value
    official["loss.perceptual_loss.scaling_layer.shift"] = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    official["loss.perceptual_loss.scaling_layer.scale"] = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    paths = LPIPSWeightPaths(vgg=out / VGG_FILE, lin=out / LIN_FILE, official=out / "lpips_official.ckpt")
    torch.save(vgg_sd, paths.vgg)
    torch.save(lin_sd, paths.lin)
    torch.save({"state_dict": official, "global_step": 0}, paths.official)
    return paths


def write_random_fid_inception_weights(path: str | os.PathLike[str], seed: int = 0) -> Path:
    """Write a random FID Inception in pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` layout.

    Full size (the architecture is fixed, ~95 MB): conv weights He-scaled, BatchNorm identity-like,
    plus the 1008-class ``fc`` head that the real file carries.
    """
    from daefr.metrics.inception import FIDInceptionV3

    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, value in FIDInceptionV3().state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.endswith("conv.weight"):
            fan_in = value[0].numel()
            state[key] = torch.randn(value.shape, generator=gen) * (2.0 / fan_in) ** 0.5
        elif key.endswith("running_var"):
            state[key] = 1.0 + 0.1 * torch.rand(value.shape, generator=gen)
        elif key.endswith("running_mean") or key.endswith("bn.bias"):
            state[key] = 0.05 * torch.randn(value.shape, generator=gen)
        else:  # bn.weight
            state[key] = 1.0 + 0.05 * torch.randn(value.shape, generator=gen)
    state["fc.weight"] = torch.randn(1008, 2048, generator=gen) * 0.01
    state["fc.bias"] = torch.zeros(1008)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, out)
    return out


def write_random_arcface_weights(
    path: str | os.PathLike[str],
    widths: Sequence[int] = (4, 8, 8, 16),
    embed_dim: int = 32,
    seed: int = 0,
    dataparallel_prefix: bool = True,
) -> Path:
    """Write a random ArcFace ResNet-18 in the arcface-pytorch ``resnet18_110.pth`` layout.

    ``dataparallel_prefix`` keeps the ``module.`` key prefix of the published file; tiny widths by
    default (``widths=(64, 128, 256, 512), embed_dim=512`` gives the real shapes).
    """
    from daefr.metrics.arcface import ArcFaceResNet

    torch.manual_seed(seed)
    model = ArcFaceResNet(widths, embed_dim=embed_dim)
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if key.endswith("running_var"):
            value = 1.0 + 0.1 * torch.rand(value.shape, generator=gen)
        elif key.endswith("running_mean"):
            value = 0.05 * torch.randn(value.shape, generator=gen)
        state[("module." if dataparallel_prefix else "") + key] = value
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, out)
    return out
