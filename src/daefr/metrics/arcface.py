"""ArcFace ResNet-18 (IR blocks, grey 128x128 input) and the identity distance "Deg".

Network layout = the ``resnet_face18`` of arcface-pytorch used by the VQFR/CodeFormer/DAEFR evaluation
(weights file ``resnet18_110.pth``, saved from ``DataParallel`` so keys start with ``module.``; GFPGAN's
``arcface_resnet18.pth`` has the same keys without the prefix). Evaluation protocol (VQFR's script):
grey image (BT.601, as ``cv2.imread(path, 0)``), bilinear resize to 128x128, scaled to [-1, 1]; the
embedding of the image and of its left-right mirror are concatenated (1024-d); Deg is the angle
between the embeddings of restored and ground truth: ``degrees(arccos(cos))``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from daefr.errors import CheckpointError
from daefr.utils.weights import load_state_dict_file, resolve_weights

ARCFACE_FILE = "resnet18_110.pth"
ARCFACE_SOURCE = (
    "the arcface-pytorch ResNet-18 'resnet18_110.pth' (used by VQFR/CodeFormer identity metrics), or "
    "https://github.com/TencentARC/GFPGAN/releases/download/v0.1.0/arcface_resnet18.pth (same layout)"
)
ARCFACE_WIDTHS: tuple[int, int, int, int] = (64, 128, 256, 512)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class IRBlock(nn.Module):
    """Pre-BN residual block: BN, conv, BN, PReLU, conv(stride), BN, + shortcut, PReLU (shared slope)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.bn0 = nn.BatchNorm2d(cin)
        self.conv1 = _conv3x3(cin, cin)
        self.bn1 = nn.BatchNorm2d(cin)
        self.prelu = nn.PReLU()
        self.conv2 = _conv3x3(cin, cout, stride)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        """(B, cin, H, W) -> (B, cout, H / stride, W / stride)."""
        out = self.prelu(self.bn1(self.conv1(self.bn0(x))))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.prelu(out + shortcut)  # type: ignore[no-any-return]


class ArcFaceResNet(nn.Module):
    """ArcFace ResNet (2 IR blocks per stage): (B, 1, 128, 128) grey in [-1, 1] -> (B, embed_dim)."""

    def __init__(self, widths: Sequence[int] = ARCFACE_WIDTHS, embed_dim: int = 512, blocks: int = 2) -> None:
        super().__init__()
        w = [int(c) for c in widths]
        self.conv1 = nn.Conv2d(1, w[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w[0])
        self.prelu = nn.PReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=2, stride=2)
        cin = w[0]
        for stage, cout in enumerate(w):
            stride = 1 if stage == 0 else 2
            layer = [IRBlock(cin, cout, stride)] + [IRBlock(cout, cout) for _ in range(blocks - 1)]
            self.add_module(f"layer{stage + 1}", nn.Sequential(*layer))
            cin = cout
        self.bn4 = nn.BatchNorm2d(cin)
        self.dropout = nn.Dropout()
        self.fc5 = nn.Linear(cin * 8 * 8, embed_dim)
        self.bn5 = nn.BatchNorm1d(embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 1, 128, 128) in [-1, 1] -> (B, embed_dim) embedding (not normalised)."""
        x = self.maxpool(self.prelu(self.bn1(self.conv1(x))))
        for stage in range(1, 5):
            x = getattr(self, f"layer{stage}")(x)
        x = self.dropout(self.bn4(x))
        return self.bn5(self.fc5(x.flatten(1)))  # type: ignore[no-any-return]


def load_arcface(path: str | os.PathLike[str] | None = None) -> ArcFaceResNet:
    """Build ArcFace and load an arcface-pytorch/GFPGAN ResNet-18 file (``module.`` prefix is stripped)."""
    file = resolve_weights(path, ARCFACE_FILE, "ArcFace ResNet-18 weights for the identity metric", ARCFACE_SOURCE)
    raw = load_state_dict_file(file)
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in raw.items()}
    if "conv1.weight" not in sd or "fc5.weight" not in sd:
        raise CheckpointError(f"{str(file)!r} is not an ArcFace ResNet file: no 'conv1.weight'/'fc5.weight' keys")
    widths = [int(sd["conv1.weight"].shape[0])]
    for stage in (2, 3, 4):
        key = f"layer{stage}.0.conv2.weight"
        if key not in sd:
            raise CheckpointError(f"{str(file)!r} lacks {key!r}; expected the IR-block ResNet-18 layout")
        widths.append(int(sd[key].shape[0]))
    if any(k.endswith(".se.fc.0.weight") for k in sd):
        raise CheckpointError(f"{str(file)!r} uses squeeze-excitation blocks; only the plain ResNet-18 (use_se=False) is supported")
    model = ArcFaceResNet(widths, embed_dim=int(sd["fc5.weight"].shape[0]))
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{str(file)!r} does not match the ArcFace ResNet-18 layout: {exc}") from exc
    return model.eval().requires_grad_(False)


def arcface_input(image: np.ndarray) -> Tensor:
    """(H, W, 3) uint8 RGB -> (2, 1, 128, 128) in [-1, 1]: the grey image and its mirror."""
    import cv2

    grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    if grey.shape != (128, 128):
        grey = cv2.resize(grey, (128, 128), interpolation=cv2.INTER_LINEAR)
    pair = np.stack([grey, grey[:, ::-1]]).astype(np.float32)[:, None]
    return (torch.from_numpy(pair) - 127.5) / 127.5


@torch.no_grad()
def identity_embedding(model: ArcFaceResNet, image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> concatenated embedding of the image and its mirror, (2 * embed_dim,)."""
    device = next(model.parameters()).device
    out = model(arcface_input(image).to(device)).double().cpu().numpy()
    return np.concatenate([out[0], out[1]])


def identity_degree(model: ArcFaceResNet, restored: np.ndarray, reference: np.ndarray) -> float:
    """Angle in degrees between the ArcFace embeddings of two (H, W, 3) uint8 RGB faces (0 = same)."""
    a, b = identity_embedding(model, restored), identity_embedding(model, reference)
    cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))
